"""SessionManager mounted in a host app: init_app, the Python API, composition."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, create_access_token, jwt_required
from werkzeug.exceptions import HTTPException

from sessionsvc import ConfigError, SessionManager, current_manager
from sessionsvc import tokens as token_wiring
from sessionsvc.state import EXTENSION_KEY
from tests.backends import Backend, delete_prefix, host_app, record_commands
from tests.clients import CHROME, FIREFOX_LINUX, JWT_KEY, Auth, assert_jwt_answer, assert_problem


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def test_init_app_stores_state_not_app(backend: Backend) -> None:
    app, sessions = host_app(backend)
    assert EXTENSION_KEY in app.extensions
    assert "flask-jwt-extended" in app.extensions
    assert not hasattr(sessions, "app")
    with app.app_context():
        assert current_manager() is sessions
        assert sessions.settings.key_prefix == backend.prefix


def test_one_manager_serves_two_apps(backend: Backend) -> None:
    sessions = SessionManager(**backend.app_kwargs())
    apps = []
    for prefix in (backend.prefix + "-a", backend.prefix + "-b"):
        app = Flask("host")
        app.config.update(JWT_SECRET_KEY=JWT_KEY, **backend.app_config())
        app.config["SESSIONSVC_KEY_PREFIX"] = prefix
        sessions.init_app(app)
        apps.append(app)
    with apps[0].test_request_context():
        sessions.open("alice")
        assert len(sessions.list_for("alice")) == 1
    with apps[1].test_request_context():
        assert sessions.list_for("alice") == []
    if backend.url is not None:
        cleaner = backend.client()
        delete_prefix(cleaner, backend.prefix + "-a")
        delete_prefix(cleaner, backend.prefix + "-b")


def test_open_from_the_host_login_view_and_revoke_bites(backend: Backend) -> None:
    app, sessions = host_app(backend)
    client = app.test_client()
    response = client.post(
        "/login/alice", headers={"User-Agent": CHROME}, environ_base={"REMOTE_ADDR": "198.51.100.4"}
    )
    tokens = response.get_json()
    assert client.get("/things", headers=bearer(tokens)).get_json() == ["a", "b"]
    listed = client.get("/api/v1/sessions", headers=bearer(tokens)).get_json()["sessions"]
    assert [s["id"] for s in listed] == [tokens["session_id"]]
    assert listed[0]["created_ip"] == "198.51.100.4"
    assert listed[0]["device"]["label"] == "Chrome 120 on Windows 10"

    with app.app_context():
        assert sessions.revoke("alice", tokens["session_id"]) is True
        assert sessions.revoke("alice", tokens["session_id"]) is False
    assert_jwt_answer(client.get("/things", headers=bearer(tokens)), 401, "Token has been revoked")
    assert_problem(client.get("/api/v1/sessions", headers=bearer(tokens)), 401, "session_revoked")


def test_extra_claims_reach_both_tokens_and_survive_refresh(backend: Backend) -> None:
    from flask_jwt_extended import decode_token

    app, sessions = host_app(backend)
    tokens = app.test_client().post("/login/alice").get_json()
    with app.test_request_context():
        assert decode_token(tokens["access_token"])["roles"] == ["reader"]
        refresh = decode_token(tokens["refresh_token"])
        assert refresh["roles"] == ["reader"]
        rotated = sessions.rotate(refresh)
        assert rotated.session_id == tokens["session_id"]
        assert decode_token(rotated.access_token)["roles"] == ["reader"]


def test_open_outside_a_request_uses_what_it_is_given(backend: Backend) -> None:
    app, sessions = host_app(backend)
    with app.app_context():
        pair = sessions.open("bob", ip="203.0.113.9", user_agent=None)
        (session,) = sessions.list_for("bob")
    assert session.id == pair.session_id
    assert session.ip == "203.0.113.9"
    assert session.user_agent is None
    assert session.device.type == "other"


@pytest.mark.parametrize("user_id", ["", None, 42])
def test_open_rejects_a_bad_user_id(backend: Backend, user_id: Any) -> None:
    app, sessions = host_app(backend)
    with app.app_context(), pytest.raises(ValueError, match="user_id"):
        sessions.open(user_id)


def test_revoke_all_after_password_change(backend: Backend) -> None:
    app, sessions = host_app(backend)
    client = app.test_client()
    first = client.post("/login/alice").get_json()
    second = client.post("/login/alice").get_json()
    other = client.post("/login/bob").get_json()
    with app.app_context():
        assert sessions.revoke_all("alice") == 2
        assert sessions.list_for("alice") == []
        events = sessions.events_for("alice", limit=10)
    reasons = [e.detail.get("reason") for e in events if e.type == "session.revoked"]
    assert reasons == ["admin", "admin"]
    for tokens in (first, second):
        response = client.get("/things", headers=bearer(tokens))
        assert_jwt_answer(response, 401, "Token has been revoked")
    assert client.get("/things", headers=bearer(other)).status_code == 200


def test_host_keeps_its_own_error_pages(backend: Backend) -> None:
    app, _ = host_app(backend)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert missing.mimetype == "text/html"
    assert client.get("/boom").status_code == 500
    assert client.get("/boom").mimetype == "text/html"
    # ...while its own paths answer problem documents.
    assert_problem(client.get("/api/v1/sessions/x/y"), 404, "not_found")
    assert_problem(client.put("/api/v1/sessions"), 405, "method_not_allowed")


def test_host_jwt_manager_is_reused_and_loaders_compose(backend: Backend) -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY, **backend.app_config())
    jwt = JWTManager(app)
    sessions = SessionManager(app, **backend.app_kwargs())
    assert app.extensions["flask-jwt-extended"] is jwt
    denied: set[str] = set()

    @jwt.token_in_blocklist_loader
    def host_blocklist(header: dict[str, Any], payload: dict[str, Any]) -> bool:
        return payload["jti"] in denied or sessions.is_revoked(header, payload)

    @app.get("/things")
    @jwt_required()
    def things() -> Any:
        return jsonify([])

    with app.test_request_context():
        pair = sessions.open("alice")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {pair.access_token}"}
    assert client.get("/things", headers=headers).status_code == 200
    from flask_jwt_extended import decode_token

    with app.app_context():
        denied.add(decode_token(pair.access_token)["jti"])
    assert_jwt_answer(client.get("/things", headers=headers), 401, "Token has been revoked")
    assert_problem(client.get("/api/v1/sessions", headers=headers), 401, "session_revoked")


def test_missing_signing_key_fails_at_init(backend: Backend) -> None:
    app = Flask("host")
    app.config.update(**backend.app_config())
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        SessionManager(app, **backend.app_kwargs())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSIONSVC_TOUCH_INTERVAL", -1),
        ("SESSIONSVC_MAX_SESSIONS_PER_USER", 0),
        ("SESSIONSVC_KEY_PREFIX", "a{b}"),
        ("JWT_REFRESH_TOKEN_EXPIRES", False),
        ("SESSIONSVC_REDIS_URL", "http://localhost"),
        ("SESSIONSVC_GEOIP_DB", "/nonexistent/city.mmdb"),
        ("SESSIONSVC_IDLE_TIMEOUT", 60),  # not longer than the touch interval
        ("SESSIONSVC_REVOKE_ON_ANOMALY", "yes"),
        ("SESSIONSVC_ADMIN_ROUTES", "yes"),
    ],
)
def test_bad_setting_fails_at_init_naming_the_key(key: str, value: Any) -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=JWT_KEY, **{key: value})
    with pytest.raises(ConfigError, match=key):
        SessionManager(app)


def test_lookup_without_init_is_a_clear_error() -> None:
    app = Flask("host")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        SessionManager().list_for("alice")


def test_trusted_proxies(backend: Backend) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.50"}
    for hops, expected in ((0, "10.0.0.1"), (1, "203.0.113.50")):
        app, _ = host_app(backend, SESSIONSVC_TRUSTED_PROXIES=hops)
        client = app.test_client()
        tokens = client.post(
            f"/login/proxy{hops}", headers=forwarded, environ_base={"REMOTE_ADDR": "10.0.0.1"}
        ).get_json()
        listed = client.get("/api/v1/sessions", headers=bearer(tokens)).get_json()["sessions"]
        assert listed[0]["created_ip"] == expected


def test_embedded_store_warns_and_works(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=JWT_KEY)
    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        sessions = SessionManager(app)
    assert "embedded development store" in caplog.text
    with app.test_request_context():
        pair = sessions.open("alice")
        assert [s.id for s in sessions.list_for("alice")] == [pair.session_id]


def test_jwt_manager_created_after_init_fails_closed(backend: Backend) -> None:
    app, sessions = host_app(backend)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with app.test_request_context():
        tokens = sessions.open("alice").to_json()
        sessions.revoke("alice", tokens["session_id"])
    JWTManager(app)  # the mistake: a second manager without our callbacks
    client = app.test_client()
    # Without the guard both would answer 200 to a revoked session.
    assert client.get("/things", headers=bearer(tokens)).status_code == 500
    assert_problem(client.get("/api/v1/sessions", headers=bearer(tokens)), 500, "internal_error")


def test_a_blocklist_loader_that_skips_ours_fails_closed_on_our_routes(backend: Backend) -> None:
    app, sessions = host_app(backend)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    tokens = app.test_client().post("/login/alice").get_json()
    with app.app_context():
        sessions.revoke("alice", tokens["session_id"])

    @app.extensions["flask-jwt-extended"].token_in_blocklist_loader
    def forgetful(header: dict[str, Any], payload: dict[str, Any]) -> bool:
        return False

    response = app.test_client().get("/api/v1/sessions", headers=bearer(tokens))
    assert_problem(response, 500, "internal_error")


def test_an_existing_blocklist_loader_is_refused_at_init(backend: Backend) -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=JWT_KEY, **backend.app_config())
    jwt = JWTManager(app)
    jwt.token_in_blocklist_loader(lambda header, payload: False)
    with pytest.raises(ConfigError, match="is_revoked"):
        SessionManager(app, **backend.app_kwargs())


def test_host_error_handlers_registered_before_keep_serving_host_paths(backend: Backend) -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=JWT_KEY, PROPAGATE_EXCEPTIONS=False, **backend.app_config())

    @app.errorhandler(HTTPException)
    def host_http(error: HTTPException) -> Any:
        return jsonify(host=error.code), error.code

    @app.errorhandler(Exception)
    def host_crash(error: Exception) -> Any:
        return jsonify(host="crash"), 500

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("host bug")

    SessionManager(app, **backend.app_kwargs())
    client = app.test_client()
    assert client.get("/host/missing").get_json() == {"host": 404}
    assert client.get("/boom").get_json() == {"host": "crash"}
    assert_problem(client.put("/api/v1/sessions"), 405, "method_not_allowed")


def commands_of(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command the app's store client sends from now on."""
    with app.app_context():
        client = current_manager().store.client
    return record_commands(client, monkeypatch)


def test_the_revocation_check_of_a_request_is_one_plain_read(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, client = Auth(app), app.test_client()
    tokens = auth.login("alice", user_agent=CHROME)
    path = f"/api/v1/sessions/{tokens['session_id']}"
    assert client.get(path, headers=auth.headers(tokens)).status_code == 200
    with app.app_context():
        current_manager().store.load_scripts()  # as a running server has them
    sent = commands_of(app, monkeypatch)
    for user_agent, expected in [
        # The signed-in device asking for its own session: the check reads
        # the whole session once, and the view answers from that read (the
        # process knows the interned user agent it refers to).
        (CHROME, ["HGETALL"]),
        # Another browser: judged and recorded once in a second round trip,
        # then the view reads the session as the script left it...
        (FIREFOX_LINUX, ["HGETALL", "EVALSHA", "HGETALL"]),
        # ...and after that known: one read again.
        (FIREFOX_LINUX, ["HGETALL"]),
        (CHROME, ["HGETALL"]),
    ]:
        sent.clear()
        headers = {**auth.headers(tokens), "User-Agent": user_agent}
        response = client.get(path, headers=headers)
        assert response.status_code == 200
        assert response.get_json()["id"] == tokens["session_id"]
        assert response.get_json()["current"] is True
        assert response.get_json()["user_agent"] == CHROME
        assert sent == expected, user_agent
    # What the check read belongs to its request only: an app context kept
    # open across requests does not carry it to the next.
    second = auth.login("alice", user_agent=CHROME)
    with app.app_context():
        own = f"/api/v1/sessions/{second['session_id']}"
        assert client.get(own, headers=auth.headers(second)).status_code == 200
        assert client.delete(own, headers=auth.headers(tokens)).status_code == 204
        assert client.get(own, headers=auth.headers(tokens)).status_code == 404
    # Another session of the user's: the check's plain read, then the view's.
    other = auth.login("alice", user_agent=CHROME)
    sent.clear()
    response = client.get(f"/api/v1/sessions/{other['session_id']}", headers=auth.headers(tokens))
    assert response.get_json()["id"] == other["session_id"]
    assert response.get_json()["current"] is False
    assert response.get_json()["user_agent"] == CHROME
    assert sent == ["HMGET", "HGETALL"]
    # Renaming: the check, then one script that renames and reads back.
    sent.clear()
    renamed = client.patch(
        f"/api/v1/sessions/{other['session_id']}",
        json={"name": "Phone"},
        headers=auth.headers(tokens),
    )
    assert renamed.get_json()["name"] == "Phone"
    assert sent == ["HMGET", "EVALSHA"]
    # The events, the list, a revocation: the check, then one script.
    for method, route in [
        ("GET", "/api/v1/sessions/events"),
        ("GET", "/api/v1/sessions"),
        ("DELETE", f"/api/v1/sessions/{other['session_id']}"),
    ]:
        sent.clear()
        assert client.open(route, method=method, headers=auth.headers(tokens)).status_code < 300
        assert sent == ["HMGET", "EVALSHA"], route


def test_a_host_app_supplies_the_claims_of_a_refresh(backend: Backend) -> None:
    from flask_jwt_extended import decode_token

    app, sessions = host_app(backend)
    seen: list[tuple[str, dict[str, Any]]] = []

    @sessions.refresh_claims_loader
    def roles_now(user_id: str, claims: dict[str, Any]) -> dict[str, Any]:
        seen.append((user_id, dict(claims)))
        return {**claims, "roles": ["viewer"]}

    pair = app.test_client().post("/login/alice", headers={"User-Agent": CHROME}).get_json()
    with app.test_request_context(headers={"User-Agent": CHROME}):
        new = sessions.rotate(decode_token(pair["refresh_token"]))
        assert decode_token(new.access_token)["roles"] == ["viewer"]
        assert decode_token(new.refresh_token)["roles"] == ["viewer"]
    assert seen == [("alice", {"roles": ["reader"]})]


def test_misspelt_keys_are_named_with_the_closest_known_one(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SESSIONSVC_REDIS_URI", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SESSIONSVC_BIND", "127.0.0.1:8000")  # the server's: known
    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        host_app(backend, SESSIONSVC_MAX_SESSIONS=3, SESSIONSVC_TOTALLY_NEW=1)
    unknown = sorted(m for m in caplog.messages if m.startswith("unknown "))
    assert unknown == [
        "unknown configuration key SESSIONSVC_MAX_SESSIONS is ignored: "
        "did you mean SESSIONSVC_MAX_SESSIONS_PER_USER?",
        "unknown configuration key SESSIONSVC_TOTALLY_NEW is ignored: docs/api.md lists the keys",
        "unknown environment variable SESSIONSVC_REDIS_URI is ignored: "
        "did you mean SESSIONSVC_REDIS_URL?",
    ]


def test_a_key_set_in_the_environment_but_not_in_a_host_apps_config_is_said(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A host app reads its config; exported, the key did nothing in silence.
    monkeypatch.setenv("SESSIONSVC_ADMIN_ROUTES", "true")
    monkeypatch.setenv("SESSIONSVC_TOUCH_INTERVAL", "30")
    monkeypatch.setenv("SESSIONSVC_IDLE_TIMEOUT", "")  # empty: unset
    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        host_app(backend, SESSIONSVC_TOUCH_INTERVAL=30)
    said = [m for m in caplog.messages if m.startswith("environment variable ")]
    assert said == [
        "environment variable SESSIONSVC_ADMIN_ROUTES is set but the app's config has no "
        "SESSIONSVC_ADMIN_ROUTES: the extension reads the app's config (copy it there)"
    ]


def test_a_token_made_without_a_session_is_refused_and_explained_once(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = host_app(backend)
    with app.app_context():
        token = create_access_token("alice")  # not through sessions.open()
    token_wiring._explain_sessionless_token.cache_clear()  # once per process: this test's
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        for _ in range(3):
            assert_problem(
                client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}),
                401,
                "invalid_token",
            )
    said = [m for m in caplog.messages if "sessions.open(" in m]
    assert len(said) == 1
    assert "create_access_token()" in said[0]
