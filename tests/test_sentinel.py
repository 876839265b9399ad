"""Redis Sentinel for real: a primary, its replica and a sentinel of our own.

The service is built with ``SESSIONSVC_REDIS_URL=redis+sentinel://...``, as
``wsgi.py`` would build it; a failover is ``SENTINEL FAILOVER``, and the
tests show what a session sees through it.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from redis.sentinel import MasterNotFoundError

from sessionsvc import create_app, current_manager
from sessionsvc.store import connections
from tests.clients import IPHONE, JWT_KEY, Auth, assert_problem
from tests.servers import SentinelGroup, free_port
from tests.skips import cannot_run

pytestmark = [pytest.mark.sentinel, pytest.mark.slow]

SESSIONS = "/api/v1/sessions"
TIMEOUT = 0.5  # SESSIONSVC_STORE_TIMEOUT's default, spelled out for the bounds below


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """One Sentinel group for the module's tests; the failover test runs last."""
    if not shutil.which("redis-server"):
        cannot_run("redis-server is not on PATH: the Sentinel tests cannot run")
    made = SentinelGroup()
    try:
        made.start()
    except BaseException:
        made.stop()
        raise
    yield made
    made.stop()


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(group: SentinelGroup) -> Iterator[AppFactory]:
    """Build workers of one service on the group: same URL, same key prefix."""
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    made: list[Flask] = []

    def make(*, url: str | None = None, **config: Any) -> Flask:
        app = create_app(
            {
                "TESTING": True,
                "JWT_SECRET_KEY": JWT_KEY,
                "SESSIONSVC_REDIS_URL": url or group.url(),
                "SESSIONSVC_KEY_PREFIX": prefix,
                "SESSIONSVC_STORE_TIMEOUT": TIMEOUT,
                "SESSIONSVC_LOGIN_RATE_LIMIT": "",
                **config,
            }
        )
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            current_manager().store.close()


def session_key(app: Flask, session_id: str, user: str = "alice") -> str:
    with app.app_context():
        return current_manager().store.session_key(user, session_id)


def test_service_on_sentinel_signs_in_lists_and_revokes(
    group: SentinelGroup, make_app: AppFactory
) -> None:
    app = make_app(url=group.url(db=2))
    auth, client = Auth(app), app.test_client()
    mine = auth.login("alice")
    other = auth.login("alice", user_agent=IPHONE)

    response = client.get(SESSIONS, headers=auth.headers(mine))
    assert response.status_code == 200
    listed = {s["id"]: s["device"]["os"] for s in response.get_json()["sessions"]}
    assert listed == {mine["session_id"]: "Windows", other["session_id"]: "iOS"}

    response = client.delete(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(mine))
    assert response.status_code == 204
    assert_problem(client.get(SESSIONS, headers=auth.headers(other)), 401, "session_revoked")
    response = client.get(SESSIONS, headers=auth.headers(mine))
    assert [s["id"] for s in response.get_json()["sessions"]] == [mine["session_id"]]

    # On the primary the sentinel names, in the URL's database.
    primary = group.primary()
    assert group.client(primary, db=2).exists(session_key(app, mine["session_id"])) == 1
    assert group.client(primary, db=2).exists(session_key(app, other["session_id"])) == 0
    assert group.client(primary, db=0).exists(session_key(app, mine["session_id"])) == 0


def test_unreachable_sentinels_cost_the_timeout_not_retries(
    group: SentinelGroup, make_app: AppFactory
) -> None:
    dead = free_port()  # nothing listens: refused at once
    with socket.socket() as hanging:  # accepts connections, never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        stuck = hanging.getsockname()[1]
        nodes = f"127.0.0.1:{dead},127.0.0.1:{stuck}"
        live = f"redis+sentinel://{nodes},127.0.0.1:{group.sentinel_port}/{group.service}"
        app = make_app(url=live)
        start = time.monotonic()
        Auth(app).login("alice")  # the first connection asks the sentinels in order
        assert time.monotonic() - start < 2 * TIMEOUT + 1

        none = make_app(url=f"redis+sentinel://{nodes}/{group.service}")
        start = time.monotonic()
        body = {"username": "alice", "password": "pw"}
        response = none.test_client().post("/api/v1/auth/login", json=body)
        assert_problem(response, 503, "store_unavailable")
        # One retry of the primary's connection, each asking both sentinels:
        # before, redis-py's default retried each sentinel ten times (seconds).
        assert time.monotonic() - start < 2 * TIMEOUT + 1


def test_worker_keeps_its_primary_while_no_sentinel_answers(
    group: SentinelGroup,
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(connections, "SENTINEL_CHECK_INTERVAL", 0.0)  # ask on every command
    app = make_app()
    auth, client = Auth(app), app.test_client()
    tokens = auth.login("alice")
    with app.app_context():
        pool = current_manager().store.client.connection_pool

    def no_answer(service: str) -> None:
        raise MasterNotFoundError(f"No master found for {service!r}")

    monkeypatch.setattr(pool.sentinel_manager, "discover_master", no_answer)
    with caplog.at_level("WARNING", logger="sessionsvc"):
        assert client.get(SESSIONS, headers=auth.headers(tokens)).status_code == 200
    assert "sentinels unavailable: MasterNotFoundError" in caplog.messages
    pool.disconnect()  # a new connection must ask, and nobody answers
    assert_problem(client.get(SESSIONS, headers=auth.headers(tokens)), 503, "store_unavailable")


def test_failover_keeps_acknowledged_sessions_and_follows_the_new_primary(
    group: SentinelGroup, make_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    group.wait_ready()
    old = group.primary()
    new = group.other(old)
    limited = {"SESSIONSVC_LOGIN_RATE_LIMIT": "100/minute"}
    # A worker that runs through the failover without a restart.
    worker = make_app(**limited)
    auth, client = Auth(worker), worker.test_client()
    kept = [auth.login("alice") for _ in range(4)]
    revoked = auth.login("alice")  # revoked before the failover
    later = auth.login("alice")  # revoked during the switch, by another worker
    response = client.delete(f"{SESSIONS}/{revoked['session_id']}", headers=auth.headers(kept[0]))
    assert response.status_code == 204
    group.wait_replicated()  # every session above is on the replica too

    seen: dict[str, Counter[int]] = {"kept": Counter(), "revoked": Counter(), "later": Counter()}
    start = time.monotonic()
    group.sentinel.sentinel_failover(group.service)
    switched = followed = None
    elsewhere: Flask | None = None
    while followed is None or time.monotonic() - start < followed + 1:
        now = time.monotonic() - start
        assert now < 20, f"no switch or not followed after {now:.1f} s:\n{group.logs()}"
        if switched is None and group.primary() == new and group.role(new) == "master":
            switched = now
            # A worker started now asks the sentinel, so reaches the new
            # primary at once, and revokes a session there.
            elsewhere = make_app(**limited)
            response = elsewhere.test_client().delete(
                f"{SESSIONS}/{later['session_id']}", headers=auth.headers(kept[0])
            )
            assert response.status_code == 204
            assert group.client(new).exists(session_key(worker, later["session_id"])) == 0
        for name, tokens in (("kept", kept[1]), ("revoked", revoked), ("later", later)):
            response = client.get(SESSIONS, headers=auth.headers(tokens))
            if response.status_code == 503:
                assert_problem(response, 503, "store_unavailable")
            seen[name][response.status_code] += 1
            if name == "kept":
                assert response.status_code in (200, 503), response.get_json()
            elif name == "revoked" or followed is not None:
                # Revoked, and then never alive again.
                assert response.status_code in (401, 503), (name, now)
            elif switched is not None and response.status_code == 401:
                followed = now  # the worker reads from the new primary
        time.sleep(0.02)
    assert switched is not None and followed is not None
    with capsys.disabled():
        print(
            f"\nSentinel failover: switch {switched:.2f} s after SENTINEL FAILOVER; "
            f"the running worker followed {followed - switched:.2f} s later; "
            f"statuses during the switch: { {k: dict(v) for k, v in seen.items()} }"
        )
    assert followed - switched < 3  # one check interval (1 s), then the next request

    assert elsewhere is not None
    apps = {"worker": worker, "elsewhere": elsewhere}
    # Every session acknowledged before the failover lives on the new primary.
    for name, app in apps.items():
        for tokens in kept:
            response = app.test_client().get(SESSIONS, headers=auth.headers(tokens))
            assert response.status_code == 200, (name, response.get_json())
        listed = {s["id"] for s in response.get_json()["sessions"]}
        assert listed == {tokens["session_id"] for tokens in kept}
        for tokens in (revoked, later):
            response = app.test_client().get(SESSIONS, headers=auth.headers(tokens))
            assert_problem(response, 401, "session_revoked")

    # A session revoked after the failover is revoked on the new primary.
    gone = kept.pop()
    response = client.delete(f"{SESSIONS}/{gone['session_id']}", headers=auth.headers(kept[0]))
    assert response.status_code == 204
    assert group.client(new).exists(session_key(worker, gone["session_id"])) == 0
    for app in apps.values():
        assert_problem(
            app.test_client().get(SESSIONS, headers=auth.headers(gone)), 401, "session_revoked"
        )

    # The login limiter counts on the worker's pool: on the new primary, too,
    # where the counts from before the failover arrived with the sessions.
    fresh = auth.login("alice")
    assert client.get(SESSIONS, headers=auth.headers(fresh)).status_code == 200
    with worker.app_context():
        prefix = current_manager().settings.key_prefix
    counters = group.client(new).keys(f"{prefix}:rl:*")
    assert len(counters) == 2  # per address and per username
    # Every sign-in counts per address; per username only the first: alice
    # signs in from one address, which she signed in from after that.
    by_kind = {key.split("/")[2]: group.client(new).get(key) for key in counters}
    assert by_kind == {"login:ip": "7", "login:user": "1"}


def test_a_dpop_proof_is_accepted_once_by_every_worker_on_sentinel(
    group: SentinelGroup, make_app: AppFactory
) -> None:
    from sessionsvc import DPoPKey

    first, second = make_app(), make_app()  # two workers of one service
    Auth(first).create_user("alice")
    key, login_url = DPoPKey.generate(), "http://localhost/api/v1/auth/login"
    signed_in = first.test_client().post(
        "/api/v1/auth/login",
        json={"username": "alice", "password": "pw"},
        headers={"DPoP": key.proof("POST", login_url)},
    )
    assert signed_in.status_code == 200
    token = signed_in.get_json()["access_token"]
    assert signed_in.get_json()["token_type"] == "DPoP"

    headers = key.headers("GET", "http://localhost" + SESSIONS, token)
    assert first.test_client().get(SESSIONS, headers=headers).status_code == 200
    replayed = second.test_client().get(SESSIONS, headers=headers)
    assert_problem(replayed, 401, "invalid_dpop_proof")
    fresh = key.headers("GET", "http://localhost" + SESSIONS, token)
    assert second.test_client().get(SESSIONS, headers=fresh).status_code == 200
