"""Shared fixtures: one app per test, over fakeredis and a real Redis server;
the audit trail's databases, on SQLite and a real PostgreSQL.

Real-Redis tests use ``$SESSIONSVC_TEST_REDIS_URL`` or ``127.0.0.1:6379``;
when neither answers they start their own ``redis-server`` if it is on PATH,
and otherwise skip, loudly; under ``CI=true`` they fail instead.
Every real-Redis test writes under its own random key prefix and deletes
only those keys: a shared server is never flushed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import DPoPKey, audit_query, create_app, current_manager
from sessionsvc.store import SessionStore
from tests.backends import AppFactory, Backend, ClusterBackend, delete_prefix
from tests.clients import JWT_KEY, Auth
from tests.geodata import make_geoip_db
from tests.servers import (
    POSTGRES_URL,
    ClusterGroup,
    PostgresProcess,
    RedisProcess,
    postgres_answers,
    redis_answers,
)
from tests.skips import SKIP_REASONS, cannot_run

#: The browser tests' fixtures (Chromium, the service they drive, screenshots).
pytest_plugins = ["tests.browsers"]


@pytest.fixture(autouse=True)
def service_loggers() -> Iterator[None]:
    """The service's loggers as they were before the test: a command run in
    the test's process (``audit run``, ``webhooks run``) configures them for
    stderr, which would hide later tests' lines from ``caplog``."""
    loggers = [logging.getLogger("sessionsvc"), logging.getLogger("sessionsvc.events")]
    saved = [(each.handlers[:], each.level, each.propagate) for each in loggers]
    yield
    for each, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        each.handlers[:] = handlers
        each.setLevel(level)
        each.propagate = propagate


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server for this test run."""
    url = os.environ.get("SESSIONSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    if shutil.which("redis-server"):
        server = RedisProcess().start()
        yield server.url
        server.stop()
        return
    cannot_run(f"no Redis at {url} and no redis-server on PATH: real-Redis tests cannot run")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SKIP_REASONS:
        terminalreporter.write_sep(
            "!", "TESTS SKIPPED: A REAL PART IS MISSING", red=True, bold=True
        )
        for reason in SKIP_REASONS:
            terminalreporter.write_line(reason, red=True)


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test's own, which it may kill, pause and restart."""
    if not shutil.which("redis-server"):
        cannot_run("redis-server is not on PATH: tests that stop their own server cannot run")
    server = RedisProcess().start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture
def clock() -> Iterator[Any]:
    """Frozen time an hour ahead of now (so real-Redis TTLs stay in the future)."""
    with time_machine.travel(int(time.time()) + 3600, tick=False) as traveller:
        yield traveller


@pytest.fixture(scope="session")
def geoip_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' own GeoLite2-City database (see tests/geodata.py)."""
    return make_geoip_db(tmp_path_factory)


@pytest.fixture(params=["fakeredis", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The store, over fakeredis, a real Redis server and a real Redis Cluster."""
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    if request.param == "fakeredis":
        yield Backend("fakeredis", prefix, server=fakeredis.FakeServer())
        return
    if request.param == "cluster":
        yield from cluster_backend(request, prefix)
        return
    url = request.getfixturevalue("redis_url")
    made = Backend("redis", prefix, url=url)
    yield made
    cleaner = redis.Redis.from_url(url, decode_responses=True)
    delete_prefix(cleaner, prefix)
    cleaner.close()
    for client in made.clients:
        client.close()


@pytest.fixture
def rc(backend: Backend) -> redis.Redis:
    """A client of the test's store, to look at its keys."""
    return backend.client()


@pytest.fixture
def key() -> DPoPKey:
    """A device's DPoP key (ES256)."""
    return DPoPKey.generate()


@pytest.fixture
def make_app(backend: Backend) -> Iterator[AppFactory]:
    """Build a standalone app on the test's store; keyword arguments are config."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        values = {
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_KEY,
            # Tests sign in far more often than the default 10/minute allows;
            # tests/test_limits.py passes its own limits.
            "SESSIONSVC_LOGIN_RATE_LIMIT": "",
            # Tests sign in many at once on a loaded machine: with the default
            # (a slot per core) some would be 503 busy. tests/test_passwords.py
            # passes its own bound.
            "SESSIONSVC_PASSWORD_HASHES": 64,
            **backend.app_config(),
            **config,
        }
        app = create_app(values, **backend.app_kwargs())
        made.append(app)
        return app

    yield make
    for app in made:
        audit_query.close_reader(app)
        with app.app_context():
            current_manager().store.close()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def auth(app: Flask) -> Auth:
    return Auth(app)


@pytest.fixture
def admin_tokens(auth: Auth) -> dict[str, Any]:
    """The tokens of ``root``, an admin of the test's app."""
    auth.create_user("root", "pw", admin=True)
    return auth.login("root", "pw")


@pytest.fixture
def store(app: Flask) -> SessionStore:
    """The test app's store."""
    with app.app_context():
        return current_manager().store


# -- Redis Cluster -------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterGroup]:
    """A real three-master Redis Cluster of this test run's own (never a shared one)."""
    missing = [tool for tool in ("redis-server", "redis-cli") if not shutil.which(tool)]
    if missing:
        cannot_run(f"{' and '.join(missing)} not on PATH: Redis Cluster tests cannot run")
    group = ClusterGroup().start()
    yield group
    group.stop()


def cluster_backend(request: pytest.FixtureRequest, prefix: str) -> Iterator[Backend]:
    group: ClusterGroup = request.getfixturevalue("redis_cluster")
    made = ClusterBackend("cluster", prefix, url=group.url, ports=group.ports)
    yield made
    # SCAN on a cluster client walks every primary; DEL splits by slot.
    delete_prefix(made.client(), prefix)
    for client in made.clients:
        client.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database: the one on
    127.0.0.1:5432 when it answers, else one started for the run."""
    if postgres_answers(POSTGRES_URL):
        yield POSTGRES_URL
        return
    try:
        server = PostgresProcess().start()
    except (OSError, RuntimeError) as exc:
        cannot_run(f"no PostgreSQL on 127.0.0.1:5432 and none could be started: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own: a SQLite file, or a PostgreSQL
    database with a random name, dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    # Here, not at the top: most tests need no SQL at all.
    from tests.databases import create_database, drop_database

    server: str = request.getfixturevalue("postgres_server")
    name = f"sessionsvc_test_{secrets.token_hex(6)}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


@pytest.fixture
def own_postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL server of the test's own, which it may halt and resume."""
    if not (shutil.which("initdb") and shutil.which("postgres")):
        cannot_run("initdb or postgres is not on PATH: tests that stop their own server cannot run")
    server = PostgresProcess().start()
    try:
        yield server
    finally:
        server.stop()
