"""The standalone service under gunicorn with several workers.

Revocation must bite in every worker: each request below goes over a new
connection, so the sync workers take turns answering.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionsvc.models import User
from sessionsvc.store import SessionStore
from sessionsvc.store.devstore import NOT_INSTALLED
from tests.backends import delete_prefix
from tests.clients import CHROME, IPHONE, JWT_KEY, fast_hash, http
from tests.servers import ROOT, Gunicorn, service_env, wait_until

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
REQUESTS = 24
CREATE_ALICE = ("sessions", "create-user", "alice", "--password-stdin")


def sign_in_twice_and_revoke(base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two devices; one signs the other out; no worker accepts its token after."""
    login = f"{base}/api/v1/auth/login"
    credentials = {"username": "alice", "password": PASSWORD}
    status, laptop = http("POST", login, body=credentials, user_agent=CHROME)
    assert status == 200, laptop
    status, phone = http("POST", login, body=credentials, user_agent=IPHONE)
    assert status == 200, phone

    for _ in range(REQUESTS):
        status, body = http(
            "GET", f"{base}/api/v1/sessions", token=phone["access_token"], user_agent=IPHONE
        )
        assert status == 200
        assert {s["id"] for s in body["sessions"]} == {laptop["session_id"], phone["session_id"]}

    status, _ = http(
        "DELETE",
        f"{base}/api/v1/sessions/{phone['session_id']}",
        token=laptop["access_token"],
        user_agent=CHROME,
    )
    assert status == 204
    refused = [
        http("GET", f"{base}/api/v1/sessions", token=phone["access_token"], user_agent=IPHONE)
        for _ in range(REQUESTS)
    ]
    assert [(status, body["code"]) for status, body in refused] == [
        (401, "session_revoked")
    ] * REQUESTS
    status, body = http(
        "GET", f"{base}/api/v1/sessions", token=laptop["access_token"], user_agent=CHROME
    )
    assert status == 200
    assert [s["id"] for s in body["sessions"]] == [laptop["session_id"]]
    return laptop, phone


@pytest.fixture
def real_redis_service(redis_url: str) -> Iterator[tuple[Gunicorn, str]]:
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    SessionStore(lambda: client, prefix=prefix).create_user(User("alice", fast_hash(PASSWORD)))
    env = service_env(
        SESSIONSVC_REDIS_URL=redis_url, SESSIONSVC_KEY_PREFIX=prefix, JWT_SECRET_KEY=JWT_KEY
    )
    service = Gunicorn(env, workers=4).start()
    yield service, prefix
    service.stop()
    delete_prefix(client, prefix)
    client.close()


def test_four_workers_on_real_redis_revoke_across_workers(
    real_redis_service: tuple[Gunicorn, str],
) -> None:
    service, _ = real_redis_service
    laptop, phone = sign_in_twice_and_revoke(service.base)
    # The service answers once one worker is up; the others log their boot
    # when they get to it (a loaded machine may take a moment).
    wait_until(
        lambda: service.output().count("Booting worker") >= 4, 30, lambda: service.output()[-2000:]
    )
    output = service.output()
    assert output.count("Booting worker") == 4
    # One JSON line per security event on stderr, whichever worker saw it.
    events = [json.loads(line) for line in output.splitlines() if line.startswith('{"event"')]
    assert [(e["event"], e["session_id"], e.get("reason")) for e in events] == [
        ("session.created", laptop["session_id"], None),
        ("session.created", phone["session_id"], None),
        ("session.revoked", phone["session_id"], "user"),
    ]
    for secret in (PASSWORD, laptop["access_token"], phone["refresh_token"]):
        assert secret not in output


def test_embedded_store_under_the_run_command_is_shared_by_workers_and_cli() -> None:
    service = Gunicorn(service_env(), workers=4).start()
    try:
        assert "serving the embedded development store" in service.output()
        created = service.flask(*CREATE_ALICE, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        sign_in_twice_and_revoke(service.base)
    finally:
        service.stop()


def test_the_config_the_package_ships_shares_one_embedded_store_across_two_workers() -> None:
    # What a wheel's user runs: no file of the repository's, two workers.
    config = "python:sessionsvc.gunicorn_config"
    env = service_env(SESSIONSVC_LOGIN_RATE_LIMIT="")  # 30 sign-ins from one address
    service = Gunicorn(env, workers=2, config=config).start()
    try:
        created = service.flask(*CREATE_ALICE, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        login = f"{service.base}/api/v1/auth/login"
        credentials = {"username": "alice", "password": PASSWORD}
        fresh = [http("POST", login, body=credentials, user_agent=CHROME) for _ in range(30)]
        assert [status for status, _ in fresh] == [200] * 30
        # Each token on new connections, which the two workers take in turn.
        listed = [
            http("GET", f"{service.base}/api/v1/sessions", token=t["access_token"])[0]
            for _, t in fresh
            for _ in range(3)
        ]
        assert listed == [200] * 90
        for _, tokens in fresh[:10]:
            status, _ = http(
                "POST", f"{service.base}/api/v1/auth/logout", token=tokens["access_token"]
            )
            assert status == 204
            after = [
                http("GET", f"{service.base}/api/v1/sessions", token=tokens["access_token"])[0]
                for _ in range(3)
            ]
            assert after == [401] * 3
    finally:
        service.stop()


def test_two_workers_on_private_embedded_stores_do_not_start(tmp_path: Path) -> None:
    # gunicorn without the shipped config (an empty one: in the checkout
    # gunicorn would read ./gunicorn.conf.py by itself) and without a Redis
    # URL: nothing serves one store to the workers, and each would keep its own.
    empty = tmp_path / "gunicorn.conf.py"
    empty.write_text("")
    env = service_env(JWT_SECRET_KEY=JWT_KEY)
    gunicorn = ("-m", "gunicorn", "-c", str(empty), "-w", "2", "-b", "127.0.0.1:0", "wsgi:app")
    result = run_in_checkout(sys.executable, *gunicorn, env=env)
    assert result.returncode != 0
    assert "each of the server's 2 workers would keep a private store" in result.stderr
    for fix in ("gunicorn -w 1", "SESSIONSVC_REDIS_URL", "-c python:sessionsvc.gunicorn_config"):
        assert fix in result.stderr


def run_in_checkout(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_real_redis_without_a_signing_key_does_not_start(redis_url: str) -> None:
    # gunicorn.conf.py generates a key only for the embedded store: with a
    # real Redis a per-run key would sign everyone out at every restart.
    env = service_env(SESSIONSVC_REDIS_URL=redis_url, WEB_CONCURRENCY="1")
    env["SESSIONSVC_BIND"] = "127.0.0.1:0"
    gunicorn = (sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app")
    result = run_in_checkout(*gunicorn, env=env)
    assert result.returncode != 0
    assert "JWT_SECRET_KEY must be set" in result.stderr


def test_without_a_url_or_the_embedded_extra_the_service_says_what_to_do() -> None:
    # wsgi.py as gunicorn imports it, in a Python where fakeredis is missing:
    # the error is the one-line message, not fakeredis's ModuleNotFoundError.
    hide = "import sys; sys.modules['fakeredis'] = None; import wsgi"
    result = run_in_checkout(sys.executable, "-c", hide, env=service_env(JWT_SECRET_KEY=JWT_KEY))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"sessionsvc.settings.ConfigError: {NOT_INSTALLED}"
    assert "ModuleNotFoundError" not in result.stderr
