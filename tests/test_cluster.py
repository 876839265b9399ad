"""The store on a real Redis Cluster: URLs, hash slots, scripts, rate limits (spec 8, 9).

Every test of the ``backend`` fixture also runs on the cluster of
tests/conftest.py (its ``cluster`` param); these are what only a cluster
has: several masters, keys that must share a slot, a script cache per node,
a client that finds the masters from any one of them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import quote

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from limits.storage import RedisClusterStorage
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from sessionsvc import create_app, current_manager
from sessionsvc.errors import StoreUnavailable
from sessionsvc.models import User
from sessionsvc.store import SessionStore, client_factory_from_url, store_from_url, user_tag
from sessionsvc.store.scripts import NAMES
from tests.backends import AppFactory, Backend
from tests.clients import CHROME, FIREFOX_LINUX, JWT_KEY, Auth, assert_problem
from tests.servers import ClusterGroup, free_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.parametrize("backend", ["cluster"], indirect=True),
]

SESSIONS = "/api/v1/sessions"
LOGIN = "/api/v1/auth/login"


def manager_store(app: Flask) -> SessionStore:
    with app.app_context():
        return current_manager().store


def limiter_storage(app: Flask) -> RedisClusterStorage:
    """The storage Flask-Limiter counts the app's login attempts in."""
    [limiter] = app.extensions["limiter"]
    storage = limiter.storage
    assert isinstance(storage, RedisClusterStorage)
    return storage


def slot_of_user(user_id: str) -> int:
    return key_slot(f"{{{user_tag(user_id)}}}".encode())


def user_on_another_master(group: ClusterGroup, user_id: str) -> str:
    """A user id whose keys another master than ``user_id``'s serves."""
    taken = group.owner(slot_of_user(user_id))
    return next(
        name
        for name in (f"user{i}" for i in range(1000))
        if group.owner(slot_of_user(name)) != taken
    )


def cached_everywhere(group: ClusterGroup, script: str) -> bool:
    sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    return all(group.node(port).script_exists(sha) == [True] for port in group.ports)


@pytest.fixture
def cluster_store(backend: Backend) -> Iterator[SessionStore]:
    """A store built from the documented URL, on the test's key prefix."""
    assert backend.url is not None
    store = store_from_url(
        backend.url, prefix=backend.prefix, timeout=0.5, events_max=20, events_ttl=60
    )
    yield store
    store.close()


@pytest.fixture
def acl_user(redis_cluster: ClusterGroup) -> Iterator[tuple[str, str]]:
    """An ACL user on every node (ACLs are per node, not per cluster)."""
    name, password = f"sessionsvc-{secrets.token_hex(4)}", "p@ss:w/rd"
    for port in redis_cluster.ports:
        redis_cluster.node(port).acl_setuser(
            name, enabled=True, passwords=[f"+{password}"], categories=["+@all"], keys=["*"]
        )
    yield name, password
    for port in redis_cluster.ports:
        redis_cluster.node(port).acl_deluser(name)


# -- the documented URL ------------------------------------------------------------


def test_any_node_of_the_url_finds_every_master(
    redis_cluster: ClusterGroup, backend: Backend
) -> None:
    urls = [redis_cluster.url] + [f"redis+cluster://127.0.0.1:{p}" for p in redis_cluster.ports]
    for url in urls:
        client = client_factory_from_url(url, timeout=0.5)()
        try:
            assert isinstance(client, RedisCluster)
            primaries = sorted(node.port for node in client.get_primaries())
            assert primaries == sorted(redis_cluster.ports)
            # Read-your-own-writes: every command, reads too, goes to the
            # slot's master, never to a replica that may lag behind.
            assert client.read_from_replicas is False
            assert client.load_balancing_strategy is None
        finally:
            client.close()


def test_one_node_url_serves_users_on_every_master(
    redis_cluster: ClusterGroup, backend: Backend
) -> None:
    one_node = f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}"
    store = store_from_url(
        one_node, prefix=backend.prefix, timeout=0.5, events_max=5, events_ttl=60
    )
    names, owners = [], set()
    for i in range(1000):
        name = f"user{i}"
        owner = redis_cluster.owner(slot_of_user(name))
        if owner not in owners:
            owners.add(owner)
            names.append(name)
        if len(owners) == len(redis_cluster.ports):
            break
    try:
        for name in names:
            assert store.create_user(User(id=name, password_hash="h", roles=("admin",)))
        for name in names:
            assert store.get_user(name) == User(id=name, password_hash="h", roles=("admin",))
            key = store.user_key(name)
            assert redis_cluster.node(redis_cluster.owner(slot_of_user(name))).exists(key) == 1
    finally:
        store.close()
    assert owners == set(redis_cluster.ports)


def test_url_with_an_acl_user_and_password(
    redis_cluster: ClusterGroup, backend: Backend, acl_user: tuple[str, str]
) -> None:
    name, password = acl_user
    nodes = ",".join(f"127.0.0.1:{port}" for port in redis_cluster.ports[:2])
    url = f"redis+cluster://{name}:{quote(password, safe='')}@{nodes}"
    app = create_app(
        {
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_REDIS_URL": url,
            "SESSIONSVC_KEY_PREFIX": backend.prefix,
            "SESSIONSVC_LOGIN_RATE_LIMIT": "5/minute",
        }
    )
    auth = Auth(app)
    tokens = auth.login("alice")
    assert app.test_client().get(SESSIONS, headers=auth.headers(tokens)).status_code == 200
    # The sessions and the limiter's counters, both as the ACL user.
    counter = backend.client().get(f"{backend.prefix}:rl:LIMITER/127.0.0.1/login:ip/5/1/minute")
    assert counter == "1"
    assert limiter_storage(app).storage.get_connection_kwargs()["username"] == name
    users = {
        entry["user"]
        for port in redis_cluster.ports
        for entry in redis_cluster.node(port).client_list()
    }
    assert name in users
    manager_store(app).close()

    wrong = f"redis+cluster://{name}:nope@{nodes}"
    store = store_from_url(wrong, prefix=backend.prefix, timeout=0.5, events_max=5, events_ttl=60)
    with pytest.raises(StoreUnavailable):
        store.get_user("alice")


def test_a_cluster_that_does_not_answer(backend: Backend) -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    config = {
        "TESTING": True,
        "JWT_SECRET_KEY": JWT_KEY,
        "SESSIONSVC_REDIS_URL": url,
        "SESSIONSVC_KEY_PREFIX": backend.prefix,
        "SESSIONSVC_LOGIN_RATE_LIMIT": "",
    }
    # The store connects on first use: the app starts, and fails closed.
    client = create_app(config).test_client()
    assert client.get("/healthz").status_code == 200
    assert_problem(client.get("/readyz"), 503, "store_unavailable")
    assert_problem(
        client.post(LOGIN, json={"username": "alice", "password": "pw"}), 503, "store_unavailable"
    )
    # limits' cluster storage connects when it is built: at start-up.
    with pytest.raises(redis.exceptions.RedisClusterException, match="cannot be connected"):
        create_app({**config, "SESSIONSVC_LOGIN_RATE_LIMIT": "5/minute"})


# -- one slot per user --------------------------------------------------------------


def test_every_key_of_a_user_is_in_one_slot_of_the_live_cluster(
    make_app: AppFactory, backend: Backend, redis_cluster: ClusterGroup
) -> None:
    app = make_app(SESSIONSVC_LOGIN_RATE_LIMIT="10/minute")
    auth, client = Auth(app), app.test_client()
    other = user_on_another_master(redis_cluster, "alice")
    first = auth.login("alice", user_agent=CHROME)
    second = auth.login("alice", user_agent=FIREFOX_LINUX)  # a new device: 'known' grows
    third = auth.login(other)
    sessions = {
        "alice": {f"s:{first['session_id']}", f"s:{second['session_id']}"},
        other: {f"s:{third['session_id']}"},
    }
    assert client.get(SESSIONS, headers=auth.headers(second)).status_code == 200
    assert client.get(f"{SESSIONS}/events", headers=auth.headers(first)).status_code == 200

    keys = set(backend.client().scan_iter(match=f"{backend.prefix}:*", count=1000))
    for user_id in ("alice", other):
        head = f"{backend.prefix}:{{{user_tag(user_id)}}}:"
        mine = {key for key in keys if key.startswith(head)}
        suffixes = {key.removeprefix(head) for key in mine}
        assert suffixes == {"idx", "ev", "known", "ag", "user"} | sessions[user_id]
        # The cluster's own hashing agrees: one slot, stored on its master only.
        assert {redis_cluster.keyslot(key) for key in mine} == {slot_of_user(user_id)}
        owner = redis_cluster.owner(slot_of_user(user_id))
        for port in redis_cluster.ports:
            held = set(redis_cluster.node(port).scan_iter(match=head + "*", count=1000))
            assert held == (mine if port == owner else set())
    assert redis_cluster.owner(slot_of_user("alice")) != redis_cluster.owner(slot_of_user(other))

    # The counters are single keys (one command each): they need no tag.
    counters = {key for key in keys if key.startswith(f"{backend.prefix}:rl:")}
    assert counters == {
        f"{backend.prefix}:rl:LIMITER/127.0.0.1/login:ip/10/1/minute",
        f"{backend.prefix}:rl:LIMITER/{user_tag('alice')}/login:user/10/1/minute",
        f"{backend.prefix}:rl:LIMITER/{user_tag(other)}/login:user/10/1/minute",
    }
    values = [backend.client().get(key) for key in sorted(counters)]
    # alice's second sign-in came from an address she signed in from: it passes
    # her per-username limit uncounted.
    assert sorted(values) == ["1", "1", "3"]


# -- scripts -------------------------------------------------------------------------


def record_commands(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command the store's cluster client sends from now on, as strings."""
    sent: list[list[str]] = []
    original = store.client.execute_command

    def recording(*args: Any, **options: Any) -> Any:
        sent.append([str(arg) for arg in args])
        return original(*args, **options)

    monkeypatch.setattr(store.client, "execute_command", recording)
    return sent


def test_a_master_that_lost_its_scripts_gets_them_back(
    cluster_store: SessionStore, redis_cluster: ClusterGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cluster_store
    assert store.create_user(User(id="alice", password_hash="h"))
    owner = redis_cluster.node(redis_cluster.owner(slot_of_user("alice")))
    owner.script_flush()  # as a restarted or newly promoted master has none

    sent = record_commands(store, monkeypatch)
    assert not store.create_user(User(id="alice", password_hash="h"))  # taken: the script ran
    # The name index's ZADDs (before and after the script) are plain commands.
    commands = [args[0].upper() for args in sent]
    assert commands == ["ZADD", "EVALSHA", "SCRIPT LOAD", "EVALSHA", "ZADD"]
    # SCRIPT LOAD goes to every master, the one that answered NOSCRIPT too.
    assert cached_everywhere(redis_cluster, sent[2][1])


def test_load_scripts_caches_every_script_on_every_master(
    cluster_store: SessionStore, redis_cluster: ClusterGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    for port in redis_cluster.ports:
        redis_cluster.node(port).script_flush()
    sent = record_commands(cluster_store, monkeypatch)
    cluster_store.load_scripts()
    scripts = [args[1] for args in sent]
    assert [args[0].upper() for args in sent] == ["SCRIPT LOAD"] * len(NAMES)
    assert all(cached_everywhere(redis_cluster, script) for script in scripts)
    for port in redis_cluster.ports:
        assert redis_cluster.node(port).info("memory")["number_of_cached_scripts"] == len(NAMES)


# -- revocation across app instances ----------------------------------------------


def test_revocation_bites_on_another_app_instance_on_the_cluster(make_app: AppFactory) -> None:
    app_a, app_b = make_app(), make_app()
    store_a, store_b = manager_store(app_a), manager_store(app_b)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    auth = Auth(app_a)
    mine, other = auth.login("alice"), auth.login("alice")
    # Instance B has its own cluster client, with connections already open.
    assert client_b.get(SESSIONS, headers=auth.headers(other)).status_code == 200
    assert isinstance(store_a.client, RedisCluster) and isinstance(store_b.client, RedisCluster)
    assert store_a.client is not store_b.client

    response = client_a.delete(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(mine))
    assert response.status_code == 204

    assert_problem(client_b.get(SESSIONS, headers=auth.headers(other)), 401, "session_revoked")
    assert_problem(
        client_b.post("/api/v1/auth/refresh", headers=auth.headers(other, "refresh_token")),
        401,
        "session_revoked",
    )
    body = client_b.get(SESSIONS, headers=auth.headers(mine)).get_json()
    assert [session["id"] for session in body["sessions"]] == [mine["session_id"]]


# -- login rate limiting ---------------------------------------------------------------


def test_the_limiter_counts_in_the_cluster_with_the_store_settings(
    make_app: AppFactory, backend: Backend, redis_cluster: ClusterGroup
) -> None:
    app = make_app(SESSIONSVC_LOGIN_RATE_LIMIT="2/minute", SESSIONSVC_STORE_TIMEOUT=0.25)
    storage = limiter_storage(app)
    assert storage.key_prefix == f"{backend.prefix}:rl"
    cluster = storage.storage
    assert isinstance(cluster, RedisCluster)
    assert cluster is not manager_store(app).client  # limits builds its own
    assert [(n.host, n.port) for n in cluster.startup_nodes] == [
        ("127.0.0.1", port) for port in redis_cluster.ports
    ]
    kwargs = cluster.get_connection_kwargs()
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
    assert "decode_responses" not in kwargs
    assert cluster.retry is manager_store(app).client.retry
    assert cluster.read_from_replicas is False

    Auth(app).create_user("alice")
    client = app.test_client()
    body = {"username": "alice", "password": "pw"}
    statuses = [client.post(LOGIN, json=body).status_code for _ in range(2)]
    assert statuses == [200, 200]
    assert_problem(client.post(LOGIN, json=body), 429, "rate_limited")


def test_an_injected_cluster_client_lends_the_limiter_its_settings(
    redis_cluster: ClusterGroup, backend: Backend
) -> None:
    injected = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", redis_cluster.ports[1])],
        decode_responses=True,
        socket_timeout=0.75,
    )
    config = {
        "TESTING": True,
        "JWT_SECRET_KEY": JWT_KEY,
        "SESSIONSVC_KEY_PREFIX": backend.prefix,
        "SESSIONSVC_LOGIN_RATE_LIMIT": "1/minute",
    }
    try:
        app = create_app(config, redis_client=cast(redis.Redis, injected))
        cluster = limiter_storage(app).storage
        assert [(n.host, n.port) for n in cluster.startup_nodes] == [
            ("127.0.0.1", redis_cluster.ports[1])
        ]
        assert cluster.get_connection_kwargs()["socket_timeout"] == 0.75
        client = app.test_client()
        body = {"username": "nobody", "password": "pw"}
        assert_problem(client.post(LOGIN, json=body), 401, "invalid_credentials")
        assert_problem(client.post(LOGIN, json=body), 429, "rate_limited")
    finally:
        injected.close()


@pytest.mark.slow
def test_login_fails_closed_when_the_whole_cluster_is_gone(backend: Backend) -> None:
    group = ClusterGroup().start()  # its own: this one is killed
    try:
        app = create_app(
            {
                "TESTING": True,
                "JWT_SECRET_KEY": JWT_KEY,
                "SESSIONSVC_REDIS_URL": group.url,
                "SESSIONSVC_LOGIN_RATE_LIMIT": "5/minute",
            }
        )
        auth = Auth(app)
        tokens = auth.login("alice")
        client: FlaskClient = app.test_client()
        for proc in group.procs:
            proc.kill()
            proc.wait(5)
        started = time.monotonic()
        assert_problem(client.get(SESSIONS, headers=auth.headers(tokens)), 503, "store_unavailable")
        # The limiter's cluster client gives up with RedisClusterException,
        # which limits does not wrap: still 503, not a 500.
        response = client.post(LOGIN, json={"username": "alice", "password": "pw"})
        assert_problem(response, 503, "store_unavailable")
        assert time.monotonic() - started < 5
        manager_store(app).close()
    finally:
        group.stop()
