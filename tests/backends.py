"""The store under a test and the apps built on it: ``Backend`` (what the
``backend`` fixture gives: fakeredis, a real Redis or a Redis Cluster),
``AppFactory`` (what ``make_app`` gives), ``host_app()`` (the extension
mounted in a host app), the standalone service under gunicorn on a key prefix
of its own (``served``), counting the commands a client sends, and deleting
a test's own keys (never flushing a shared server)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import fakeredis
import pytest
import redis
from flask import Flask, jsonify
from flask_jwt_extended import jwt_required
from redis.cluster import ClusterNode, RedisCluster

from sessionsvc import SessionManager
from sessionsvc.models import User
from sessionsvc.store import SessionStore
from tests.clients import JWT_KEY, fast_hash
from tests.servers import Gunicorn, service_env


def record_commands(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command ``client`` sends from now on (one round trip each, unpipelined)."""
    sent: list[str] = []
    original = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return original(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    return sent


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete this test's keys, and only them."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


#: When ``served`` says its users were created: 1 December 2025, 12:00 UTC.
CREATED_AT = 1764590400


@contextmanager
def served(
    redis_url: str,
    users: dict[str, str],
    *,
    workers: int | None = 2,
    host: str = "127.0.0.1",
    roles: dict[str, tuple[str, ...]] | None = None,
    **settings: str,
) -> Iterator[Gunicorn]:
    """The standalone service under gunicorn on the real Redis, under a key
    prefix of its own with these users (name: password) and their ``roles``
    (name: roles, none by default); its keys go after."""
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = SessionStore(lambda: client, prefix=prefix)
    for name, password in users.items():
        store.create_user(
            User(
                name,
                fast_hash(password),
                roles=(roles or {}).get(name, ()),
                account=secrets.token_urlsafe(12),
                created_at=CREATED_AT,
            )
        )
    env = service_env(
        SESSIONSVC_REDIS_URL=redis_url,
        SESSIONSVC_KEY_PREFIX=prefix,
        JWT_SECRET_KEY=JWT_KEY,
        **settings,
    )
    service = Gunicorn(env, workers=workers, host=host)
    try:
        yield service.start()
    finally:
        service.stop()
        delete_prefix(client, prefix)
        client.close()


@dataclass
class Backend:
    """One store shared by every app a test builds."""

    name: str
    prefix: str
    url: str | None = None
    server: Any = None
    clients: list[redis.Redis] = field(default_factory=list)

    def client(self) -> redis.Redis:
        """A new client of this store (what another process would have)."""
        if self.url is not None:
            made: redis.Redis = redis.Redis.from_url(self.url, decode_responses=True)
        else:
            made = fakeredis.FakeRedis(server=self.server, decode_responses=True)
        self.clients.append(made)
        return made

    def app_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"SESSIONSVC_KEY_PREFIX": self.prefix}
        if self.url is not None:
            config["SESSIONSVC_REDIS_URL"] = self.url
        return config

    def app_kwargs(self) -> dict[str, Any]:
        # fakeredis has no URL: hand its client in, as a host app would.
        return {} if self.url is not None else {"redis_client": self.client()}


@dataclass
class ClusterBackend(Backend):
    """The store on conftest's ``redis_cluster``: its clients are cluster clients."""

    ports: list[int] = field(default_factory=list)

    def client(self) -> redis.Redis:
        made = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", port) for port in self.ports],
            decode_responses=True,
        )
        self.clients.append(cast(redis.Redis, made))
        return cast(redis.Redis, made)


#: What the ``make_app`` fixture gives: it builds an app, keyword arguments are config.
AppFactory = Callable[..., Flask]


def host_app(backend: Backend, **config: Any) -> tuple[Flask, SessionManager]:
    """A host app with its own login view and a protected route."""
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY, **backend.app_config(), **config)
    sessions = SessionManager(**backend.app_kwargs())
    sessions.init_app(app)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        return jsonify(sessions.open(user, claims={"roles": ["reader"]}).to_json())

    @app.get("/things")
    @jwt_required()
    def things() -> Any:
        return jsonify(["a", "b"])

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("host bug")

    return app, sessions
