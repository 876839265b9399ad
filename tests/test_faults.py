"""Failing closed: a Redis of the test's own that dies, hangs and comes back."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from sessionsvc import create_app, current_manager
from tests.clients import JWT_KEY, Auth, assert_problem
from tests.servers import RedisProcess, free_port

pytestmark = pytest.mark.slow

TIMEOUT = 0.3


@pytest.fixture
def faulty_app(own_redis: RedisProcess) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_REDIS_URL": own_redis.url,
            "SESSIONSVC_STORE_TIMEOUT": TIMEOUT,
            "SESSIONSVC_TOUCH_INTERVAL": 1,
        }
    )
    yield app
    # Its connections (the limiter's share the pool) would otherwise be
    # reported unclosed by whichever later test the garbage collector hits.
    with app.app_context():
        current_manager().store.close()


def wait_ready(app: Flask, limit: float = 10.0) -> float:
    """Seconds until /readyz answers 200 again."""
    client = app.test_client()
    start = time.monotonic()
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() - start < limit, "the service did not recover by itself"
        time.sleep(0.05)
    return time.monotonic() - start


def test_store_down_fails_closed_then_recovers_empty(
    own_redis: RedisProcess, faulty_app: Flask
) -> None:
    auth = Auth(faulty_app)
    tokens = auth.login("alice")
    other = auth.login("alice")
    client = faulty_app.test_client()
    headers = auth.headers(tokens)
    assert client.get("/api/v1/sessions", headers=headers).status_code == 200

    own_redis.stop()
    checks = [
        client.get("/api/v1/sessions", headers=headers),
        client.get(f"/api/v1/sessions/{other['session_id']}", headers=headers),
        client.delete(f"/api/v1/sessions/{other['session_id']}", headers=headers),
        client.delete("/api/v1/sessions", headers=headers),
        client.post("/api/v1/auth/refresh", headers=auth.headers(tokens, "refresh_token")),
        client.post("/api/v1/auth/logout", headers=headers),
        client.post("/api/v1/auth/login", json={"username": "alice", "password": "pw"}),
        client.get("/readyz"),
    ]
    for response in checks:
        assert_problem(response, 503, "store_unavailable")
        assert response.headers["Retry-After"] == "1"
    start = time.monotonic()
    assert_problem(client.get("/api/v1/sessions", headers=headers), 503, "store_unavailable")
    assert time.monotonic() - start < 2 * TIMEOUT + 1

    own_redis.start()  # same port, and empty: every session is lost
    recovered = wait_ready(faulty_app)
    print(f"restart: ready again {recovered:.3f} s after redis-server answered")
    assert_problem(client.get("/api/v1/sessions", headers=headers), 401, "session_revoked")
    assert_problem(
        client.get("/api/v1/sessions", headers=auth.headers(other)), 401, "session_revoked"
    )
    fresh = auth.login("alice")
    assert client.get("/api/v1/sessions", headers=auth.headers(fresh)).status_code == 200


def test_store_hanging_fails_closed_then_recovers_with_its_data(
    own_redis: RedisProcess, faulty_app: Flask
) -> None:
    auth = Auth(faulty_app)
    tokens = auth.login("alice")
    client = faulty_app.test_client()
    headers = auth.headers(tokens)
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        assert_problem(client.get("/api/v1/sessions", headers=headers), 503, "store_unavailable")
        assert time.monotonic() - start < 2 * TIMEOUT + 1
        assert_problem(client.get("/readyz"), 503, "store_unavailable")
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    wait_ready(faulty_app)
    response = client.get("/api/v1/sessions", headers=headers)
    assert response.status_code == 200
    assert [s["id"] for s in response.get_json()["sessions"]] == [tokens["session_id"]]


def test_a_busy_store_debug_sleep_fails_closed_within_the_timeout(
    own_redis: RedisProcess, faulty_app: Flask
) -> None:
    # DEBUG SLEEP blocks the server for everyone: a hang that is not a dead socket.
    auth = Auth(faulty_app)
    tokens = auth.login("alice")
    client = faulty_app.test_client()
    headers = auth.headers(tokens)
    sleeper = redis.Redis.from_url(own_redis.url)
    blocker = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", 2))
    blocker.start()
    try:
        time.sleep(0.1)
        timings = []
        for _ in range(3):
            start = time.monotonic()
            assert_problem(
                client.get("/api/v1/sessions", headers=headers), 503, "store_unavailable"
            )
            timings.append(time.monotonic() - start)
        assert max(timings) < 2 * TIMEOUT + 0.5
        assert_problem(client.get("/readyz"), 503, "store_unavailable")
    finally:
        blocker.join(10)
        sleeper.close()
    wait_ready(faulty_app)
    assert client.get("/api/v1/sessions", headers=headers).status_code == 200


def test_nothing_is_let_through_during_an_outage_and_recovery_is_quick(
    own_redis: RedisProcess, faulty_app: Flask
) -> None:
    auth = Auth(faulty_app)
    tokens = auth.login("alice")
    revoked = auth.login("alice")
    client = faulty_app.test_client()
    headers = auth.headers(tokens)
    assert (
        client.delete(f"/api/v1/sessions/{revoked['session_id']}", headers=headers).status_code
        == 204
    )
    own_redis.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        during = [
            client.get("/api/v1/sessions", headers=auth.headers(pair)).status_code
            for pair in (tokens, revoked) * 4
        ]
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    assert during == [503] * 8  # not one 200, not one 401
    recovered = wait_ready(faulty_app)
    assert client.get("/api/v1/sessions", headers=headers).status_code == 200
    assert_problem(
        client.get("/api/v1/sessions", headers=auth.headers(revoked)), 401, "session_revoked"
    )
    print(f"outage: {len(during)} requests, 0 let through; ready again after {recovered:.3f} s")
    assert recovered < 5


def test_the_log_names_where_the_store_is_and_why_it_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    app = create_app(
        {
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_REDIS_URL": f"redis://someone:hunter2-secret@127.0.0.1:{port}/3",
            "SESSIONSVC_STORE_TIMEOUT": TIMEOUT,
        }
    )
    assert_problem(app.test_client().get("/readyz"), 503, "store_unavailable")
    lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert lines, caplog.text
    assert lines[0].startswith(
        f"session store redis://127.0.0.1:{port}/3 unavailable: ConnectionError: "
    )
    assert "refused" in lines[0].lower()  # the cause, as the operating system gave it
    assert "hunter2-secret" not in caplog.text
    assert "someone" not in caplog.text
