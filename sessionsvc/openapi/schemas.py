"""The OpenAPI document's schemas (``definitions``), from the code's own constants."""

from __future__ import annotations

from typing import Any

from ..models import DEVICE_TYPES, EVENT_TYPES, MAX_NAME, REVOCATION_REASONS, RISK_FLAGS
from ..passwords import MAX_LENGTH as MAX_PASSWORD
from ..passwords import MIN_LENGTH as MIN_PASSWORD
from ..payloads import MAX_ROLES

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
    "User": _record(
        {
            "id": {"type": "string", "example": "alice"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "disabled": {"type": "boolean"},
            "created_at": _nullable(_TIMESTAMP),
            "password_changed_at": _nullable(_TIMESTAMP),
        }
    ),
    "UserChanges": {
        "type": "object",
        "description": "At least one of the two.",
        "properties": {
            "disabled": {
                "type": "boolean",
                "description": "Disabling revokes every session (`user_disabled`).",
            },
            "roles": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
                "maxItems": MAX_ROLES,
                "description": "Another set of roles revokes every session (`roles_changed`).",
            },
        },
    },
    "PasswordChange": {
        "type": "object",
        "required": ["current_password", "new_password"],
        "properties": {
            "current_password": {"type": "string", "format": "password"},
            "new_password": {
                "type": "string",
                "format": "password",
                "minLength": MIN_PASSWORD,
                "maxLength": MAX_PASSWORD,
                "description": "Not the username; no composition rules.",
            },
        },
    },
}
