"""Login rate limiting: SESSIONSVC_LOGIN_RATE_LIMIT per client address and per username."""

from __future__ import annotations

import http.client as http_client
import json
import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from redis.connection import SSLConnection, UnixDomainSocketConnection
from redis.sentinel import SentinelConnectionPool

from sessionsvc import ConfigError, SessionManager, create_app, current_manager, passwords
from sessionsvc.store import address_group, store_from_url, user_tag
from tests.backends import AppFactory, Backend, delete_prefix, served
from tests.clients import JWT_KEY, Auth, assert_problem, http
from tests.servers import Gunicorn, RedisProcess, service_env, wait_until
from tests.skips import cannot_run

LOGIN = "/api/v1/auth/login"
SESSIONS = "/api/v1/sessions"


def attempt(
    client: FlaskClient,
    username: Any = "alice",
    password: str = "wrong",
    *,
    ip: str = "198.51.100.1",
    **kwargs: Any,
) -> Any:
    """One login attempt from ``ip``; a JSON body unless ``data`` is given."""
    if "data" not in kwargs:
        kwargs["json"] = {"username": username, "password": password}
    return client.post(LOGIN, environ_base={"REMOTE_ADDR": ip}, **kwargs)


def counters(backend: Backend) -> dict[str, int]:
    """The rate-limit counters under the test's key prefix, without the prefix."""
    client = backend.client()
    head = f"{backend.prefix}:rl:"
    return {
        key.removeprefix(head): int(client.get(key))
        for key in client.scan_iter(match=head + "*", count=1000)
    }


def address_key(ip: str, limit: str = "3/1/minute") -> str:
    return f"LIMITER/{ip}/login:ip/{limit}"


def username_key(username: str, limit: str = "3/1/minute") -> str:
    return f"LIMITER/{user_tag(username)}/login:user/{limit}"


def create_users(app: Flask, *names: str) -> Flask:
    # With a cheap hash: an unknown name costs a real scrypt hash per attempt.
    auth = Auth(app)
    for name in names:
        auth.create_user(name, "pw")
    return app


@pytest.fixture
def limited(make_app: AppFactory) -> Flask:
    return create_users(make_app(SESSIONSVC_LOGIN_RATE_LIMIT="3/minute"), "alice", "bob", "carol")


# -- the two limits ---------------------------------------------------------------


def test_per_address_limit_counts_every_attempt_whatever_the_username(limited: Flask) -> None:
    client = limited.test_client()
    statuses = [
        attempt(client, "alice", "pw").status_code,  # a success counts too
        attempt(client, "bob").status_code,
        attempt(client, "carol").status_code,
    ]
    assert statuses == [200, 401, 401]
    # The right password of a fourth name is refused, and opens no session.
    assert_problem(attempt(client, "alice", "pw"), 429, "rate_limited")
    tokens = Auth(limited).login("alice", "pw", ip="198.51.100.2")
    listed = client.get(SESSIONS, headers=Auth.headers(tokens)).get_json()["sessions"]
    assert len(listed) == 2


def test_per_username_limit_counts_every_address(limited: Flask) -> None:
    client = limited.test_client()
    statuses = [attempt(client, "alice", ip=f"203.0.113.{i}").status_code for i in range(3)]
    assert statuses == [401, 401, 401]
    # The right password from a fresh address: the name is locked for now.
    assert_problem(attempt(client, "alice", "pw", ip="203.0.113.9"), 429, "rate_limited")
    # That address may still try another name.
    assert attempt(client, "bob", ip="203.0.113.9").status_code == 401


def test_refused_attempt_is_the_spec_problem_with_retry_after(limited: Flask) -> None:
    client = limited.test_client()
    for _ in range(3):
        attempt(client)
    response = attempt(client)
    body = assert_problem(response, 429, "rate_limited")
    assert body["title"] == "Too Many Requests"
    assert body["detail"] == "Too many login attempts; try again later."
    # The window is a minute and started just now.
    assert 55 <= int(response.headers["Retry-After"]) <= 61
    assert "X-RateLimit-Limit" not in response.headers


def test_attempts_are_allowed_again_when_the_window_ends(make_app: AppFactory) -> None:
    client = create_users(make_app(SESSIONSVC_LOGIN_RATE_LIMIT="2/second"), "alice").test_client()
    assert [attempt(client).status_code for _ in range(3)] == [401, 401, 429]
    assert attempt(client).headers["Retry-After"] == "1"
    time.sleep(1.1)
    assert attempt(client).status_code == 401


def test_several_limits_each_count(make_app: AppFactory, backend: Backend) -> None:
    client = make_app(SESSIONSVC_LOGIN_RATE_LIMIT="5/minute;2/hour").test_client()
    assert [attempt(client, f"user{i}").status_code for i in range(3)] == [401, 401, 429]
    found = counters(backend)
    assert found[address_key("198.51.100.1", "5/1/minute")] == 3
    assert found[address_key("198.51.100.1", "2/1/hour")] == 3


def test_other_routes_are_not_limited(make_app: AppFactory) -> None:
    app = make_app(SESSIONSVC_LOGIN_RATE_LIMIT="1/minute")
    auth = Auth(app)
    tokens = auth.login("alice", "pw")
    client = app.test_client()
    for _ in range(5):
        assert client.get(SESSIONS, headers=auth.headers(tokens)).status_code == 200
    assert client.get("/healthz").status_code == 200
    refreshed = client.post("/api/v1/auth/refresh", headers=auth.headers(tokens, "refresh_token"))
    assert refreshed.status_code == 200
    assert_problem(attempt(client, "alice", "pw", ip="127.0.0.1"), 429, "rate_limited")


# -- what is counted, and where -----------------------------------------------------


def test_counters_live_under_the_key_prefix(limited: Flask, backend: Backend) -> None:
    client = limited.test_client()
    attempt(client, "alice")
    attempt(client, "alice", ip="198.51.100.2")
    attempt(client, "bob")
    assert counters(backend) == {
        address_key("198.51.100.1"): 2,
        address_key("198.51.100.2"): 1,
        username_key("alice"): 2,
        username_key("bob"): 1,
    }
    store = backend.client()
    ttl = store.ttl(f"{backend.prefix}:rl:{address_key('198.51.100.1')}")
    assert 0 < cast(int, ttl) <= 60
    if backend.name == "fakeredis":  # a server of the test's own: nothing else is in it
        assert all(key.startswith(backend.prefix + ":") for key in store.keys("*"))


def test_bad_bodies_get_the_usual_400_and_count_per_address_only(
    limited: Flask, backend: Backend
) -> None:
    client = limited.test_client()
    assert_problem(
        attempt(client, data="{not json", content_type="application/json"), 400, "invalid_request"
    )
    assert_problem(attempt(client, username=["alice"]), 400, "invalid_request")
    assert attempt(client, username="").status_code == 401  # names no account
    assert counters(backend) == {address_key("198.51.100.1"): 3}
    assert_problem(attempt(client, "alice", "pw"), 429, "rate_limited")


def test_too_large_body_is_413_not_an_error_of_the_limiter(limited: Flask) -> None:
    client = limited.test_client()
    body = '{"username": "' + "a" * (70 * 1024) + '", "password": "x"}'
    response = attempt(client, data=body, content_type="application/json")
    assert_problem(response, 413, "payload_too_large")


def test_username_over_the_length_limit_is_400_and_gets_no_counter(
    limited: Flask, backend: Backend
) -> None:
    client = limited.test_client()
    assert_problem(attempt(client, "a" * 257), 400, "invalid_request")
    assert counters(backend) == {address_key("198.51.100.1"): 1}


def test_passwords_are_not_logged(limited: Flask, caplog: pytest.LogCaptureFixture) -> None:
    client = limited.test_client()
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            attempt(client, "alice", "hunter2-secret")
    assert caplog.records  # the refusals are logged...
    assert "hunter2-secret" not in caplog.text  # ...without the password


# -- configuration -----------------------------------------------------------------


def test_empty_string_turns_the_limit_off(make_app: AppFactory, backend: Backend) -> None:
    client = create_users(make_app(SESSIONSVC_LOGIN_RATE_LIMIT=""), "alice").test_client()
    assert {attempt(client).status_code for _ in range(15)} == {401}
    assert counters(backend) == {}


def test_the_default_is_ten_a_minute(backend: Backend) -> None:
    config = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY, **backend.app_config()}
    app = create_users(create_app(config, **backend.app_kwargs()), *(f"user{i}" for i in range(11)))
    client = app.test_client()
    statuses = [attempt(client, f"user{i}").status_code for i in range(11)]
    assert statuses == [401] * 10 + [429]
    assert counters(backend)[address_key("198.51.100.1", "10/1/minute")] == 11
    with app.app_context():
        current_manager().store.close()


@pytest.mark.parametrize("value", ["ten", "10/fortnight", "10 per", "/minute", 10])
def test_invalid_limit_fails_at_init_naming_the_key(make_app: AppFactory, value: Any) -> None:
    with pytest.raises(ConfigError, match="SESSIONSVC_LOGIN_RATE_LIMIT"):
        make_app(SESSIONSVC_LOGIN_RATE_LIMIT=value)


def test_invalid_limit_fails_in_a_host_app_too(backend: Backend) -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=JWT_KEY, SESSIONSVC_LOGIN_RATE_LIMIT="often")
    with pytest.raises(ConfigError, match="SESSIONSVC_LOGIN_RATE_LIMIT"):
        SessionManager(app, **backend.app_kwargs())


def test_embedded_store_keeps_the_counters() -> None:
    app = create_app({"TESTING": True, "SESSIONSVC_LOGIN_RATE_LIMIT": "2/minute"})
    client = app.test_client()
    assert [attempt(client).status_code for _ in range(3)] == [401, 401, 429]


# -- storage by kind of store ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "connection"),
    [
        ("redis://127.0.0.1:1/3", redis.Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///nonexistent/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_counters_use_the_store_connection_pool(url: str, connection: type) -> None:
    store = store_from_url(url, prefix="pfx", timeout=0.5, events_max=10, events_ttl=60)
    uri, options = store.limiter_storage()  # builds the client: nothing connects yet
    assert uri == "redis://"
    assert options == {"connection_pool": store.client.connection_pool, "key_prefix": "pfx:rl"}
    assert options["connection_pool"].connection_class is connection
    assert options["connection_pool"].connection_kwargs["socket_timeout"] == 0.5


def test_counters_follow_the_sentinel_primary() -> None:
    url = "redis+sentinel://127.0.0.1:1/mymaster/2"
    store = store_from_url(url, prefix="pfx", timeout=0.5, events_max=10, events_ttl=60)
    _, options = store.limiter_storage()
    pool = options["connection_pool"]
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2


# -- failing closed ----------------------------------------------------------------------


def test_attempt_that_cannot_be_counted_is_not_let_through(
    limited: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("refused")

    # limits counts through redis-py's Script objects; the session store
    # runs its scripts by EVALSHA and keeps working.
    monkeypatch.setattr(redis.commands.core.Script, "__call__", refuse)
    client = limited.test_client()
    response = attempt(client, "alice", "pw")
    assert_problem(response, 503, "store_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "unavailable: ConnectionError: refused" in caplog.text
    assert "rate-limit store " in caplog.text
    monkeypatch.undo()
    assert attempt(client, "alice", "pw").status_code == 200


TIMEOUT = 0.3


@pytest.fixture
def faulty_app(own_redis: RedisProcess) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_REDIS_URL": own_redis.url,
            "SESSIONSVC_STORE_TIMEOUT": TIMEOUT,
            "SESSIONSVC_LOGIN_RATE_LIMIT": "5/minute",
        }
    )
    Auth(app).create_user("alice", "pw")
    yield app
    with app.app_context():
        current_manager().store.close()  # the limiter's pool too: it is the store's


@pytest.mark.slow
def test_store_down_login_fails_closed_then_counts_again(
    own_redis: RedisProcess, faulty_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = faulty_app.test_client()
    assert attempt(client, "alice", "pw").status_code == 200
    own_redis.stop()
    for response in (
        attempt(client, "alice", "pw"),
        attempt(client, data="{not json", content_type="application/json"),
    ):
        assert_problem(response, 503, "store_unavailable")
        assert response.headers["Retry-After"] == "1"
    # Where the store is, and why it did not answer.
    assert f"rate-limit store {own_redis.url} unavailable: ConnectionError: " in caplog.text

    own_redis.start()  # empty: alice and the counters are gone
    assert_problem(attempt(client, "alice", "pw"), 401, "invalid_credentials")
    assert counters_of(own_redis.url) == {
        address_key("198.51.100.1", "5/1/minute"): 1,
        username_key("alice", "5/1/minute"): 1,
    }


@pytest.mark.slow
def test_store_hanging_login_fails_closed_in_time(
    own_redis: RedisProcess, faulty_app: Flask
) -> None:
    client = faulty_app.test_client()
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        assert_problem(attempt(client, "alice", "pw"), 503, "store_unavailable")
        assert time.monotonic() - start < 2 * TIMEOUT + 1
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    assert attempt(client, "alice", "pw").status_code == 200


def counters_of(url: str, prefix: str = "sessionsvc") -> dict[str, int]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        head = f"{prefix}:rl:"
        return {key.removeprefix(head): int(client.get(key)) for key in client.keys(head + "*")}
    finally:
        client.close()


# -- several processes ---------------------------------------------------------------------


def half_a_request(port: int) -> socket.socket:
    """A connection that sends half a request: a sync worker waits on it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    time.sleep(0.3)  # accepted by the first idle worker
    return sock


def answering_workers(output: str) -> list[int]:
    """The pid of the worker that answered each login, from the JSON access lines."""
    lines = [json.loads(line) for line in output.splitlines()]
    return [
        line["pid"]
        for line in lines
        if line.get("logger") == "access" and line["path"] == LOGIN and line["status"] in (401, 429)
    ]


@pytest.mark.slow
def test_two_gunicorn_workers_share_the_counters(redis_url: str) -> None:
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    env = service_env(
        SESSIONSVC_REDIS_URL=redis_url,
        SESSIONSVC_KEY_PREFIX=prefix,
        JWT_SECRET_KEY=JWT_KEY,
        SESSIONSVC_LOGIN_RATE_LIMIT="4/minute",
        # The app is built once in the master, before the workers fork. Sync
        # workers (one request at a time), so that a half-sent request holds
        # one worker and the other answers; the access log names the worker.
        GUNICORN_CMD_ARGS="--preload --worker-class sync --threads 1",
    )
    service = Gunicorn(env, workers=2).start()
    url = f"{service.base}{LOGIN}"

    def login(i: int) -> int:
        status, _ = http("POST", url, body={"username": f"user{i}", "password": "pw"})
        return status

    try:
        # Hold one worker, so the other answers; then the reverse.
        first = half_a_request(service.port)
        statuses = [login(0), login(1)]
        second = half_a_request(service.port)
        first.close()
        statuses += [login(2), login(3), login(4)]
        second.close()
        # Each worker writes its access-log line after answering: wait for all five.
        deadline = time.monotonic() + 10
        while len(answering_workers(service.output())) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        output = service.output()
    finally:
        service.stop()
    try:
        assert statuses == [401, 401, 401, 401, 429]
        workers = answering_workers(output)
        assert len(workers) == 5
        assert len(set(workers[:2])) == 1
        assert len(set(workers)) == 2, output  # both workers counted into one counter
        assert counters_of(redis_url, prefix)[address_key("127.0.0.1", "4/1/minute")] == 5
    finally:
        cleaner = redis.Redis.from_url(redis_url, decode_responses=True)
        delete_prefix(cleaner, prefix)
        cleaner.close()


# -- no lockout by strangers -----------------------------------------------------------------


def test_a_stranger_cannot_lock_a_user_out_of_an_address_it_signed_in_from(
    limited: Flask,
) -> None:
    client = limited.test_client()
    home = "198.51.100.7"
    assert attempt(client, password="pw", ip=home).status_code == 200
    # A stranger spends the rest of alice's per-username attempts (her sign-in
    # counted as one) from elsewhere.
    statuses = [attempt(client, ip=f"203.0.113.{i}").status_code for i in range(1, 4)]
    assert statuses == [401, 401, 429]
    # Another new address is refused too: the per-username limit holds...
    assert_problem(attempt(client, password="pw", ip="192.0.2.44"), 429, "rate_limited")
    # ...but alice, from where she signed in before, is let in.
    assert attempt(client, password="pw", ip=home).status_code == 200
    # Her address's own limit still holds (3 a minute).
    assert attempt(client, ip=home).status_code == 401
    assert_problem(attempt(client, ip=home), 429, "rate_limited")


def test_an_address_known_too_long_ago_is_a_stranger_again(
    limited: Flask, backend: Backend
) -> None:
    client = limited.test_client()
    assert attempt(client, password="pw", ip="198.51.100.7").status_code == 200
    with limited.app_context():
        store = current_manager().store
        key, lifetime = store.known_key("alice"), current_manager().settings.refresh_expires
    backend.client().hset(key, "a:198.51.100.7", int(time.time()) - lifetime - 1)
    for i in range(1, 4):
        attempt(client, ip=f"203.0.113.{i}")
    assert_problem(attempt(client, password="pw", ip="198.51.100.7"), 429, "rate_limited")


def test_ipv6_clients_are_counted_and_known_per_64(limited: Flask) -> None:
    client = limited.test_client()
    # One /64: three addresses share one per-address counter.
    statuses = [
        attempt(client, f"user{i}", ip=f"2001:db8:1:2::{i}").status_code for i in range(1, 5)
    ]
    assert statuses == [401, 401, 401, 429]
    assert attempt(client, "user9", ip="2001:db8:1:3::1").status_code == 401  # another /64
    # Signed in from one address of a /64, alice is known from all of it.
    assert attempt(client, password="pw", ip="2001:db8:aa:bb::1").status_code == 200
    for i in range(1, 4):
        attempt(client, ip=f"203.0.113.{i}")
    assert attempt(client, password="pw", ip="2001:db8:aa:bb:ffff::9").status_code == 200


def test_ipv4_clients_of_a_dual_stack_socket_are_counted_and_known_per_address(
    make_app: AppFactory, backend: Backend
) -> None:
    # gunicorn bound to [::] sees every IPv4 client as ::ffff:a.b.c.d: each is
    # its own IPv4 address, not one ::/64 that a stranger's guesses lock.
    app = create_users(make_app(SESSIONSVC_LOGIN_RATE_LIMIT="10/minute"), "alice", "bob")
    client = app.test_client()
    home = "::ffff:198.51.100.7"
    assert attempt(client, password="pw", ip=home).status_code == 200
    stranger = "::ffff:203.0.113.9"
    statuses = [attempt(client, f"user{i}", ip=stranger).status_code for i in range(11)]
    assert statuses == [401] * 10 + [429]
    # Another IPv4 client is not refused by the stranger's count.
    peer = {"REMOTE_ADDR": "::ffff:198.51.100.20"}
    bob = client.post(LOGIN, json={"username": "bob", "password": "pw"}, environ_base=peer)
    assert bob.status_code == 200, bob.get_json()
    listed = client.get(SESSIONS, headers=Auth.headers(bob.get_json()), environ_base=peer)
    (session,) = listed.get_json()["sessions"]
    assert (session["ip"], session["created_ip"]) == ("198.51.100.20", "198.51.100.20")
    found = {key for key in counters(backend) if "/login:ip/" in key}
    assert found == {
        address_key(ip, "10/1/minute") for ip in ("198.51.100.7", "203.0.113.9", "198.51.100.20")
    }
    # alice's name is spent from elsewhere; her home address is known as IPv4,
    # so she is let in from it, mapped or not.
    for i in range(1, 10):
        attempt(client, ip=f"192.0.2.{i}")
    assert_problem(attempt(client, password="pw", ip="192.0.2.99"), 429, "rate_limited")
    assert attempt(client, password="pw", ip="198.51.100.7").status_code == 200
    assert attempt(client, password="pw", ip=home).status_code == 200


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::ffff:7f00:1", "127.0.0.1"),
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
    ],
)
def test_an_ipv4_mapped_address_is_grouped_as_ipv4(address: str, group: str) -> None:
    assert address_group(address) == group


def test_the_addresses_a_user_signed_in_from_are_bounded(limited: Flask, backend: Backend) -> None:
    with limited.app_context():
        manager = current_manager()
        for i in range(130):
            manager.open("alice", ip=f"10.0.{i // 250}.{i % 250}", user_agent=None)
        key = manager.store.known_key("alice")
    fields = backend.client().hkeys(key)
    assert len(fields) == 100
    # The first sign-in's device, one the parser cannot name ('?'), and 99 addresses.
    assert "d:?" in fields
    assert sum(field.startswith("a:") for field in fields) == 99


def test_a_wrong_current_password_counts_as_a_failed_login(limited: Flask) -> None:
    client = limited.test_client()
    auth = Auth(limited)
    tokens = auth.login("alice", "pw", ip="198.51.100.7")  # 1 of 3 for her name

    def change(current: str, ip: str) -> Any:
        body = {"current_password": current, "new_password": "a brand new one"}
        return client.post(
            "/api/v1/auth/password",
            json=body,
            headers=Auth.headers(tokens),
            environ_base={"REMOTE_ADDR": ip},
        )

    # A thief with her token guesses from elsewhere: both counters count.
    assert change("wrong", "203.0.113.50").status_code == 401
    assert change("wrong", "203.0.113.50").status_code == 401
    assert_problem(change("pw", "203.0.113.50"), 429, "rate_limited")
    assert_problem(attempt(client, password="pw", ip="192.0.2.9"), 429, "rate_limited")
    # From where alice signed in, she still gets in (and may change it).
    assert attempt(client, password="pw", ip="198.51.100.7").status_code == 200
    assert change("pw", "198.51.100.7").status_code == 200
    # Right passwords do not count: bob changes his twice.
    bob = auth.login("bob", "pw", ip="192.0.2.1")
    for current, new in (("pw", "bob-password-1"), ("bob-password-1", "bob-password-2")):
        response = client.post(
            "/api/v1/auth/password",
            json={"current_password": current, "new_password": new},
            headers=Auth.headers(bob),
            environ_base={"REMOTE_ADDR": "192.0.2.1"},
        )
        assert response.status_code == 200, response.get_json()


@pytest.mark.slow
def test_no_lockout_by_strangers_over_real_source_addresses(redis_url: str) -> None:
    with served(
        redis_url, {"alice": "alice-password"}, SESSIONSVC_LOGIN_RATE_LIMIT="3/minute"
    ) as service:

        def login_from(source: str, password: str = "wrong") -> int:
            connection = http_client.HTTPConnection(
                "127.0.0.1", service.port, timeout=10, source_address=(source, 0)
            )
            try:
                body = json.dumps({"username": "alice", "password": password})
                connection.request("POST", LOGIN, body, {"Content-Type": "application/json"})
                return connection.getresponse().status
            finally:
                connection.close()

        assert login_from("127.0.0.2", "alice-password") == 200  # alice, at home
        assert [login_from(f"127.0.0.{i}") for i in (3, 4, 5)] == [401, 401, 429]
        assert login_from("127.0.0.6", "alice-password") == 429  # a new address: refused
        assert login_from("127.0.0.2", "alice-password") == 200  # home: let in


def dual_stack_or_skip() -> None:
    """Fail under CI, else skip loudly, when ``[::]`` cannot take IPv4 clients here."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::", 0))
            v6only = probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except OSError as exc:
        cannot_run(f"the kernel has no IPv6 ({exc}): a dual-stack socket cannot be tested")
    if v6only:
        cannot_run("sockets bound to [::] are IPv6-only here (net.ipv6.bindv6only=1)")


@pytest.mark.slow
def test_a_dual_stack_socket_sees_ipv4_clients_as_ipv4(redis_url: str) -> None:
    dual_stack_or_skip()
    users = {"alice": "alice-password", "bob": "bob-password"}
    with served(redis_url, users, host="[::]", SESSIONSVC_LOGIN_RATE_LIMIT="3/minute") as service:

        def call(
            source: str, method: str, path: str, body: Any = None, token: str | None = None
        ) -> tuple[int, bytes]:
            # Over IPv4, to gunicorn bound to [::] only.
            connection = http_client.HTTPConnection(
                "127.0.0.1", service.port, timeout=10, source_address=(source, 0)
            )
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                data = json.dumps(body) if body is not None else None
                connection.request(method, path, data, headers)
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        def login(source: str, username: str, password: str = "wrong") -> tuple[int, bytes]:
            return call(source, "POST", LOGIN, {"username": username, "password": password})

        status, body = login("127.0.0.2", "alice", "alice-password")
        assert status == 200, body
        status, body = call("127.0.0.2", "GET", SESSIONS, token=json.loads(body)["access_token"])
        (session,) = json.loads(body)["sessions"]
        assert (session["ip"], session["created_ip"]) == ("127.0.0.2", "127.0.0.2")
        # A stranger's guesses lock the stranger's address, not every IPv4 client's.
        statuses = [login("127.0.0.3", f"user{i}")[0] for i in range(4)]
        assert statuses == [401, 401, 401, 429]
        assert login("127.0.0.4", "bob", "bob-password")[0] == 200
        # IPv4 loopback is loopback.
        assert call("127.0.0.1", "GET", "/metrics")[0] == 200
        # The access log names each client as the sessions do.
        expected = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}

        def clients() -> set[str]:
            lines = [json.loads(line) for line in service.output().splitlines() if "access" in line]
            return {line["client"] for line in lines if line.get("logger") == "access"}

        wait_until(lambda: clients() >= expected, 5, lambda: service.output()[-2000:])
        assert "::ffff:" not in service.output()


# -- guesses sent at once --------------------------------------------------------------------

PASSWORD = "/api/v1/auth/password"


def test_wrong_current_passwords_sent_at_once_are_counted_before_they_are_checked(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enough hash slots that none of the held checks below is answered busy.
    app = make_app(SESSIONSVC_LOGIN_RATE_LIMIT="10/minute", SESSIONSVC_PASSWORD_HASHES=64)
    tokens = Auth(create_users(app, "alice")).login("alice", "pw", ip="198.51.100.7")
    guesses = 40
    ready = threading.Condition()
    checked: list[str] = []
    refused: list[Any] = []
    verify = passwords.verify

    def held_verify(stored: str, password: str) -> tuple[bool, str | None]:
        # Each check waits until every guess has been checked or refused: had
        # the count come after the check, all 40 would be in here at once.
        with ready:
            checked.append(password)
            ready.notify_all()
            ready.wait_for(lambda: len(checked) + len(refused) >= guesses, timeout=10)
        return verify(stored, password)

    monkeypatch.setattr(passwords, "verify", held_verify)

    def guess(i: int) -> Any:
        response = app.test_client().post(
            PASSWORD,
            json={"current_password": f"guess-{i}", "new_password": "a brand new one"},
            headers=Auth.headers(tokens),
            environ_base={"REMOTE_ADDR": "203.0.113.50"},
        )
        if response.status_code == 429:
            with ready:
                refused.append(response)
                ready.notify_all()
        return response

    with ThreadPoolExecutor(guesses) as pool:
        responses = list(pool.map(guess, range(guesses)))
    # Her sign-in took 1 of the 10 for her name: 9 guesses were checked.
    assert len(checked) == 9
    assert sorted(r.status_code for r in responses) == [401] * 9 + [429] * 31
    for response in refused:
        assert_problem(response, 429, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_a_right_current_password_gives_its_count_back(limited: Flask, backend: Backend) -> None:
    tokens = Auth(limited).login("alice", "pw", ip="198.51.100.7")
    before = counters(backend)
    response = limited.test_client().post(
        PASSWORD,
        json={"current_password": "pw", "new_password": "a brand new one"},
        headers=Auth.headers(tokens),
        environ_base={"REMOTE_ADDR": "203.0.113.50"},
    )
    assert response.status_code == 200, response.get_json()
    # Counted while it was checked, then given back: nothing left of it.
    assert counters(backend).get(address_key("203.0.113.50"), 0) == 0
    assert counters(backend)[username_key("alice")] == before[username_key("alice")] == 1


@pytest.mark.slow
def test_wrong_current_passwords_sent_at_once_to_gunicorn_stay_within_the_limit(
    redis_url: str,
) -> None:
    with served(
        redis_url,
        {"alice": "alice-password"},
        SESSIONSVC_LOGIN_RATE_LIMIT="10/minute",
        # Every guess let through is checked (none 503 busy): what is
        # counted here is the limit.
        SESSIONSVC_PASSWORD_HASHES="64",
    ) as service:
        url = f"http://127.0.0.1:{service.port}/api/v1/auth"
        status, tokens = http(
            "POST", f"{url}/login", body={"username": "alice", "password": "alice-password"}
        )
        assert status == 200
        start = threading.Barrier(40)

        def guess(i: int) -> tuple[int, str | None]:
            connection = http_client.HTTPConnection("127.0.0.1", service.port, timeout=20)
            try:
                body = json.dumps({"current_password": f"guess-{i}", "new_password": "a new one!"})
                headers = {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {tokens['access_token']}",
                }
                start.wait()
                connection.request("POST", PASSWORD, body, headers)
                response = connection.getresponse()
                return response.status, response.getheader("Retry-After")
            finally:
                connection.close()

        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(guess, range(40)))
    # Her sign-in took 1 of the 10 for 127.0.0.1 (her name is known there).
    assert sorted(status for status, _ in answers) == [401] * 9 + [429] * 31
    assert all(retry is not None for status, retry in answers if status == 429)
