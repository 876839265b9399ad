"""The auth routes: login, refresh, logout, and how bad tokens are answered."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from tests.clients import CHROME, JWT_KEY, Auth, assert_problem

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
SESSIONS = "/api/v1/sessions"
EVENTS = "/api/v1/sessions/events"
PAIR_KEYS = {"access_token", "refresh_token", "token_type", "expires_in", "session_id"}


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def claims(app: Flask, token: str) -> dict[str, Any]:
    with app.app_context():
        decoded: dict[str, Any] = decode_token(token)
    return decoded


def session_ids(client: FlaskClient, tokens: dict[str, Any]) -> list[str]:
    response = client.get(SESSIONS, headers=Auth.headers(tokens))
    assert response.status_code == 200, response.get_data(as_text=True)
    return [s["id"] for s in response.get_json()["sessions"]]


def refresh(client: FlaskClient, tokens: dict[str, Any]) -> Any:
    return client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))


def assert_revoked(client: FlaskClient, tokens: dict[str, Any]) -> None:
    assert_problem(client.get(SESSIONS, headers=Auth.headers(tokens)), 401, "session_revoked")


# -- login ---------------------------------------------------------------------


def test_login_returns_exactly_the_token_pair(app: Flask, auth: Auth, client: FlaskClient):
    auth.create_user("alice", "s3cret")

    response = client.post(LOGIN, json={"username": "alice", "password": "s3cret"})

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == PAIR_KEYS
    assert body["token_type"] == "Bearer"
    assert type(body["expires_in"]) is int
    assert body["expires_in"] == 900
    for key in ("access_token", "refresh_token", "session_id"):
        assert isinstance(body[key], str) and body[key]
    assert body["access_token"] != body["refresh_token"]
    assert session_ids(client, body) == [body["session_id"]]


def test_login_tokens_carry_sub_and_sid(app: Flask, auth: Auth):
    tokens = auth.login("alice")

    access = claims(app, tokens["access_token"])
    refresh_claims = claims(app, tokens["refresh_token"])

    assert access["sub"] == "alice"
    assert access["sid"] == tokens["session_id"]
    assert access["type"] == "access"
    assert access["exp"] - access["iat"] == 900
    assert refresh_claims["sub"] == "alice"
    assert refresh_claims["sid"] == tokens["session_id"]
    assert refresh_claims["type"] == "refresh"
    assert refresh_claims["exp"] - refresh_claims["iat"] == 30 * 86400


def test_expires_in_follows_the_access_token_lifetime(make_app: Any):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=5))
    tokens = Auth(app).login("alice")
    assert tokens["expires_in"] == 300
    access = claims(app, tokens["access_token"])
    assert access["exp"] - access["iat"] == 300


def test_each_login_opens_a_new_session(auth: Auth, client: FlaskClient):
    first = auth.login("alice")
    second = auth.login("alice")
    assert first["session_id"] != second["session_id"]
    assert set(session_ids(client, second)) == {first["session_id"], second["session_id"]}


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("alice", ""), ("alice", "PW"), ("mallory", "pw"), ("", "pw")],
)
def test_bad_credentials_are_401_and_open_no_session(
    auth: Auth, client: FlaskClient, username: str, password: str
):
    auth.create_user("alice", "pw")

    response = client.post(LOGIN, json={"username": username, "password": password})

    assert_problem(response, 401, "invalid_credentials")
    tokens = auth.login("alice", "pw", create=False)
    assert session_ids(client, tokens) == [tokens["session_id"]]


def test_unknown_user_and_wrong_password_look_the_same(auth: Auth, client: FlaskClient):
    auth.create_user("alice", "pw")
    wrong = client.post(LOGIN, json={"username": "alice", "password": "nope"})
    unknown = client.post(LOGIN, json={"username": "nobody", "password": "nope"})
    assert assert_problem(wrong, 401, "invalid_credentials") == assert_problem(
        unknown, 401, "invalid_credentials"
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "alice"},
        {"password": "pw"},
        {"username": 1, "password": "pw"},
        {"username": "alice", "password": None},
        {"username": ["alice"], "password": "pw"},
        {"username": "alice", "password": {"p": "pw"}},
        {"username": "alice", "password": True},
        ["alice", "pw"],
        "alice",
        None,
    ],
)
def test_login_with_missing_or_mistyped_fields_is_400(auth: Auth, client: FlaskClient, body: Any):
    auth.create_user("alice", "pw")
    assert_problem(client.post(LOGIN, json=body), 400, "invalid_request")


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"not json", "application/json"),
        (b"", "application/json"),
        (b'{"username": "alice", "password": "pw"', "application/json"),
        (b'{"username": "alice", "password": "pw"}', "text/plain"),
        (b"username=alice&password=pw", "application/x-www-form-urlencoded"),
        (b'{"username": "alice", "password": "pw"}', None),
        (b'{"username": "alice", "username": "bob", "password": "pw"}', "application/json"),
        (b'{"username": "\xff", "password": "pw"}', "application/json"),
    ],
    ids=["not-json", "empty", "truncated", "text-plain", "form", "none", "dup-keys", "not-utf8"],
)
def test_login_body_that_is_not_a_json_object_is_400(
    auth: Auth, client: FlaskClient, data: bytes, content_type: str | None
):
    auth.create_user("alice", "pw")
    response = client.post(LOGIN, data=data, content_type=content_type)
    assert_problem(response, 400, "invalid_request")


def test_login_body_over_64_kib_is_413(auth: Auth, client: FlaskClient):
    auth.create_user("alice", "pw")
    data = b'{"username": "alice", "password": "pw", "pad": "' + b"a" * (64 * 1024) + b'"}'
    response = client.post(LOGIN, data=data, content_type="application/json")
    assert_problem(response, 413, "payload_too_large")


# -- refresh -----------------------------------------------------------------------


def test_refresh_returns_a_new_pair_for_the_same_session(
    app: Flask, auth: Auth, client: FlaskClient
):
    tokens = auth.login("alice")

    response = refresh(client, tokens)

    assert response.status_code == 200
    fresh = response.get_json()
    assert set(fresh) == PAIR_KEYS
    assert fresh["token_type"] == "Bearer"
    assert fresh["expires_in"] == 900
    assert fresh["session_id"] == tokens["session_id"]
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert fresh["access_token"] != tokens["access_token"]
    assert claims(app, fresh["access_token"])["sid"] == tokens["session_id"]
    assert claims(app, fresh["access_token"])["sub"] == "alice"
    assert session_ids(client, fresh) == [tokens["session_id"]]
    # The new refresh token rotates again.
    assert refresh(client, fresh).status_code == 200


def test_previous_access_token_keeps_working_after_refresh(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    assert refresh(client, tokens).status_code == 200
    assert session_ids(client, tokens) == [tokens["session_id"]]
    response = client.get(f"{SESSIONS}/{tokens['session_id']}", headers=auth.headers(tokens))
    assert response.status_code == 200
    assert response.get_json()["current"] is True


def test_reused_refresh_token_revokes_the_whole_session(auth: Auth, client: FlaskClient):
    watcher = auth.login("alice")
    tokens = auth.login("alice")
    fresh = refresh(client, tokens).get_json()

    assert_problem(refresh(client, tokens), 401, "refresh_token_reused")

    assert_revoked(client, tokens)
    assert_revoked(client, fresh)
    assert_problem(refresh(client, fresh), 401, "session_revoked")
    assert session_ids(client, watcher) == [watcher["session_id"]]
    events = client.get(EVENTS, headers=auth.headers(watcher)).get_json()["events"]
    revoked = [e for e in events if e["type"] == "session.revoked"]
    assert [(e["session_id"], e["detail"]["reason"]) for e in revoked] == [
        (tokens["session_id"], "refresh_reuse")
    ]


def test_refresh_after_refresh_reuse_of_an_older_token(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    second = refresh(client, tokens).get_json()
    third = refresh(client, second).get_json()
    assert_problem(refresh(client, tokens), 401, "refresh_token_reused")
    assert_revoked(client, third)


def test_refresh_does_not_move_expires_at_but_counts_as_activity(
    app: Flask, auth: Auth, client: FlaskClient, clock: Any
):
    start = int(time.time())
    tokens = auth.login("alice")
    clock.shift(86400)

    fresh = refresh(client, tokens).get_json()

    response = client.get(f"{SESSIONS}/{tokens['session_id']}", headers=auth.headers(fresh))
    session = response.get_json()
    assert session["created_at"] == iso(start)
    assert session["expires_at"] == iso(start + 30 * 86400)
    assert session["last_seen_at"] == iso(start + 86400)
    # The rotated refresh token does not outlive the session either.
    assert claims(app, fresh["refresh_token"])["exp"] == start + 30 * 86400


def test_access_token_on_refresh_is_wrong_token_type(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    response = client.post(REFRESH, headers=auth.headers(tokens, "access_token"))
    assert_problem(response, 401, "wrong_token_type")
    # Nothing was rotated: the refresh token still works.
    assert refresh(client, tokens).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", SESSIONS), ("GET", EVENTS), ("DELETE", SESSIONS), ("POST", LOGOUT)],
)
def test_refresh_token_where_an_access_token_is_needed_is_wrong_token_type(
    auth: Auth, client: FlaskClient, method: str, path: str
):
    tokens = auth.login("alice")
    other = auth.login("alice")
    response = client.open(path, method=method, headers=auth.headers(tokens, "refresh_token"))
    assert_problem(response, 401, "wrong_token_type")
    assert set(session_ids(client, tokens)) == {tokens["session_id"], other["session_id"]}


def test_refresh_without_a_token_is_authorization_required(client: FlaskClient):
    assert_problem(client.post(REFRESH), 401, "authorization_required")


# -- logout ------------------------------------------------------------------------


def test_logout_revokes_only_the_current_session(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    other = auth.login("alice")

    response = client.post(LOGOUT, headers=auth.headers(tokens))

    assert response.status_code == 204
    assert response.get_data() == b""
    assert_revoked(client, tokens)
    assert_problem(refresh(client, tokens), 401, "session_revoked")
    assert_problem(client.post(LOGOUT, headers=auth.headers(tokens)), 401, "session_revoked")
    assert session_ids(client, other) == [other["session_id"]]
    assert refresh(client, other).status_code == 200


def test_logout_on_one_app_instance_bites_on_another(make_app: Any):
    app_a, app_b = make_app(), make_app()
    auth = Auth(app_a)
    tokens = auth.login("alice")
    client_b = app_b.test_client()
    assert session_ids(client_b, tokens) == [tokens["session_id"]]

    assert app_a.test_client().post(LOGOUT, headers=auth.headers(tokens)).status_code == 204

    assert_revoked(client_b, tokens)


# -- token errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer a b", "Basic YWxpY2U6cHc=", "Token abc"],
    ids=["none", "empty", "bearer-alone", "bearer-space", "extra-parts", "basic", "other-scheme"],
)
def test_missing_or_malformed_header_is_authorization_required(
    client: FlaskClient, header: str | None
):
    headers = {} if header is None else {"Authorization": header}
    assert_problem(client.get(SESSIONS, headers=headers), 401, "authorization_required")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "x" * 3000])
def test_garbage_token_is_invalid_token(client: FlaskClient, token: str):
    response = client.get(SESSIONS, headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


def test_token_signed_with_another_key_is_invalid_token(
    app: Flask, auth: Auth, client: FlaskClient
):
    tokens = auth.login("alice")
    payload = claims(app, tokens["access_token"])
    forged = jwt.encode(payload, "another-key-that-is-also-long-enough-for-hs256", "HS256")
    assert_problem(client.get(SESSIONS, headers=auth.headers(forged)), 401, "invalid_token")


def test_alg_none_token_is_invalid_token(app: Flask, auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    payload = claims(app, tokens["access_token"])
    unsigned = jwt.encode(payload, key=None, algorithm="none")
    assert_problem(client.get(SESSIONS, headers=auth.headers(unsigned)), 401, "invalid_token")


def test_expired_access_token_is_token_expired(auth: Auth, client: FlaskClient, clock: Any):
    tokens = auth.login("alice")
    clock.shift(899)
    assert client.get(SESSIONS, headers=auth.headers(tokens)).status_code == 200
    clock.shift(2)

    assert_problem(client.get(SESSIONS, headers=auth.headers(tokens)), 401, "token_expired")
    # The session itself lives on: its refresh token gets a new pair.
    fresh = refresh(client, tokens)
    assert fresh.status_code == 200
    assert session_ids(client, fresh.get_json()) == [tokens["session_id"]]


def test_short_access_token_lifetime_expires(make_app: Any):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=1)
    auth, client = Auth(app), app.test_client()
    with time_machine.travel(int(time.time()) + 3600, tick=False) as clock:
        tokens = auth.login("alice")
        assert tokens["expires_in"] == 1
        clock.shift(2)
        assert_problem(client.get(SESSIONS, headers=auth.headers(tokens)), 401, "token_expired")


# Moves the clock past a session's TTL: only fakeredis follows time-machine.
@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_expired_refresh_token_is_token_expired(make_app: Any):
    app = make_app(JWT_REFRESH_TOKEN_EXPIRES=3600)
    auth, client = Auth(app), app.test_client()
    with time_machine.travel(int(time.time()), tick=False) as clock:
        tokens = auth.login("alice")
        clock.shift(3601)
        assert_problem(refresh(client, tokens), 401, "token_expired")


def test_token_without_sid_is_invalid_token(app: Flask, auth: Auth, client: FlaskClient):
    auth.login("alice")
    with app.app_context():
        access = create_access_token(identity="alice")
        refresh_token = create_refresh_token(identity="alice")
    assert_problem(client.get(SESSIONS, headers=auth.headers(access)), 401, "invalid_token")
    assert_problem(client.post(LOGOUT, headers=auth.headers(access)), 401, "invalid_token")
    assert_problem(client.post(REFRESH, headers=auth.headers(refresh_token)), 401, "invalid_token")


def test_token_for_a_session_that_does_not_exist_is_session_revoked(
    app: Flask, auth: Auth, client: FlaskClient
):
    alice = auth.login("alice")
    bob = auth.login("bob")
    with app.app_context():
        # alice's identity with bob's session id: the session is not alice's.
        crossed = create_access_token(
            identity="alice", additional_claims={"sid": bob["session_id"]}
        )
    assert_problem(client.get(SESSIONS, headers=auth.headers(crossed)), 401, "session_revoked")
    assert session_ids(client, alice) == [alice["session_id"]]
    assert session_ids(client, bob) == [bob["session_id"]]


def test_tokens_from_an_app_with_another_key_are_invalid(make_app: Any, auth: Auth):
    other = make_app(JWT_SECRET_KEY="x" * 40 + JWT_KEY)
    tokens = auth.login("alice", user_agent=CHROME)
    assert_problem(
        other.test_client().get(SESSIONS, headers=auth.headers(tokens)), 401, "invalid_token"
    )


@pytest.mark.parametrize("field", ["username", "password"])
def test_login_with_a_lone_surrogate_is_invalid_request(client: FlaskClient, field: str):
    body = {"username": "alice", "password": "pw"}
    raw = json.dumps(body).replace(f'"{body[field]}"', '"\\ud800"')
    response = client.post("/api/v1/auth/login", data=raw, content_type="application/json")
    assert_problem(response, 400, "invalid_request")


def test_standalone_tokens_are_lean(app: Flask, auth: Auth):
    tokens = auth.login("alice")
    with app.app_context():
        access = decode_token(tokens["access_token"])
    assert "csrf" not in access
    assert len(access["jti"]) == 22
    assert set(access) == {"fresh", "iat", "jti", "type", "sub", "nbf", "exp", "sid"}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR", "  bearer"])
def test_the_bearer_scheme_name_is_case_insensitive(
    auth: Auth, client: FlaskClient, scheme: str
) -> None:
    tokens = auth.login("alice")
    headers = {**Auth.headers(tokens), "Authorization": f"{scheme} {tokens['access_token']}"}
    response = client.get("/api/v1/sessions", headers=headers)
    assert response.status_code == 200
    assert [s["current"] for s in response.get_json()["sessions"]] == [True]
    refresh = {"Authorization": f"{scheme} {tokens['refresh_token']}"}
    assert client.post("/api/v1/auth/refresh", headers=refresh).status_code == 200


@pytest.mark.parametrize("value", ["bearerx {token}", "Basic {token}", "bear {token}"])
def test_other_schemes_are_still_refused(auth: Auth, client: FlaskClient, value: str) -> None:
    token = auth.login("alice")["access_token"]
    response = client.get("/api/v1/sessions", headers={"Authorization": value.format(token=token)})
    assert_problem(response, 401, "authorization_required")


def test_token_answers_are_never_cached(auth: Auth, client: FlaskClient) -> None:
    tokens = auth.login("alice")
    headers = Auth.headers(tokens)
    sid = tokens["session_id"]
    answers = {
        "login": client.post("/api/v1/auth/login", json={"username": "alice", "password": "pw"}),
        "refresh": client.post(
            "/api/v1/auth/refresh", headers=Auth.headers(tokens, "refresh_token")
        ),
        "list": client.get("/api/v1/sessions", headers=headers),
        "one": client.get(f"/api/v1/sessions/{sid}", headers=headers),
        "events": client.get("/api/v1/sessions/events", headers=headers),
        "a problem": client.get("/api/v1/sessions/events?limit=0", headers=headers),
        "bad login": client.post("/api/v1/auth/login", json={"username": "alice", "password": "x"}),
        "logout": client.post("/api/v1/auth/logout", headers=headers),
    }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "login": 200,
        "refresh": 200,
        "list": 200,
        "one": 200,
        "events": 200,
        "a problem": 400,
        "bad login": 401,
        "logout": 204,
    }
    for name, answer in answers.items():
        assert answer.headers["Cache-Control"] == "no-store", name
        assert answer.headers["Pragma"] == "no-cache", name
    # The service's other answers keep their own caching.
    assert "Cache-Control" not in client.get("/healthz").headers
