"""The OpenAPI document and Swagger UI of a host app (``SessionManager(docs=True)``).

The standalone service's document is held to its rules in tests/test_openapi.py;
here a host app's: valid 3.1, exactly the operations sessionsvc mounted in it
under the prefixes it mounted them at, none of the host's routes, and the page
with the standalone's Content-Security-Policy, off unless asked for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flasgger import Swagger
from flask import Flask, jsonify
from openapi_spec_validator import validate

from sessionsvc import ConfigError, SessionManager, account, console, create_app
from sessionsvc.openapi import DOCS_CSP
from tests.clients import JWT_KEY

#: The sessions blueprint's operations, by path below its prefix.
SESSIONS = {
    ("GET", ""): "list_sessions",
    ("DELETE", ""): "revoke_other_sessions",
    ("GET", "/events"): "list_events",
    ("GET", "/{session_id}"): "get_session",
    ("PATCH", "/{session_id}"): "rename_session",
    ("DELETE", "/{session_id}"): "revoke_session",
    ("POST", "/{session_id}/confirm"): "confirm_session",
    ("POST", "/{session_id}/deny"): "deny_session",
}
#: The admin blueprint's, where the app mounts it.
ADMIN = {
    ("GET", "/api/v1/admin/users/{user_id}/sessions"): "admin_list_user_sessions",
    ("DELETE", "/api/v1/admin/users/{user_id}/sessions"): "admin_revoke_user_sessions",
    ("DELETE", "/api/v1/admin/users/{user_id}/sessions/{session_id}"): "admin_revoke_user_session",
}
PREFIX = "/me/devices"


def host(*, config: dict[str, Any] | None = None, **options: Any) -> Flask:
    """A host app with routes of its own, before and after sessionsvc's
    (``config``: more of the app's settings)."""
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY, **(config or {}))

    @app.get("/things")
    def things() -> Any:
        return jsonify(["a", "b"])

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    SessionManager(app, redis_client=client, **options)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        return jsonify({})

    return app


def operations(document: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (method.upper(), path): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def sessions_under(prefix: str) -> dict[tuple[str, str], str]:
    return {(method, prefix + path): name for (method, path), name in SESSIONS.items()}


def mounted_admin(app: Flask) -> dict[tuple[str, str], str]:
    """The admin operations, if the app has the admin routes."""
    return ADMIN if "sessionsvc_admin" in app.blueprints else {}


def test_the_document_lists_exactly_what_is_mounted_under_its_prefix() -> None:
    app = host(docs=True, url_prefix=PREFIX)
    response = app.test_client().get("/apispec.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert operations(document) == sessions_under(PREFIX) | mounted_admin(app)
    assert not any(path.startswith(("/things", "/login", "/api/v1/sessions", "/docs", "/apispec"))
                   for path in document["paths"])  # fmt: skip
    # Only what the operations use: no auth or service tag, no login schema.
    used_tags = {
        tag for item in document["paths"].values() for op in item.values() for tag in op["tags"]
    }
    assert [tag["name"] for tag in document["tags"]] == [
        name for name in ("sessions", "auth", "admin", "service") if name in used_tags
    ]
    schemas = document["components"]["schemas"]
    assert "Credentials" not in schemas and "User" not in schemas
    text = repr(document["paths"]) + repr(schemas)
    assert all(f"#/components/schemas/{name}'" in text for name in schemas)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_with_the_user_store_and_the_pages_it_is_the_standalone_document(
    tmp_path: Path,
) -> None:
    # Every route of the standalone service: the audit trail's too.
    audit = {"SESSIONSVC_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}"}
    app = host(config=audit, docs=True, auth_routes=True, admin_routes=True)
    app.register_blueprint(account.blueprint)
    app.register_blueprint(console.blueprint)
    document = app.test_client().get("/apispec.json").get_json()
    validate(document)
    assert ("GET", "/api/v1/admin/audit") in operations(document)
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    config = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY, **audit}
    standalone = create_app(config, redis_client=fake)
    whole = standalone.test_client().get("/apispec.json").get_json()
    # All but the standalone's own service routes.
    expected = {
        (method, path): name
        for (method, path), name in operations(whole).items()
        if name not in {"health", "readiness", "metrics"}
    }
    assert ("POST", "/api/v1/auth/login") in expected
    assert operations(document) == expected
    schemas = whole["components"]["schemas"]
    assert document["components"]["schemas"] == {
        name: schema
        for name, schema in schemas.items()
        if name != "Status"  # health's
    }
    assert [tag["name"] for tag in document["tags"]] == ["sessions", "auth", "admin", "service"]


def test_the_page_is_swagger_ui_shipped_in_the_package_with_its_csp() -> None:
    app = host(docs=True, docs_path="/dev/docs", spec_path="/dev/openapi.json")
    client = app.test_client()
    page = client.get("/dev/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == DOCS_CSP
    assert page.headers["X-Frame-Options"] == "DENY"
    html = page.get_data(as_text=True)
    assert 'src="/dev/docs/assets/init.js" data-spec-url="/dev/openapi.json"' in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(sources) == [
        "/dev/docs/assets/docs.css",
        "/dev/docs/assets/init.js",
        "/dev/docs/assets/swagger-ui/favicon-32x32.png",
        "/dev/docs/assets/swagger-ui/swagger-ui-bundle.js",
        "/dev/docs/assets/swagger-ui/swagger-ui-standalone-preset.js",
        "/dev/docs/assets/swagger-ui/swagger-ui.css",
    ]
    assert "<script>" not in html and "style=" not in html
    for source in sources:
        with client.get(source) as asset:
            assert asset.status_code == 200, source
    validate(client.get("/dev/openapi.json").get_json())
    for path in ("/docs", "/apispec.json", "/oauth2-redirect.html", "/apidocs/index.html"):
        assert client.get(path).status_code == 404, path


def test_off_by_default_the_paths_are_the_hosts_404() -> None:
    app = host()
    client = app.test_client()
    for path in ("/docs", "/apispec.json", "/docs/assets/init.js"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "text/html", path  # the host's own error page
    assert "sessionsvc_docs" not in app.blueprints


@pytest.mark.parametrize(
    ("taken", "options", "setting"),
    [
        ("/docs", {}, "docs_path"),
        ("/docs/", {}, "docs_path"),
        ("/apispec.json", {}, "spec_path"),
        ("/docs/assets/logo.png", {}, "docs_path"),
        ("/api/v1/sessions/events", {"spec_path": "/api/v1/sessions/events"}, "spec_path"),
    ],
)
def test_a_path_the_app_already_routes_is_refused_naming_the_setting(
    taken: str, options: dict[str, str], setting: str
) -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
    app.add_url_rule(taken, "hosts_own", lambda: "the host's")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    with pytest.raises(ConfigError, match=rf"already has a route .*{setting}=\.\.\."):
        SessionManager(app, redis_client=client, docs=True, **options)


@pytest.mark.parametrize(
    "options",
    [
        {"docs_path": "docs"},
        {"docs_path": "/docs/"},
        {"spec_path": "/spec/<name>"},
        {"spec_path": "/docs"},
        {"spec_path": "/docs/assets/openapi.json"},
    ],
)
def test_bad_paths_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"SessionManager\((docs|spec)_path="):
        host(docs=True, **options)


def test_the_hosts_own_docs_stay_the_hosts() -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
    app.config["SWAGGER"] = {"title": "Host API"}
    swagger = Swagger(app)  # the host's /apidocs/ and /apispec_1.json

    @app.get("/docs")
    def docs() -> Any:
        return "the host's docs"

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    SessionManager(
        app, redis_client=client, docs=True, docs_path="/sessions-docs", spec_path="/sessions.json"
    )
    assert app.swag is swagger
    http = app.test_client()
    assert http.get("/docs").get_data(as_text=True) == "the host's docs"
    hosts_page = http.get("/apidocs/").get_data(as_text=True)
    assert "Host API" in hosts_page and "init.js" not in hosts_page
    ours = http.get("/sessions-docs").get_data(as_text=True)
    assert "<title>sessionsvc API</title>" in ours and "flasgger_static" not in ours
    assert http.get("/sessions.json").get_json()["info"]["title"] == "sessionsvc"


def test_a_route_the_host_adds_later_at_a_docs_path_is_not_hidden_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = host(docs=True)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/apispec.json", "hosts_spec", lambda: "the host's")
    client = app.test_client()
    assert client.get("/docs").status_code == 200
    assert client.get("/apispec.json").status_code == 500
    assert "route at /apispec.json (hosts_spec) added after SessionManager.init_app" in caplog.text
    assert "SessionManager(docs=True, spec_path=...)" in caplog.text
