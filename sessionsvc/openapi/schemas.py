"""The OpenAPI document's schemas (``components/schemas``), from the code's own constants.

OpenAPI 3.1 schemas are JSON Schema 2020-12: a member that may be ``null``
says so in its ``type`` (``["string", "null"]``), or with ``anyOf`` where it
refers to another schema.
"""

from __future__ import annotations

from typing import Any

from ..models import (
    DEVICE_TYPES,
    EVENT_TYPES,
    MAX_NAME,
    REASON_CHARS,
    REASON_MAX,
    REVIEW_CONFIRMED,
    REVIEW_PENDING,
    REVOCATION_REASONS,
    RISK_FLAGS,
)
from ..passwords import MAX_LENGTH as MAX_PASSWORD
from ..passwords import MIN_LENGTH as MIN_PASSWORD
from ..payloads import MAX_ROLES, MAX_USERNAME, ROLE_RE

_TIMESTAMP = {"type": "string", "format": "date-time", "examples": ["2026-11-26T22:15:12Z"]}


def ref(name: str) -> dict[str, str]:
    """A reference to one of :data:`SCHEMAS`."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}")
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


def _string(example: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **extra}
    if example is not None:
        schema["examples"] = [example]
    return schema


def _record(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object whose every member is always present (``null`` where it may be)."""
    return {"type": "object", "required": list(properties), "properties": properties, **extra}


def _list_of(member: str, name: str) -> dict[str, Any]:
    return _record({member: {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}})


def _code_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{value}`" for value in values)


def _open_vocabulary(values: tuple[str, ...]) -> dict[str, Any]:
    """A string of a vocabulary that grows (event types, risk flags): the
    values known now are listed, but not as an ``enum``, so that a client
    generated today still reads an answer with a value added later."""
    return _string(values[0], description=f"Known values: {_code_list(values)}.")


_NAME = _string("Work laptop", minLength=1, maxLength=MAX_NAME)
_CHANGE = {"$ref": "#/components/schemas/Change"}


SCHEMAS: dict[str, Any] = {
    "Problem": _record(
        {
            "type": _string("about:blank"),
            "title": _string("Not Found"),
            "status": {"type": "integer", "examples": [404]},
            "detail": _string(),
            "code": _string("session_not_found", description="Stable, for programs."),
        },
        description="RFC 9457 problem document with the extra member `code`.",
    ),
    "Device": _record(
        {
            "type": {"type": "string", "enum": list(DEVICE_TYPES)},
            "browser": _nullable(_string("Chrome")),
            "browser_version": _nullable(_string("120.0")),
            "os": _nullable(_string("Windows")),
            "os_version": _nullable(_string("10")),
            "label": _nullable(_string("Chrome 120 on Windows 10")),
        }
    ),
    "Location": _record(
        {
            "country": _nullable(_string("DE")),
            "city": _nullable(_string("Berlin")),
            "latitude": {"type": ["number", "null"], "minimum": -90, "maximum": 90},
            "longitude": {"type": ["number", "null"], "minimum": -180, "maximum": 180},
        },
        description="Where the address is, by the GeoIP database; the coordinates "
        "where the database has them.",
    ),
    "Place": _record({"country": _nullable(_string("DE")), "city": _nullable(_string("Berlin"))}),
    "Session": _record(
        {
            "id": _string(description="Opaque, >= 128 bits of randomness."),
            "current": {"type": "boolean", "description": "The session of the calling token."},
            "created_at": _TIMESTAMP,
            "last_seen_at": _TIMESTAMP,
            "expires_at": _TIMESTAMP,
            "ip": _nullable(_string("203.0.113.7", description="The last address seen.")),
            "created_ip": _nullable(_string("198.51.100.4")),
            "user_agent": _nullable(_string()),
            "device": {"$ref": "#/components/schemas/Device"},
            "location": {
                "anyOf": [{"$ref": "#/components/schemas/Location"}, {"type": "null"}],
                "description": "`null` without a GeoIP database, or for a private or "
                "unknown address.",
            },
            "name": _nullable(_NAME),
            "idle_expires_at": _nullable(_TIMESTAMP),
            "risk": {"type": "array", "items": _open_vocabulary(RISK_FLAGS)},
            "review": {
                "type": ["string", "null"],
                "enum": [REVIEW_PENDING, REVIEW_CONFIRMED, None],
                "description": '"Was this you?": `null` without risk flags, else '
                "`pending` until the user confirms it (`confirmed`).",
            },
            "dpop_bound": {
                "type": "boolean",
                "description": "Its tokens are bound to the key of the device (DPoP).",
            },
        }
    ),
    "SessionList": _list_of("sessions", "Session"),
    "EventDetail": {
        "type": "object",
        "description": "By type. `session.created`: `risk` (flags) when any. "
        f"`session.revoked`: `reason`: the service's own are {_code_list(REVOCATION_REASONS)}. "
        "`session.confirmed`: nothing (the user confirmed the flagged session). "
        "`session.ip_changed`: `from`, `to` (addresses). `session.anomaly`: what "
        "changed, each of `browser`, `os`, `country` as `{from, to}`; or, for "
        "impossible travel, `kind` (`impossible_travel`), `distance_km`, `speed_kmh` "
        "and `location` (`{from, to}` places); or `kind` `dpop_mismatch`: a bound token "
        "was sent without its key (as Bearer, or with another key's proof). "
        "`password.changed`: `revoked` (how many other sessions ended). A host app "
        "may revoke with reasons of its own, so `reason` is open.",
        "properties": {
            "reason": _string(
                "logout",
                pattern=f"^{REASON_CHARS}+$",
                maxLength=REASON_MAX,
                description=f"The service's own: {_code_list(REVOCATION_REASONS)}.",
            ),
            "risk": {"type": "array", "items": _open_vocabulary(RISK_FLAGS)},
            "from": _nullable(_string()),
            "to": _nullable(_string()),
            "browser": _CHANGE,
            "os": _CHANGE,
            "country": _CHANGE,
            "revoked": {"type": "integer", "minimum": 0},
            "kind": _string("impossible_travel"),
            "distance_km": {"type": "integer", "minimum": 0},
            "speed_kmh": {"type": "integer", "minimum": 0},
            "location": _record(
                {
                    "from": {"$ref": "#/components/schemas/Place"},
                    "to": {"$ref": "#/components/schemas/Place"},
                }
            ),
        },
        "examples": [{"browser": {"from": "Chrome", "to": "Firefox"}}],
    },
    "Event": _record(
        {
            "id": _string(),
            "type": _open_vocabulary(EVENT_TYPES),
            "at": _TIMESTAMP,
            "session_id": _string(),
            "ip": _nullable(_string(description="The address of the request.")),
            "user_agent": _nullable(_string()),
            "detail": {"$ref": "#/components/schemas/EventDetail"},
        }
    ),
    "Change": _record({"from": _nullable(_string()), "to": _nullable(_string())}),
    "EventList": _list_of("events", "Event"),
    "Revoked": _record({"revoked": {"type": "integer", "minimum": 0}}),
    "TokenPair": _record(
        {
            "access_token": _string(),
            "refresh_token": _string(),
            "token_type": {
                "type": "string",
                "enum": ["Bearer", "DPoP"],
                "description": "`DPoP`: both tokens are bound to the key of the sign-in's "
                "proof, and are sent as `Authorization: DPoP <token>` with a proof.",
            },
            "expires_in": {"type": "integer", "description": "Access-token lifetime, seconds."},
            "session_id": _string(),
        }
    ),
    "Credentials": _record(
        {
            "username": _string("alice", maxLength=MAX_USERNAME),
            "password": _string(format="password", maxLength=MAX_PASSWORD),
        }
    ),
    "SessionName": _record(
        {"name": {**_nullable(_NAME), "description": "Trimmed; `null` clears the name."}}
    ),
    "Status": _record({"status": _string("ok")}),
    "User": _record(
        {
            "id": _string("alice"),
            "roles": {"type": "array", "items": _string()},
            "disabled": {"type": "boolean"},
            "created_at": _nullable(_TIMESTAMP),
            "password_changed_at": _nullable(_TIMESTAMP),
        }
    ),
    "UserPage": _record(
        {
            "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
            "next_cursor": _nullable(_string()),
        }
    ),
    "UserChanges": {
        "type": "object",
        "description": "At least one of the two.",
        "minProperties": 1,
        "properties": {
            "disabled": {
                "type": "boolean",
                "description": "Disabling revokes every session (`user_disabled`).",
            },
            "roles": {
                "type": "array",
                "items": {"type": "string", "pattern": f"^{ROLE_RE.pattern}$"},
                "maxItems": MAX_ROLES,
                "description": "Another set of roles revokes every session (`roles_changed`).",
            },
        },
    },
    "PasswordChange": _record(
        {
            "current_password": _string(format="password"),
            "new_password": _string(
                format="password",
                minLength=MIN_PASSWORD,
                maxLength=MAX_PASSWORD,
                description="Not the username; no composition rules.",
            ),
        }
    ),
}

#: An audit row: the ``Event`` of the row's user, and the account it was.
SCHEMAS["AuditEvent"] = _record(
    {
        **SCHEMAS["Event"]["properties"],
        "session_id": _nullable(_string()),
        "user_id": _string(description="The user's id (`sub`), as it was."),
        "account": _nullable(
            _string(
                description="The account behind `user_id` then: a name deleted and created "
                "again is another account, whose events carry another value."
            )
        ),
    },
    description="`at` is to the second, as every time the service records; a row "
    "written with microseconds has them.",
)
SCHEMAS["AuditPage"] = _record(
    {
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}},
        "next_cursor": _nullable(_string()),
    }
)
