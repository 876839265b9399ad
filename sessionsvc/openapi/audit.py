"""The OpenAPI operation of the audit trail's admin route (``admin.read_audit_trail``)."""

from __future__ import annotations

from typing import Any

from ..audit_query import MAX_FILTER, MAX_TIME
from ..models import AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX, EVENT_TYPES

# The helpers of the other operations, so that this one reads as they do.
from .operations import _ADMIN_ERRORS, _BEARER, _limit, _ok, _problem


def _filter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_FILTER, **schema},
    }


def _time(name: str, description: str) -> dict[str, Any]:
    return _filter(name, description, format="date-time", maxLength=MAX_TIME)


AUDIT_OPERATIONS: dict[str, dict[str, Any]] = {
    "admin_audit": {
        "tags": ["admin"],
        "summary": "The audit trail: every user's events, filtered, newest first (admin role)",
        "description": "Only when `SESSIONSVC_AUDIT_URL` is set; otherwise 404 (`not_found`). "
        "Rows in the order of `at`, then `id`, descending. A page starts strictly after the "
        "last row of the one before (`next_cursor`, `null` on the last page), so rows written "
        "meanwhile never shift it. Each filter given must match; an empty value is refused.",
        "security": _BEARER,
        "parameters": [
            _filter("user_id", "Only this user's events (exact)."),
            _filter("session_id", "Only this session's events (exact)."),
            _filter("type", "Only events of this type.", enum=list(EVENT_TYPES)),
            _filter(
                "ip",
                "Only events from this address; an IPv4-mapped IPv6 address is its IPv4 one.",
            ),
            _time("since", "Only events at or after this time (ISO 8601, with `Z` or an offset)."),
            _time("until", "Only events before this time (ISO 8601, with `Z` or an offset)."),
            _limit(AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX),
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "The `next_cursor` of the page before; opaque.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": _ok("A page of the audit trail.", "AuditPage"),
            "404": _problem("The audit trail is off (`not_found`)."),
            **_ADMIN_ERRORS,
            "503": _problem(
                "The session store is unreachable (`store_unavailable`), or the audit "
                "database is (`audit_unavailable`); `Retry-After` says when to try again.",
                retry_after=True,
            ),
        },
    },
}
