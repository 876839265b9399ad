"""Mounted in a host app that already uses flask-jwt-extended: the host's
callbacks keep answering the host's routes, and the admin routes stay off
until the host turns them on and says who is an admin."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import time_machine
from flask import Flask, jsonify
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jwt,
    jwt_required,
)
from flask_jwt_extended.exceptions import NoAuthorizationError
from werkzeug.test import TestResponse

from sessionsvc import ConfigError, SessionManager, admin, create_app
from sessionsvc.errors import StoreUnavailable
from tests.clients import JWT_KEY, assert_jwt_answer, assert_problem
from tests.servers import free_port

SESSIONS = "/api/v1/sessions"
ADMIN_LIST = "/api/v1/admin/users/bob/sessions"


def host_callbacks(jwt: JWTManager) -> None:
    """The host's own answers, each with a status flask-jwt-extended would not give."""

    @jwt.unauthorized_loader
    def missing(reason: str) -> Any:
        return jsonify(error="host-unauthorized", reason=reason), 401

    @jwt.invalid_token_loader
    def invalid(reason: str) -> Any:
        return jsonify(error="host-invalid", reason=reason), 400

    @jwt.expired_token_loader
    def expired(header: dict[str, Any], payload: dict[str, Any]) -> Any:
        return jsonify(error="host-expired", sub=payload["sub"]), 419

    @jwt.revoked_token_loader
    def revoked(header: dict[str, Any], payload: dict[str, Any]) -> Any:
        return jsonify(error="host-revoked", sub=payload["sub"]), 403


def plain_host(*, callbacks: bool, **config: Any) -> tuple[Flask, JWTManager]:
    """A host app as it was before it mounted sessionsvc: its own routes and callbacks."""
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY, **config)
    jwt = JWTManager(app)
    if callbacks:
        host_callbacks(jwt)

    @app.get("/things")
    @jwt_required()
    def things() -> Any:
        return jsonify(["a", "b"])

    @app.post("/refresh")
    @jwt_required(refresh=True)
    def refresh() -> Any:
        return jsonify(claims=sorted(get_jwt()))

    return app, jwt


def mounted(*, callbacks: bool = True, **options: Any) -> tuple[Flask, SessionManager]:
    """The same host app with sessionsvc mounted after its callbacks."""
    app, _ = plain_host(callbacks=callbacks, SESSIONSVC_KEY_PREFIX=f"mount-{secrets.token_hex(4)}")
    sessions = SessionManager(
        app, redis_client=fakeredis.FakeRedis(decode_responses=True), **options
    )
    return app, sessions


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def same(first: TestResponse, second: TestResponse) -> None:
    """Two responses a client cannot tell apart."""
    assert (first.status_code, first.mimetype, first.get_data()) == (
        second.status_code,
        second.mimetype,
        second.get_data(),
    )


def tokens_of(app: Flask, **claims: Any) -> dict[str, str]:
    """An expired token, one signed with another key, and two without a session."""
    with app.app_context():
        expired = create_access_token("alice", expires_delta=timedelta(seconds=-5))
        bare = create_access_token("alice", additional_claims=claims)
        bare_refresh = create_refresh_token("alice")
    # A character inside the signature changes it (the last one's low bits are padding).
    head, _, signature = bare.rpartition(".")
    forged = f"{head}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}{signature[11:]}"
    return {"expired": expired, "bare": bare, "bare_refresh": bare_refresh, "forged": forged}


@pytest.mark.parametrize("callbacks", [True, False], ids=["host-callbacks", "defaults"])
def test_token_errors_on_host_routes_are_answered_as_before_mounting(callbacks: bool) -> None:
    before, _ = plain_host(callbacks=callbacks)
    after, sessions = mounted(callbacks=callbacks)
    tokens = tokens_of(before)
    with after.test_request_context():
        pair = sessions.open("alice")
    requests: list[dict[str, str]] = [
        {},  # no header
        bearer("not-a-token"),  # malformed: 422 by default
        bearer(tokens["expired"]),
        bearer(tokens["forged"]),
        bearer(pair.access_token, scheme="bearer"),  # flask-jwt-extended wants "Bearer"
        bearer(pair.refresh_token),  # a refresh token where an access token is needed
        {"Authorization": "Bearer"},  # a header without a token
        {"Authorization": "Bearer one two"},
    ]
    for headers in requests:
        same(
            after.test_client().get("/things", headers=headers),
            before.test_client().get("/things", headers=headers),
        )
    default = before.test_client().get("/things", headers=bearer("not-a-token"))
    assert default.status_code == (400 if callbacks else 422)


def test_sessionsvc_routes_answer_problem_documents_whatever_the_host_registered() -> None:
    app, sessions = mounted(callbacks=True)
    tokens = tokens_of(app)
    with app.test_request_context():
        pair = sessions.open("alice")
    client = app.test_client()
    assert_problem(client.get(SESSIONS), 401, "authorization_required")
    assert_problem(client.get(SESSIONS, headers=bearer("x.y")), 401, "invalid_token")
    assert_problem(client.get(SESSIONS, headers=bearer(tokens["expired"])), 401, "token_expired")
    assert_problem(client.get(SESSIONS, headers=bearer(tokens["forged"])), 401, "invalid_token")
    assert_problem(client.get(SESSIONS, headers=bearer(tokens["bare"])), 401, "invalid_token")
    response = client.get(SESSIONS, headers=bearer(pair.refresh_token))
    assert_problem(response, 401, "wrong_token_type")
    # The scheme in any case, on sessionsvc's own routes only.
    assert client.get(SESSIONS, headers=bearer(pair.access_token, "bearer")).status_code == 200
    with app.app_context():
        sessions.revoke("alice", pair.session_id)
    assert_problem(client.get(SESSIONS, headers=bearer(pair.access_token)), 401, "session_revoked")


def test_a_token_without_a_live_session_gets_the_hosts_revoked_answer() -> None:
    app, sessions = mounted(callbacks=True)
    tokens = tokens_of(app)
    with app.test_request_context():
        pair = sessions.open("alice")
    client = app.test_client()
    assert client.get("/things", headers=bearer(pair.access_token)).get_json() == ["a", "b"]
    with app.app_context():
        sessions.revoke("alice", pair.session_id)
    for token in (pair.access_token, tokens["bare"]):
        response = client.get("/things", headers=bearer(token))
        assert (response.status_code, response.get_json()) == (
            403,
            {"error": "host-revoked", "sub": "alice"},
        )
    response = client.post("/refresh", headers=bearer(tokens["bare_refresh"]))
    assert response.status_code == 403


def test_a_reused_refresh_token_on_a_host_route_revokes_and_gets_the_hosts_answer() -> None:
    app, sessions = mounted(callbacks=False)
    with app.test_request_context():
        pair = sessions.open("alice")
    client = app.test_client()
    with app.test_request_context(headers=bearer(pair.refresh_token)):
        sessions.rotate(_verified_refresh(app, pair.refresh_token))
    # The old refresh token again: reuse, which revokes the whole session.
    response = client.post("/refresh", headers=bearer(pair.refresh_token))
    assert_jwt_answer(response, 401, "Token has been revoked")
    with app.app_context():
        assert sessions.list_for("alice") == []


def _verified_refresh(app: Flask, token: str) -> dict[str, Any]:
    from flask_jwt_extended import decode_token

    with app.app_context():
        return decode_token(token)


def test_callbacks_registered_after_init_app_answer_the_hosts_routes_only() -> None:
    app, _ = mounted(callbacks=False)
    jwt = app.extensions["flask-jwt-extended"]
    host_callbacks(jwt)  # after SessionManager(app)
    tokens = tokens_of(app)
    client = app.test_client()
    response = client.get("/things", headers=bearer(tokens["expired"]))
    assert (response.status_code, response.get_json()) == (
        419,
        {"error": "host-expired", "sub": "alice"},
    )
    assert client.get("/things", headers=bearer("x")).get_json()["error"] == "host-invalid"
    assert_problem(client.get(SESSIONS, headers=bearer(tokens["expired"])), 401, "token_expired")
    assert_problem(client.get(SESSIONS), 401, "authorization_required")


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_hosts_own_error_handler_for_token_errors_keeps_its_routes(when: str) -> None:
    app, _ = plain_host(callbacks=False)

    def host_missing(error: NoAuthorizationError) -> Any:
        return jsonify(host="no token"), 401

    if when == "before":
        app.register_error_handler(NoAuthorizationError, host_missing)
    SessionManager(app, redis_client=fakeredis.FakeRedis(decode_responses=True))
    if when == "after":
        app.register_error_handler(NoAuthorizationError, host_missing)
    client = app.test_client()
    for _ in range(2):
        assert_problem(client.get(SESSIONS), 401, "authorization_required")
        assert client.get("/things").get_json() == {"host": "no token"}


def test_store_unavailable_on_a_host_route_is_a_503_the_host_can_answer_its_way() -> None:
    app, _ = plain_host(callbacks=True, SESSIONSVC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    SessionManager(app)
    with app.app_context():
        token = create_access_token("alice", additional_claims={"sid": "A" * 22})
    client = app.test_client()
    response = client.get("/things", headers=bearer(token))
    assert_problem(response, 503, "store_unavailable")
    assert response.headers["Retry-After"] == "1"

    def host_unavailable(error: StoreUnavailable) -> Any:
        return jsonify(error="host-down"), 503

    # Another app like it: Flask takes no new handler once an app has served.
    answered, _ = plain_host(
        callbacks=True, SESSIONSVC_REDIS_URL=app.config["SESSIONSVC_REDIS_URL"]
    )
    SessionManager(answered)
    answered.register_error_handler(StoreUnavailable, host_unavailable)  # after: still wins
    response = answered.test_client().get("/things", headers=bearer(token))
    assert (response.status_code, response.get_json()) == (503, {"error": "host-down"})
    # ... on the host's routes only: sessionsvc's keep their problem document.
    response = answered.test_client().get(SESSIONS, headers=bearer(token))
    assert_problem(response, 503, "store_unavailable")


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_hosts_status_code_handlers_answer_its_routes_only(when: str) -> None:
    def host_not_found(error: Exception) -> Any:
        return jsonify(error="host-404"), 404

    app, _ = plain_host(callbacks=True)
    if when == "before":
        app.register_error_handler(404, host_not_found)
    SessionManager(app, redis_client=fakeredis.FakeRedis(decode_responses=True))
    if when == "after":
        app.register_error_handler(404, host_not_found)
    client = app.test_client()
    assert client.get("/nowhere").get_json() == {"error": "host-404"}
    assert_problem(client.get(f"{SESSIONS}/a/b/c"), 404, "not_found")
    assert client.get("/nowhere/else").get_json() == {"error": "host-404"}


# -- the admin routes -----------------------------------------------------------


def test_mounted_the_admin_routes_are_off_and_the_path_is_the_hosts() -> None:
    app, sessions = mounted(callbacks=True)
    with app.test_request_context():
        admin = sessions.open("root", claims={"roles": ["admin"]})
        sessions.open("bob")
    client = app.test_client()
    for method in ("get", "delete"):
        response = getattr(client, method)(ADMIN_LIST, headers=bearer(admin.access_token))
        # The host's own 404 (werkzeug's page here): the path is not sessionsvc's.
        assert (response.status_code, response.mimetype) == (404, "text/html")
    with app.app_context():
        assert len(sessions.list_for("bob")) == 1


@pytest.mark.parametrize("turned_on", ["argument", "config"])
def test_turned_on_the_hosts_admin_loader_decides(turned_on: str) -> None:
    if turned_on == "argument":
        app, sessions = mounted(callbacks=True, admin_routes=True)
    else:
        app, _ = plain_host(callbacks=True, SESSIONSVC_ADMIN_ROUTES=True)
        sessions = SessionManager(app, redis_client=fakeredis.FakeRedis(decode_responses=True))
    calls: list[tuple[str, dict[str, Any]]] = []

    @sessions.admin_loader  # after init_app, as a host app's module would
    def is_admin(user_id: str, claims: dict[str, Any]) -> bool:
        calls.append((user_id, dict(claims)))
        return user_id == "root"

    with app.test_request_context():
        root = sessions.open("root")
        claimed = sessions.open("mallory", claims={"roles": ["admin"]})
        bob = sessions.open("bob")
    client = app.test_client()
    # A roles claim grants nothing: the loader said no.
    assert_problem(client.get(ADMIN_LIST, headers=bearer(claimed.access_token)), 403, "forbidden")
    listed = client.get(ADMIN_LIST, headers=bearer(root.access_token)).get_json()["sessions"]
    assert [s["id"] for s in listed] == [bob.session_id]
    assert [user for user, _ in calls] == ["mallory", "root"]
    assert calls[0][1]["sid"] == claimed.session_id
    assert calls[0][1]["roles"] == ["admin"]
    assert calls[1][1]["sub"] == "root" and calls[1][1]["type"] == "access"
    # Problem documents under the admin prefix again.
    assert_problem(client.get("/api/v1/admin/nothing"), 404, "not_found")


def test_the_argument_wins_over_the_config_key() -> None:
    app, _ = plain_host(callbacks=False, SESSIONSVC_ADMIN_ROUTES=True)
    SessionManager(app, redis_client=fakeredis.FakeRedis(decode_responses=True), admin_routes=False)
    assert app.test_client().get(ADMIN_LIST).status_code == 404
    assert app.test_client().get(ADMIN_LIST).mimetype == "text/html"


@pytest.mark.parametrize("answer", [1, "yes", None, [True]])
def test_only_true_from_the_loader_admits(answer: Any) -> None:
    app, sessions = mounted(callbacks=False, admin_routes=True)
    sessions.admin_loader(lambda user_id, claims: answer)
    with app.test_request_context():
        pair = sessions.open("root")
    response = app.test_client().get(ADMIN_LIST, headers=bearer(pair.access_token))
    assert_problem(response, 403, "forbidden")


def test_turned_on_without_a_loader_no_one_is_an_admin_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "_told_no_loader", False)  # once per process: this one
    app, sessions = mounted(callbacks=False, admin_routes=True)
    with app.test_request_context():
        pair = sessions.open("root", claims={"roles": ["admin"]})
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="sessionsvc"):
        for _ in range(2):
            response = client.delete(ADMIN_LIST, headers=bearer(pair.access_token))
            assert_problem(response, 403, "forbidden")
    told = [r for r in caplog.records if "admin_loader" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.ERROR


def test_the_standalone_service_can_turn_its_admin_routes_off() -> None:
    app = create_app(
        {
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_ADMIN_ROUTES": False,
            "SESSIONSVC_KEY_PREFIX": f"mount-{secrets.token_hex(4)}",
        },
        redis_client=fakeredis.FakeRedis(decode_responses=True),
    )
    assert_problem(app.test_client().get(ADMIN_LIST), 404, "not_found")
    assert_problem(app.test_client().get("/api/v1/admin/users/bob"), 404, "not_found")


def test_a_token_of_a_session_that_outlived_it_gets_the_hosts_expired_answer() -> None:
    app, sessions = mounted(callbacks=True)
    with app.test_request_context():
        pair = sessions.open("alice")
    with time_machine.travel(time.time() + 16 * 60, tick=False):
        response = app.test_client().get("/things", headers=bearer(pair.access_token))
    assert (response.status_code, response.get_json()) == (
        419,
        {"error": "host-expired", "sub": "alice"},
    )


def test_an_app_factory_sharing_one_jwt_manager_and_one_session_manager() -> None:
    # The usual factory: extensions made once, init_app on every app.
    jwt, sessions = JWTManager(), SessionManager()

    def create() -> Flask:
        app = Flask("factory")
        app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
        jwt.init_app(app)
        sessions.init_app(app)

        @app.post("/login/<user>")
        def login(user: str) -> Any:
            return jsonify(sessions.open(user).to_json())

        return app

    first, second = create(), create()  # the second was refused: "already has a loader"
    for app in (first, second):
        client = app.test_client()
        mine = client.post("/login/alice").get_json()
        other = client.post("/login/alice").get_json()
        headers = {"Authorization": f"Bearer {mine['access_token']}"}
        assert client.get("/api/v1/sessions", headers=headers).status_code == 200
        gone = f"/api/v1/sessions/{other['session_id']}"
        assert client.delete(gone, headers=headers).status_code == 204
        other_headers = {"Authorization": f"Bearer {other['access_token']}"}
        assert_problem(
            client.get("/api/v1/sessions", headers=other_headers), 401, "session_revoked"
        )


def test_an_app_of_the_same_jwt_manager_without_sessionsvc_revokes_nothing() -> None:
    jwt = JWTManager()
    with_sessions, plain = Flask("with"), Flask("plain")
    for app in (with_sessions, plain):
        app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
        jwt.init_app(app)
    SessionManager(with_sessions)

    @plain.get("/me")
    @jwt_required()
    def me() -> Any:
        return jsonify(ok=True)

    with plain.app_context():
        token = create_access_token("alice")  # no session: that app never asked for one
    response = plain.test_client().get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.get_json() == {"ok": True}


def test_a_blocklist_loader_of_the_hosts_is_still_refused_naming_the_fix() -> None:
    jwt = JWTManager()
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
    jwt.init_app(app)
    jwt.token_in_blocklist_loader(lambda header, payload: False)
    with pytest.raises(ConfigError, match="token_in_blocklist_loader"):
        SessionManager(app)


def test_no_problem_paths_means_none() -> None:
    # problem_paths=() is the host's choice: every HTTP error stays its own.
    app, _ = plain_host(callbacks=True)
    SessionManager(app, redis_client=fakeredis.FakeRedis(decode_responses=True), problem_paths=())
    response = app.test_client().get(f"{SESSIONS}/a/b/c")
    assert (response.status_code, response.mimetype) == (404, "text/html")
