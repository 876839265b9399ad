"""The OpenAPI (Swagger 2.0) document: flasgger template and per-operation specs.

Views carry their operation with :func:`spec`; flasgger builds
``/apispec.json`` from the real routes, so a route without a spec shows up
as undocumented rather than silently missing. Every number and vocabulary
the code enforces (name length, body limit, page sizes, reasons, event
types, risk flags) comes from the code's own constants.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flasgger import swag_from

from .models import (
    DEVICE_TYPES,
    EVENT_TYPES,
    EVENTS_LIMIT_DEFAULT,
    EVENTS_LIMIT_MAX,
    MAX_NAME,
    REVOCATION_REASONS,
    RISK_FLAGS,
)
from .payloads import BOOLEAN_VALUES, MAX_BODY

F = TypeVar("F", bound=Callable[..., Any])

_TIMESTAMP = {"type": "string", "format": "date-time", "example": "2026-11-26T22:15:12Z"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-nullable": True}


def _record(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object whose every member is always present (``null`` where it may be)."""
    return {"type": "object", "required": list(properties), "properties": properties, **extra}


def _code_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{value}`" for value in values)


_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "example": "Work laptop"}


DEFINITIONS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem document with the extra member `code`.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "example": "about:blank"},
            "title": {"type": "string", "example": "Not Found"},
            "status": {"type": "integer", "example": 404},
            "detail": {"type": "string"},
            "code": {"type": "string", "example": "session_not_found"},
        },
    },
    "Device": _record(
        {
            "type": {"type": "string", "enum": list(DEVICE_TYPES)},
            "browser": _nullable({"type": "string", "example": "Chrome"}),
            "browser_version": _nullable({"type": "string", "example": "120.0"}),
            "os": _nullable({"type": "string", "example": "Windows"}),
            "os_version": _nullable({"type": "string", "example": "10"}),
            "label": _nullable({"type": "string", "example": "Chrome 120 on Windows 10"}),
        }
    ),
    "Location": {
        "type": "object",
        "x-nullable": True,
        "properties": {
            "country": _nullable({"type": "string", "example": "DE"}),
            "city": _nullable({"type": "string", "example": "Berlin"}),
        },
    },
    "Session": _record(
        {
            "id": {"type": "string", "description": "Opaque, >= 128 bits of randomness."},
            "current": {"type": "boolean", "description": "The session of the calling token."},
            "created_at": _TIMESTAMP,
            "last_seen_at": _TIMESTAMP,
            "expires_at": _TIMESTAMP,
            "ip": _nullable({"type": "string", "example": "203.0.113.7"}),
            "created_ip": _nullable({"type": "string", "example": "198.51.100.4"}),
            "user_agent": _nullable({"type": "string"}),
            "device": {"$ref": "#/definitions/Device"},
            "location": {"$ref": "#/definitions/Location"},
            "name": _nullable(_NAME),
            "idle_expires_at": _nullable(_TIMESTAMP),
            "risk": {"type": "array", "items": {"type": "string", "enum": list(RISK_FLAGS)}},
        }
    ),
    "SessionList": {
        "type": "object",
        "required": ["sessions"],
        "properties": {"sessions": {"type": "array", "items": {"$ref": "#/definitions/Session"}}},
    },
    "Event": _record(
        {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": list(EVENT_TYPES), "example": "session.revoked"},
            "at": _TIMESTAMP,
            "session_id": {"type": "string"},
            "ip": _nullable({"type": "string", "description": "The address of the request."}),
            "user_agent": _nullable({"type": "string"}),
            "detail": {
                "type": "object",
                "description": "By type. `session.created`: `risk` (flags) when any. "
                f"`session.revoked`: `reason`, one of {_code_list(REVOCATION_REASONS)}. "
                "`session.ip_changed`: `from`, `to` (addresses). `session.anomaly`: what "
                "changed, each of `browser`, `os`, `country` as `{from, to}`.",
                "properties": {
                    "reason": {"type": "string", "enum": list(REVOCATION_REASONS)},
                    "risk": {"type": "array", "items": {"type": "string"}},
                    "from": _nullable({"type": "string"}),
                    "to": _nullable({"type": "string"}),
                    "browser": {"$ref": "#/definitions/Change"},
                    "os": {"$ref": "#/definitions/Change"},
                    "country": {"$ref": "#/definitions/Change"},
                },
                "example": {"browser": {"from": "Chrome", "to": "Firefox"}},
            },
        }
    ),
    "Change": {
        "type": "object",
        "required": ["from", "to"],
        "properties": {"from": _nullable({"type": "string"}), "to": _nullable({"type": "string"})},
    },
    "EventList": {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": {"$ref": "#/definitions/Event"}}},
    },
    "Revoked": {
        "type": "object",
        "required": ["revoked"],
        "properties": {"revoked": {"type": "integer", "minimum": 0}},
    },
    "TokenPair": _record(
        {
            "access_token": {"type": "string"},
            "refresh_token": {"type": "string"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "description": "Access-token lifetime, seconds."},
            "session_id": {"type": "string"},
        }
    ),
    "Credentials": {
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": {"type": "string", "example": "alice"},
            "password": {"type": "string", "format": "password"},
        },
    },
    "SessionName": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": _nullable(_NAME)},
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "example": "ok"}},
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"$ref": "#/definitions/Problem"}}


def _ok(description: str, definition: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if definition:
        response["schema"] = {"$ref": f"#/definitions/{definition}"}
    return response


_AUTH_ERRORS = {
    "401": _problem(
        "No or bad token: `authorization_required`, `invalid_token`, `token_expired`, "
        "`session_revoked`, `wrong_token_type`."
    ),
    "503": _problem("The session store is unreachable (`store_unavailable`); fails closed."),
}
_BAD_REQUEST = {"400": _problem("Bad body or query value (`invalid_request`).")}
_NOT_FOUND = {"404": _problem("No such session of yours (`session_not_found`).")}
_TOO_LARGE = {"413": _problem(f"Body over {MAX_BODY // 1024} KiB (`payload_too_large`).")}
_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "type": "string",
    "required": True,
    "description": "A session id from the list.",
}
_BEARER: list[dict[str, Any]] = [{"bearer": []}]
_USER_ID = {
    "name": "user_id",
    "in": "path",
    "type": "string",
    "required": True,
    "description": "The user's id (`sub`); the username in the standalone service.",
}
_FORBIDDEN = {"403": _problem("The token has no admin role (`forbidden`).")}

OPERATIONS: dict[str, dict[str, Any]] = {
    "list_sessions": {
        "tags": ["sessions"],
        "summary": "List my sessions, most recently active first",
        "security": _BEARER,
        "responses": {"200": _ok("The caller's active sessions.", "SessionList"), **_AUTH_ERRORS},
    },
    "get_session": {
        "tags": ["sessions"],
        "summary": "One of my sessions",
        "security": _BEARER,
        "parameters": [_SESSION_ID],
        "responses": {"200": _ok("The session.", "Session"), **_NOT_FOUND, **_AUTH_ERRORS},
    },
    "rename_session": {
        "tags": ["sessions"],
        "summary": "Name one of my sessions",
        "security": _BEARER,
        "consumes": ["application/json"],
        "parameters": [
            _SESSION_ID,
            {
                "name": "body",
                "in": "body",
                "required": True,
                "schema": {"$ref": "#/definitions/SessionName"},
            },
        ],
        "responses": {
            "200": _ok("The renamed session.", "Session"),
            **_BAD_REQUEST,
            **_NOT_FOUND,
            **_TOO_LARGE,
            **_AUTH_ERRORS,
        },
    },
    "revoke_session": {
        "tags": ["sessions"],
        "summary": "Sign one of my sessions out",
        "description": "Its tokens fail on their very next use. Revoking the current "
        "session is a logout.",
        "security": _BEARER,
        "parameters": [_SESSION_ID],
        "responses": {"204": _ok("Revoked."), **_NOT_FOUND, **_AUTH_ERRORS},
    },
    "revoke_sessions": {
        "tags": ["sessions"],
        "summary": "Sign out all my other sessions",
        "security": _BEARER,
        "parameters": [
            {
                "name": "include_current",
                "in": "query",
                "type": "string",
                "enum": list(BOOLEAN_VALUES),
                "required": False,
                "description": "Also sign out the calling session.",
            }
        ],
        "responses": {
            "200": _ok("How many sessions were revoked.", "Revoked"),
            **_BAD_REQUEST,
            **_AUTH_ERRORS,
        },
    },
    "list_events": {
        "tags": ["sessions"],
        "summary": "My security events, newest first",
        "security": _BEARER,
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "type": "integer",
                "minimum": 1,
                "maximum": EVENTS_LIMIT_MAX,
                "default": EVENTS_LIMIT_DEFAULT,
                "required": False,
            }
        ],
        "responses": {"200": _ok("Events.", "EventList"), **_BAD_REQUEST, **_AUTH_ERRORS},
    },
    "login": {
        "tags": ["auth"],
        "summary": "Sign in: opens a session and returns its token pair",
        "consumes": ["application/json"],
        "parameters": [
            {
                "name": "body",
                "in": "body",
                "required": True,
                "schema": {"$ref": "#/definitions/Credentials"},
            }
        ],
        "responses": {
            "200": _ok("The new session's tokens.", "TokenPair"),
            **_BAD_REQUEST,
            "401": _problem("Wrong username or password (`invalid_credentials`)."),
            **_TOO_LARGE,
            "429": _problem(
                "Too many sign-in attempts from this address or for this username "
                "(`rate_limited`); `Retry-After` says when to try again."
            ),
            "503": _AUTH_ERRORS["503"],
        },
    },
    "refresh": {
        "tags": ["auth"],
        "summary": "Rotate the refresh token (send the refresh token as Bearer)",
        "description": "The previous refresh token stops working; presenting it again "
        "revokes the whole session (`refresh_token_reused`).",
        "security": _BEARER,
        "responses": {
            "200": _ok("A new token pair for the same session.", "TokenPair"),
            "401": _problem(
                "`refresh_token_reused`, `session_revoked`, `wrong_token_type`, "
                "`token_expired`, `invalid_token`, `authorization_required`."
            ),
            "503": _AUTH_ERRORS["503"],
        },
    },
    "logout": {
        "tags": ["auth"],
        "summary": "Sign out the calling session",
        "security": _BEARER,
        "responses": {"204": _ok("Signed out."), **_AUTH_ERRORS},
    },
    "admin_list_sessions": {
        "tags": ["admin"],
        "summary": "List a user's sessions (admin role)",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "responses": {
            "200": _ok("The user's active sessions; `current` is false for all.", "SessionList"),
            **_FORBIDDEN,
            **_AUTH_ERRORS,
        },
    },
    "admin_revoke_sessions": {
        "tags": ["admin"],
        "summary": "Sign a user out everywhere (admin role)",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "responses": {
            "200": _ok("How many sessions were revoked.", "Revoked"),
            **_FORBIDDEN,
            **_AUTH_ERRORS,
        },
    },
    "admin_revoke_session": {
        "tags": ["admin"],
        "summary": "Sign out one session of a user (admin role)",
        "security": _BEARER,
        "parameters": [_USER_ID, _SESSION_ID],
        "responses": {
            "204": _ok("Revoked."),
            **_FORBIDDEN,
            "404": _problem("The user has no such session (`session_not_found`)."),
            **_AUTH_ERRORS,
        },
    },
    "healthz": {
        "tags": ["service"],
        "summary": "Liveness: the process answers",
        "responses": {"200": _ok("Alive.", "Status")},
    },
    "readyz": {
        "tags": ["service"],
        "summary": "Readiness: the session store answers",
        "responses": {
            "200": _ok("Ready.", "Status"),
            "503": _problem("The store is unreachable (`store_unavailable`)."),
        },
    },
    "metrics": {
        "tags": ["service"],
        "summary": "Prometheus metrics (text exposition format)",
        "description": "Served unless `SESSIONSVC_METRICS` is off, and only to clients on "
        "loopback, or to any client that sends `Authorization: Bearer <SESSIONSVC_METRICS_TOKEN>` "
        "when that is set; otherwise 404 (`not_found`).",
        "produces": ["text/plain", "application/problem+json"],
        "responses": {
            "200": {
                "description": "Prometheus text format; OpenMetrics when `Accept` asks for it."
            },
            "404": _problem("Metrics are off, or not for this client (`not_found`)."),
        },
    },
    "account_page": {
        "tags": ["service"],
        "summary": "The account page: where you're signed in (HTML)",
        "description": "Signs in through `/api/v1/auth` and lists the caller's sessions with "
        "the sessions API; its script and stylesheet are at `/account/assets/`.",
        "produces": ["text/html"],
        "responses": {"200": {"description": "The page."}},
    },
}


def spec(operation: str) -> Callable[[F], F]:
    """Attach the named operation's OpenAPI spec to a view."""
    decorate: Callable[[F], F] = swag_from(OPERATIONS[operation])
    return decorate


#: flasgger's template: everything but the paths.
TEMPLATE: dict[str, Any] = {
    "swagger": "2.0",
    "info": {
        "title": "sessionsvc",
        "description": "See every device you are signed in on, and sign any of them out: "
        "revocation bites on the very next request.",
        "version": "1",
    },
    "consumes": ["application/json"],
    "produces": ["application/json", "application/problem+json"],
    "securityDefinitions": {
        "bearer": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "description": "`Bearer <access_token>` (or the refresh token for /auth/refresh).",
        }
    },
    "tags": [
        {"name": "sessions", "description": "Your own sessions and security events"},
        {"name": "auth", "description": "Sign in, refresh and sign out (standalone service)"},
        {"name": "admin", "description": "Any user's sessions, for tokens with the admin role"},
        {"name": "service", "description": "Health, readiness and metrics"},
    ],
    "definitions": DEFINITIONS,
}

#: Where the /docs page's own files and the Swagger UI release shipped in the
#: package (``static/docs/``: ``init.js``, ``docs.css``, ``swagger-ui/``) are served.
DOCS_ASSETS = "/docs/assets"
_UI = f"{DOCS_ASSETS}/swagger-ui"

#: The /docs page's Content-Security-Policy: its own files only. Swagger UI
#: sets styles through the DOM, which a policy does not restrict, and fetches
#: the document and "Try it out" requests from this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

#: flasgger's config: Swagger UI at ``/docs``, the document at ``/apispec.json``.
SWAGGER_CONFIG: dict[str, Any] = {
    "headers": [],
    "specs": [
        {
            "endpoint": "apispec",
            "route": "/apispec.json",
            "rule_filter": lambda rule: True,
            "model_filter": lambda tag: True,
        }
    ],
    # flasgger's own static folder (Swagger UI 3.28.0, in a known XSS range,
    # and jQuery 2.2.4) is replaced by ours: only the UI we ship is served.
    "static_folder": str(Path(__file__).parent / "static" / "docs"),
    "static_url_path": DOCS_ASSETS,
    "swagger_ui": True,
    "specs_route": "/docs",
    "title": "sessionsvc API",
    "swagger_ui_bundle_js": f"{_UI}/swagger-ui-bundle.js",
    "swagger_ui_standalone_preset_js": f"{_UI}/swagger-ui-standalone-preset.js",
    "swagger_ui_css": f"{_UI}/swagger-ui.css",
    "favicon": f"{_UI}/favicon-32x32.png",
    # Read by the page's templates (templates/flasgger/).
    "docs_init_js": f"{DOCS_ASSETS}/init.js",
    "docs_css": f"{DOCS_ASSETS}/docs.css",
    # The top bar is the only part of flasgger's page that needs jQuery.
    "hide_top_bar": True,
}
