"""The security review's promises, each shown: signing set-up, pinned algorithm,
no revival of revoked sessions, no secrets in logs, unpredictable session ids."""

from __future__ import annotations

import base64
import json
import logging
import random
import warnings
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask

from sessionsvc import ConfigError, SessionManager, create_app, current_manager
from sessionsvc.extension import new_session_id
from sessionsvc.tokens import check_signing
from tests.clients import JWT_KEY, Auth, assert_problem

SESSIONS = "/api/v1/sessions"

# -- the signing set-up ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWT_SECRET_KEY": "short"}, "too short for HS256: 5 bytes, at least 32"),
        ({"JWT_SECRET_KEY": "k" * 31}, "too short for HS256: 31 bytes"),
        ({"JWT_SECRET_KEY": "k" * 40, "JWT_ALGORITHM": "HS512"}, "too short for HS512"),
        ({"SECRET_KEY": "flask-secret"}, "too short for HS256"),
        ({}, "JWT_SECRET_KEY must be set"),
        ({"JWT_SECRET_KEY": JWT_KEY, "JWT_ALGORITHM": "none"}, "JWT_ALGORITHM: 'none'"),
        (
            {"JWT_SECRET_KEY": JWT_KEY, "JWT_DECODE_ALGORITHMS": ["HS256", "none"]},
            "JWT_DECODE_ALGORITHMS: 'none'",
        ),
        (
            {"JWT_SECRET_KEY": JWT_KEY, "JWT_DECODE_ALGORITHMS": ["HS256", "RS256"]},
            "mixes HMAC and public-key",
        ),
        ({"JWT_ALGORITHM": "RS256"}, "JWT_PRIVATE_KEY and JWT_PUBLIC_KEY must be set"),
        ({"JWT_SECRET_KEY": JWT_KEY, "JWT_DECODE_ALGORITHMS": "HS256"}, "must be a list"),
    ],
)
def test_a_signing_set_up_that_allows_forgery_is_refused(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_signing(config, strict=True)


@pytest.mark.parametrize(
    "config",
    [
        {"JWT_SECRET_KEY": "k" * 32},
        {"JWT_SECRET_KEY": b"k" * 64, "JWT_ALGORITHM": "HS512"},
        {"SECRET_KEY": "s" * 32},
        {"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY": "private", "JWT_PUBLIC_KEY": "public"},
    ],
)
def test_a_sound_signing_set_up_passes(config: dict[str, Any]) -> None:
    assert check_signing(config, strict=True) == []


def test_a_weak_key_refuses_to_start_outside_debug_and_testing(backend: Any) -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY="changeme", **backend.app_config())
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY is too short"):
        SessionManager(app, **backend.app_kwargs())


def test_a_weak_key_is_only_a_warning_in_testing(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY="changeme", **backend.app_config())
    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        SessionManager(app, **backend.app_kwargs())
    assert "JWT_SECRET_KEY is too short for HS256: 8 bytes" in caplog.text
    assert "changeme" not in caplog.text  # the key itself is never logged
    with app.app_context():
        current_manager().store.close()


def test_the_standalone_service_with_a_real_redis_needs_a_strong_key(redis_url: str) -> None:
    config = {"SESSIONSVC_REDIS_URL": redis_url, "JWT_SECRET_KEY": "short"}
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY is too short"):
        create_app(config)


# -- the algorithm is pinned ---------------------------------------------------------------


def forged(tokens: dict[str, Any], *, key: str, algorithm: str | None) -> str:
    """The access token's own claims, signed otherwise."""
    claims = pyjwt.decode(tokens["access_token"], JWT_KEY, algorithms=["HS256"])
    if algorithm is None:
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        return f"{header.decode()}.{body.decode()}."
    with warnings.catch_warnings():
        # PyJWT warns that this key is short for HS512: the forger does not care.
        warnings.simplefilter("ignore", pyjwt.warnings.InsecureKeyLengthWarning)
        return pyjwt.encode(claims, key, algorithm=algorithm)


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (JWT_KEY, None),  # alg: none
        (JWT_KEY, "HS512"),  # the right key, another algorithm
        (JWT_KEY + "x", "HS256"),  # another key
    ],
)
def test_tokens_signed_otherwise_are_refused(
    auth: Auth, client: Any, key: str, algorithm: str | None
) -> None:
    tokens = auth.login("alice")
    token = forged(tokens, key=key, algorithm=algorithm)
    response = client.get(SESSIONS, headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")
    # The genuine token still works: the session was not touched.
    assert client.get(SESSIONS, headers=auth.headers(tokens)).status_code == 200


# -- a revoked session never revives ------------------------------------------------------


def test_a_revoked_sessions_tokens_never_work_again(
    app: Flask, auth: Auth, client: Any, backend: Any
) -> None:
    victim = auth.login("alice")
    other = auth.login("alice")
    sid = victim["session_id"]
    assert client.delete(f"{SESSIONS}/{sid}", headers=auth.headers(other)).status_code == 204
    attempts = [
        client.get(SESSIONS, headers=auth.headers(victim)),
        client.patch(f"{SESSIONS}/{sid}", headers=auth.headers(victim), json={"name": "back"}),
        client.post("/api/v1/auth/refresh", headers=auth.headers(victim, "refresh_token")),
        client.post("/api/v1/auth/logout", headers=auth.headers(victim)),
        client.get(SESSIONS, headers=auth.headers(victim)),
    ]
    assert [(r.status_code, r.get_json()["code"]) for r in attempts] == [
        (401, "session_revoked")
    ] * len(attempts)
    # Renaming it from another session cannot bring it back either.
    response = client.patch(f"{SESSIONS}/{sid}", headers=auth.headers(other), json={"name": "x"})
    assert_problem(response, 404, "session_not_found")
    with app.app_context():
        store = current_manager().store
        assert backend.client().exists(store.session_key("alice", sid)) == 0
        assert [s.id for s in current_manager().list_for("alice")] == [other["session_id"]]
    assert auth.login("alice")["session_id"] not in {sid, other["session_id"]}


# -- no secrets in logs ----------------------------------------------------------------------


def test_no_secret_reaches_any_log(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    password = "correct-horse-battery-staple-7"
    redis_password = "redis-pa55word-in-a-url"
    with caplog.at_level(logging.DEBUG):
        app = make_app(SESSIONSVC_LOGIN_RATE_LIMIT="3/minute")
        auth, client = Auth(app), app.test_client()
        auth.create_user("alice", password)
        tokens = auth.login("alice", password)
        refreshed = client.post(
            "/api/v1/auth/refresh", headers=auth.headers(tokens, "refresh_token")
        ).get_json()
        client.post("/api/v1/auth/refresh", headers=auth.headers(tokens, "refresh_token"))
        for _ in range(4):  # wrong passwords, then the limit
            client.post(
                "/api/v1/auth/login", json={"username": "alice", "password": password[::-1]}
            )
        client.get(SESSIONS, headers={"Authorization": f"Bearer {tokens['access_token']}x"})
        client.post("/api/v1/auth/logout", headers=auth.headers(refreshed))
        for url in (
            f"redis://:{redis_password}@127.0.0.1:notaport/0",
            f"redis+cluster://user:{redis_password}@127.0.0.1:1,bad",
        ):
            with pytest.raises(ConfigError) as raised:
                create_app({"JWT_SECRET_KEY": JWT_KEY, "SESSIONSVC_REDIS_URL": url})
            logging.getLogger("tests").error("start-up failed: %s", raised.value)
    logged = caplog.text
    assert "session.revoked" in logged  # the log did capture the flow
    secrets_ = [password, password[::-1], JWT_KEY, redis_password]
    secrets_ += [tokens["access_token"], tokens["refresh_token"]]
    secrets_ += [refreshed["access_token"], refreshed["refresh_token"]]
    for secret in secrets_:
        assert secret not in logged
    # Nor any part of a token that would let it be pieced together.
    for token in (tokens["access_token"], refreshed["refresh_token"]):
        assert token.split(".")[2] not in logged


# -- session ids ---------------------------------------------------------------------------


def test_session_ids_are_16_bytes_from_the_os_csprng_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    for sid in list(ids)[:50]:
        assert len(base64.urlsafe_b64decode(sid + "==")) == 16
    # With the OS source fixed, the id is exactly those bytes: no time, user or
    # counter goes into it.
    # secrets -> random.SystemRandom -> os.urandom, bound in random as _urandom.
    monkeypatch.setattr(random, "_urandom", lambda n: bytes(range(n)))
    expected = base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()
    assert new_session_id() == expected
    assert new_session_id() == expected


def test_session_ids_do_not_follow_the_clock_or_the_user(app: Flask) -> None:
    with app.test_request_context():
        manager = current_manager()
        pairs = [manager.open("alice") for _ in range(3)] + [manager.open("bob")]
    ids = [pair.session_id for pair in pairs]
    assert len(set(ids)) == 4
    assert not any("alice" in sid or "bob" in sid for sid in ids)
    shared = next((i for i, chars in enumerate(zip(*ids, strict=False)) if len(set(chars)) > 1), 22)
    assert shared < 4  # opened within one second, yet no shared prefix


def test_access_tokens_expire(make_app: Any) -> None:
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=1))
    tokens = Auth(app).login("alice")
    claims = pyjwt.decode(tokens["access_token"], JWT_KEY, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 1
    assert claims["sid"] == tokens["session_id"]
