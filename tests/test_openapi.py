"""The OpenAPI 3.1 document served at ``/apispec.json`` (sessionsvc/openapi/).

It is what generated clients are built from (tests/test_generated_clients.py)
and what schemathesis fuzzes (tests/test_fuzz.py); here it is held to the
rules those rely on: valid 3.1, one stable ``operationId`` per operation,
every operation once under one of four tags, every response with its
schema, the bearer scheme where the service asks for a token, and numbers
taken from the code.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from sessionsvc import create_app
from sessionsvc.models import (
    EVENT_TYPES,
    EVENTS_LIMIT_DEFAULT,
    EVENTS_LIMIT_MAX,
    MAX_NAME,
    REVIEW_CONFIRMED,
    REVIEW_PENDING,
    REVOCATION_REASONS,
    RISK_FLAGS,
    Session,
)
from sessionsvc.openapi import SCHEMAS
from sessionsvc.passwords import MAX_LENGTH, MIN_LENGTH
from sessionsvc.payloads import BOOLEAN_VALUES, MAX_BODY, MAX_ROLES, MAX_USERNAME
from tests.backends import AppFactory
from tests.clients import JWT_KEY, Auth, assert_problem

#: Routes of the docs page itself (flasgger's, and the Swagger UI assets we
#: ship); everything else must be documented.
DOCS_ENDPOINTS = {
    "flasgger.static",
    "flasgger.apidocs",
    "flasgger.apispec",
    "sessionsvc_docs.static",
    # The pages' scripts and stylesheets, and the scripts they share.
    "sessionsvc_account.static",
    "sessionsvc_account.shared.static",
    "sessionsvc_console.static",
    "sessionsvc_console.shared.static",
}

#: Every operation, by its operationId: what generated clients call. Changing
#: one breaks every client built before, so this list only ever grows.
OPERATION_IDS = {
    ("GET", "/api/v1/sessions"): "list_sessions",
    ("DELETE", "/api/v1/sessions"): "revoke_other_sessions",
    ("GET", "/api/v1/sessions/events"): "list_events",
    ("GET", "/api/v1/sessions/{session_id}"): "get_session",
    ("PATCH", "/api/v1/sessions/{session_id}"): "rename_session",
    ("DELETE", "/api/v1/sessions/{session_id}"): "revoke_session",
    ("POST", "/api/v1/sessions/{session_id}/confirm"): "confirm_session",
    ("POST", "/api/v1/sessions/{session_id}/deny"): "deny_session",
    ("POST", "/api/v1/auth/login"): "login",
    ("POST", "/api/v1/auth/refresh"): "refresh",
    ("POST", "/api/v1/auth/logout"): "logout",
    ("POST", "/api/v1/auth/password"): "change_password",
    ("GET", "/api/v1/admin/audit"): "admin_audit",
    ("GET", "/api/v1/admin/users"): "admin_list_users",
    ("GET", "/api/v1/admin/users/{user_id}"): "admin_get_user",
    ("PATCH", "/api/v1/admin/users/{user_id}"): "admin_update_user",
    ("DELETE", "/api/v1/admin/users/{user_id}"): "admin_delete_user",
    ("GET", "/api/v1/admin/users/{user_id}/sessions"): "admin_list_user_sessions",
    ("GET", "/api/v1/admin/users/{user_id}/events"): "admin_list_user_events",
    ("DELETE", "/api/v1/admin/users/{user_id}/sessions"): "admin_revoke_user_sessions",
    ("DELETE", "/api/v1/admin/users/{user_id}/sessions/{session_id}"): "admin_revoke_user_session",
    ("GET", "/healthz"): "health",
    ("GET", "/readyz"): "readiness",
    ("GET", "/metrics"): "metrics",
    ("GET", "/account/sessions"): "account_page",
    ("GET", "/admin"): "console_page",
}

TAGS = ["sessions", "auth", "admin", "service"]
PROBLEM = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """The service with every route it has: the audit trail's too."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    audit = tmp_path_factory.mktemp("audit") / "audit.db"
    config = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY}
    config["SESSIONSVC_AUDIT_URL"] = f"sqlite:///{audit}"
    return create_app(config, redis_client=client)


@pytest.fixture(scope="module")
def spec(service: Flask) -> dict[str, Any]:
    response = service.test_client().get("/apispec.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.get_json()
    return document


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    assert "swagger" not in spec
    assert "definitions" not in spec
    validate(spec)
    # The validator does check what matters: a response without its
    # description, or a reference to no schema, is refused.
    broken = copy.deepcopy(spec)
    del broken["paths"]["/api/v1/sessions"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)
    dangling = copy.deepcopy(spec)
    del dangling["components"]["schemas"]["Problem"]
    with pytest.raises(Exception, match="Problem"):
        validate(dangling)


def test_every_route_is_documented_once(service: Flask, spec: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(spec)}
    served = set()
    for rule in service.url_map.iter_rules():
        if rule.endpoint in DOCS_ENDPOINTS or rule.rule == "/oauth2-redirect.html":
            continue
        if rule.rule.startswith("/apidocs"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert rule.methods is not None
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    # The collection's trailing-slash alias is served, not documented.
    aliases = {(method, "/api/v1/sessions/") for method in ("GET", "DELETE")}
    assert aliases <= served
    assert documented == served - aliases
    assert set(OPERATION_IDS) == documented


def test_the_trailing_slash_alias_still_answers(service: Flask) -> None:
    auth = Auth(service)
    auth.create_user("alias-user")
    token = auth.login("alias-user")
    client = service.test_client()
    listed = client.get("/api/v1/sessions/", headers=auth.headers(token))
    assert listed.status_code == 200
    assert [s["id"] for s in listed.get_json()["sessions"]] == [token["session_id"]]
    revoked = client.delete("/api/v1/sessions/", headers=auth.headers(token))
    assert revoked.get_json() == {"revoked": 0}


def test_every_operation_has_its_stable_operation_id(spec: dict[str, Any]) -> None:
    found = {(method, path): op["operationId"] for method, path, op in operations(spec)}
    assert found == OPERATION_IDS
    assert len(set(found.values())) == len(found)
    assert all(re.fullmatch(r"[a-z][a-z_]*[a-z]", name) for name in found.values())


def test_every_operation_is_under_one_of_four_tags(spec: dict[str, Any]) -> None:
    assert [tag["name"] for tag in spec["tags"]] == TAGS
    by_tag: dict[str, set[str]] = {tag: set() for tag in TAGS}
    for _, path, operation in operations(spec):
        (tag,) = operation["tags"]
        by_tag[tag].add(path)
    assert all(path.startswith("/api/v1/sessions") for path in by_tag["sessions"])
    assert all(path.startswith("/api/v1/auth/") for path in by_tag["auth"])
    assert all(path.startswith("/api/v1/admin/") for path in by_tag["admin"])
    assert by_tag["service"] == {"/healthz", "/readyz", "/metrics", "/account/sessions", "/admin"}


def test_every_response_has_its_schema(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        where = f"{method} {path}"
        for status, response in operation["responses"].items():
            assert response["description"], where
            if status == "204":
                assert "content" not in response, where
                continue
            content = response["content"]
            if status.startswith(("4", "5")):
                assert content == {"application/problem+json": {"schema": PROBLEM}}, where
                continue
            assert content, where
            for media_type in content.values():
                assert media_type["schema"], where
        assert any(status.startswith("2") for status in operation["responses"]), where


def test_errors_are_documented_per_operation(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    delete = paths["/api/v1/sessions/{session_id}"]["delete"]["responses"]
    assert delete["404"]["description"] == "No such session of yours (`session_not_found`)."
    assert set(delete) == {"204", "401", "404", "503"}
    assert set(paths["/api/v1/auth/login"]["post"]["responses"]) == {
        "200", "400", "401", "403", "413", "429", "503",
    }  # fmt: skip
    assert "rate_limited" in paths["/api/v1/auth/login"]["post"]["responses"]["429"]["description"]
    # What the service sends with every 429 and 503 (tests/test_limits.py,
    # tests/test_app.py) is documented with each.
    for method, path, operation in operations(spec):
        for status in {"429", "503"} & set(operation["responses"]):
            header = operation["responses"][status]["headers"]["Retry-After"]
            assert header["required"] is True, f"{method} {path} {status}"
    update = paths["/api/v1/admin/users/{user_id}"]["patch"]["responses"]
    assert set(update) == {"200", "400", "401", "403", "404", "409", "413", "503"}
    deleted = paths["/api/v1/admin/users/{user_id}"]["delete"]["responses"]
    assert set(deleted) == {"204", "400", "401", "403", "404", "409", "503"}
    # Every admin route names a user in its path, which may not be UTF-8.
    for method, path, operation in operations(spec):
        if path.startswith("/api/v1/admin/users/{user_id}"):
            assert "not UTF-8" in operation["responses"]["400"]["description"], (method, path)
    for answers in (update, deleted):
        assert "`last_admin`" in answers["409"]["description"]
    confirmed = paths["/api/v1/sessions/{session_id}/confirm"]["post"]["responses"]
    assert set(confirmed) == {"200", "401", "403", "404", "409", "503"}
    denied = paths["/api/v1/sessions/{session_id}/deny"]["post"]["responses"]
    assert set(denied) == {"200", "401", "403", "404", "503"}
    for answers in (confirmed, denied):
        assert "`review_not_allowed`" in answers["403"]["description"]
        assert "`session_not_found`" in answers["404"]["description"]
    assert "`nothing_to_review`" in confirmed["409"]["description"]
    assert confirmed["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Session"
    }
    assert denied["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Revoked"
    }
    listed = paths["/api/v1/sessions"]["get"]["responses"]["200"]
    assert listed["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SessionList"
    }


def test_the_token_schemes_are_declared_where_a_token_is_asked_for(
    service: Flask, spec: dict[str, Any]
) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The access token (the refresh token for `/api/v1/auth/refresh`).",
    }
    assert set(schemes) == {"bearer", "dpop"}
    assert (schemes["dpop"]["type"], schemes["dpop"]["scheme"]) == ("http", "DPoP")
    for words in ("`DPoP` header", "`ES256` or `EdDSA`", "`ath`", "accepted once"):
        assert words in schemes["dpop"]["description"]
    client = service.test_client()
    for method, path, operation in operations(spec):
        url = path.replace("{session_id}", "s1").replace("{user_id}", "u1")
        response = client.open(url, method=method, json={})
        if operation.get("security"):
            assert operation["security"] == [{"bearer": []}, {"dpop": []}], path
            assert_problem(response, 401, "authorization_required")
        else:
            assert response.status_code != 401, f"{method} {path}"


def test_numbers_and_vocabularies_come_from_the_code(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas == SCHEMAS
    session = schemas["Session"]
    assert session["required"] == list(Session("s", "u", 0, 0, 0, None, None, None).to_json())
    assert session["properties"]["name"]["maxLength"] == MAX_NAME
    # A state, not a growing vocabulary: closed.
    assert session["properties"]["review"]["enum"] == [REVIEW_PENDING, REVIEW_CONFIRMED, None]
    # Growing vocabularies are listed but not closed: a client generated now
    # must read an event type or a flag added later.
    for vocabulary, values in [
        (session["properties"]["risk"]["items"], RISK_FLAGS),
        (schemas["Event"]["properties"]["type"], EVENT_TYPES),
    ]:
        assert "enum" not in vocabulary
        assert all(f"`{value}`" in vocabulary["description"] for value in values)
    assert schemas["SessionName"]["properties"]["name"]["type"] == ["string", "null"]
    detail = schemas["EventDetail"]
    # Open to a host app's own reasons; the service's own are listed.
    reason = detail["properties"]["reason"]
    assert "enum" not in reason
    assert re.fullmatch(reason["pattern"], "fraud_review")
    assert all(re.fullmatch(reason["pattern"], known) for known in REVOCATION_REASONS)
    assert all(f"`{known}`" in reason["description"] for known in REVOCATION_REASONS)
    assert schemas["Location"]["properties"]["latitude"]["type"] == ["number", "null"]
    assert detail["properties"]["kind"]["examples"] == ["impossible_travel"]
    assert schemas["UserChanges"]["properties"]["roles"]["maxItems"] == MAX_ROLES
    credentials = schemas["Credentials"]["properties"]
    assert (credentials["username"]["maxLength"], credentials["password"]["maxLength"]) == (
        MAX_USERNAME,
        MAX_LENGTH,
    )
    new_password = schemas["PasswordChange"]["properties"]["new_password"]
    assert (new_password["minLength"], new_password["maxLength"]) == (MIN_LENGTH, MAX_LENGTH)
    events = spec["paths"]["/api/v1/sessions/events"]["get"]["parameters"][0]["schema"]
    assert (events["maximum"], events["default"]) == (EVENTS_LIMIT_MAX, EVENTS_LIMIT_DEFAULT)
    include = spec["paths"]["/api/v1/sessions"]["delete"]["parameters"][0]["schema"]
    assert include["enum"] == list(BOOLEAN_VALUES)
    rename = spec["paths"]["/api/v1/sessions/{session_id}"]["patch"]["responses"]
    assert f"{MAX_BODY // 1024} KiB" in rename["413"]["description"]


def test_every_schema_is_used(spec: dict[str, Any]) -> None:
    text = repr(spec["paths"]) + repr(spec["components"]["schemas"])
    for name in spec["components"]["schemas"]:
        assert f"#/components/schemas/{name}'" in text, name


def test_the_document_is_the_same_on_every_request(
    service: Flask, make_app: AppFactory, tmp_path: Path
) -> None:
    first = service.test_client().get("/apispec.json").get_json()
    again = service.test_client().get("/apispec.json").get_json()
    assert first == again
    # Another app (another backend) serves the same document.
    other = make_app(SESSIONSVC_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}")
    assert other.test_client().get("/apispec.json").get_json() == first
