"""The OpenAPI document's operations by name, one per view (see ``openapi.spec``).

The name is the operation's ``operationId``: generated clients call it by
that name (``list_sessions``, ``login``...), so a name is never changed.
"""

from __future__ import annotations

from typing import Any

from ..accounts import ADMIN_LOCK_WAIT
from ..models import (
    EVENTS_LIMIT_DEFAULT,
    EVENTS_LIMIT_MAX,
    USERS_LIMIT_DEFAULT,
    USERS_LIMIT_MAX,
)
from ..payloads import BOOLEAN_VALUES, MAX_BODY, MAX_USERNAME
from .schemas import ref

#: The media type of every error (RFC 9457).
PROBLEM_TYPE = "application/problem+json"


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": ref("Problem")}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


def _ok(description: str, schema: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema:
        response["content"] = {"application/json": {"schema": ref(schema)}}
    return response


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


def _text(description: str, *media_types: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string"}} for media_type in media_types},
    }


#: How a bound token's refusals are told (RFC 9449, section 7.1).
_DPOP_REFUSED = (
    "A DPoP-bound token without a valid proof by its key, or a proof where none fits "
    "(`invalid_dpop_proof`, with `WWW-Authenticate: DPoP`)"
)
_AUTH_ERRORS = {
    "401": _problem(
        "No or bad token: `authorization_required`, `invalid_token`, `token_expired`, "
        f"`session_revoked`, `wrong_token_type`. {_DPOP_REFUSED}."
    ),
    "503": _problem(
        "The session store is unreachable (`store_unavailable`); fails closed.",
        retry_after=True,
    ),
}
#: A route that hashes a password: it may also be too busy to.
_HASHING_UNAVAILABLE = _problem(
    "The session store is unreachable (`store_unavailable`), or this process already "
    "runs as many password hashes as `SESSIONSVC_PASSWORD_HASHES` allows (`busy`, "
    "nothing checked); `Retry-After` says when to try again.",
    retry_after=True,
)
_BAD_REQUEST = {"400": _problem("Bad body or query value (`invalid_request`).")}
_NOT_FOUND = {"404": _problem("No such session of yours (`session_not_found`).")}
#: Who may answer "Was this you?" (docs/api.md, section 4).
_REVIEW_REFUSED = {
    "403": _problem(
        "The calling session is the one reviewed, or is awaiting review itself "
        "(`review_not_allowed`)."
    )
}
_TOO_LARGE = {"413": _problem(f"Body over {MAX_BODY // 1024} KiB (`payload_too_large`).")}


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_SESSION_ID = _path_parameter("session_id", "A session id from the list.")
#: Either scheme: a Bearer token, or a DPoP-bound one with its proof.
_BEARER: list[dict[str, Any]] = [{"bearer": []}, {"dpop": []}]
#: The proof a sign-in may carry to bind its tokens (RFC 9449).
_DPOP_PROOF = {
    "name": "DPoP",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "A DPoP proof (RFC 9449) for this request: the session's tokens are "
    "bound to its key (`token_type` `DPoP`). Required when `SESSIONSVC_DPOP` is `required`.",
}
_USER_ID = _path_parameter(
    "user_id", "The user's id (`sub`); the username in the standalone service."
)
_FORBIDDEN = {"403": _problem("The token has no admin role (`forbidden`).")}
#: An admin route's user id is in its path: one that is not UTF-8 names no user.
_ADMIN_BAD_REQUEST = {
    "400": _problem("Bad body or query value, or a path that is not UTF-8 (`invalid_request`).")
}
_ADMIN_ERRORS = {**_ADMIN_BAD_REQUEST, **_FORBIDDEN, **_AUTH_ERRORS}


def _limit(default: int, maximum: int) -> dict[str, Any]:
    """The ``limit`` query parameter of a listing."""
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return {"name": "limit", "in": "query", "required": False, "schema": schema}


_EVENTS_LIMIT = _limit(EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX)
_USER_NOT_FOUND = {"404": _problem("No such user (`user_not_found`).")}
#: A change of a user: it may also wait too long for the lock of user changes.
_USER_CHANGE_UNAVAILABLE = {
    "503": _problem(
        "The session store is unreachable (`store_unavailable`), or, for a change of an "
        "admin or one making an admin, another such change held their lock throughout a "
        f"{ADMIN_LOCK_WAIT:g} s wait (`busy`, nothing changed); `Retry-After` says when to "
        "try again.",
        retry_after=True,
    )
}
_LAST_ADMIN = {
    "409": _problem(
        "The user is the last admin who is not disabled; the change would leave none "
        "(`last_admin`). Nothing changed."
    )
}

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
        "parameters": [_SESSION_ID],
        "requestBody": _body("SessionName"),
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
    "confirm_session": {
        "tags": ["sessions"],
        "summary": "Confirm a flagged session was me",
        "description": '"Was this you?" - "Yes": the session\'s `review` becomes '
        "`confirmed` and `session.confirmed` is recorded; confirming it again changes "
        "nothing. An anomaly recorded later makes it `pending` again.",
        "security": _BEARER,
        "parameters": [_SESSION_ID],
        "responses": {
            "200": _ok("The session, `review` `confirmed`.", "Session"),
            **_REVIEW_REFUSED,
            **_NOT_FOUND,
            "409": _problem("The session has no risk flags (`nothing_to_review`)."),
            **_AUTH_ERRORS,
        },
    },
    "deny_session": {
        "tags": ["sessions"],
        "summary": "Say a flagged session was not me",
        "description": '"Was this you?" - "No": signs out that session and every '
        "other one of mine whose `review` is `pending`, never the calling one, each "
        "recorded as `session.revoked` with reason `denied`.",
        "security": _BEARER,
        "parameters": [_SESSION_ID],
        "responses": {
            "200": _ok("How many sessions were revoked.", "Revoked"),
            **_REVIEW_REFUSED,
            **_NOT_FOUND,
            **_AUTH_ERRORS,
        },
    },
    "revoke_other_sessions": {
        "tags": ["sessions"],
        "summary": "Sign out all my other sessions",
        "security": _BEARER,
        "parameters": [
            {
                "name": "include_current",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(BOOLEAN_VALUES)},
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
        "parameters": [_EVENTS_LIMIT],
        "responses": {"200": _ok("Events.", "EventList"), **_BAD_REQUEST, **_AUTH_ERRORS},
    },
    "login": {
        "tags": ["auth"],
        "summary": "Sign in: opens a session and returns its token pair",
        "parameters": [_DPOP_PROOF],
        "requestBody": _body("Credentials"),
        "responses": {
            "200": _ok("The new session's tokens.", "TokenPair"),
            "400": _problem(
                "Bad body (`invalid_request`); an invalid DPoP proof, or none where proofs "
                "are required (`invalid_dpop_proof`; no session opened)."
            ),
            "401": _problem("Wrong username or password (`invalid_credentials`)."),
            "403": _problem("The user is disabled (`user_disabled`; right password only)."),
            **_TOO_LARGE,
            "429": _problem(
                "Too many sign-in attempts from this address or for this username "
                "(`rate_limited`); `Retry-After` says when to try again.",
                retry_after=True,
            ),
            "503": _HASHING_UNAVAILABLE,
        },
    },
    "refresh": {
        "tags": ["auth"],
        "summary": "Rotate the refresh token (send the refresh token as Bearer, or bound "
        "with its DPoP proof)",
        "description": "The previous refresh token stops working; presenting it again "
        "revokes the whole session (`refresh_token_reused`).",
        "security": _BEARER,
        "responses": {
            "200": _ok("A new token pair for the same session.", "TokenPair"),
            "401": _problem(
                "`refresh_token_reused`, `session_revoked`, `wrong_token_type`, "
                "`token_expired`, `invalid_token`, `authorization_required`. "
                f"{_DPOP_REFUSED}: nothing is consumed."
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
    "change_password": {
        "tags": ["auth"],
        "summary": "Change my password: every other session is signed out",
        "description": "Records `password.changed`; the calling session stays. The new "
        "password is checked against the policy first, then the current one. Each attempt "
        "is counted towards the sign-in limit before its current password is checked, and "
        "given back unless that password was wrong.",
        "security": _BEARER,
        "requestBody": _body("PasswordChange"),
        "responses": {
            "200": _ok("How many other sessions were revoked.", "Revoked"),
            "400": _problem(
                "Bad body (`invalid_request`), or a new password the policy refuses "
                "(`weak_password`; `detail` names the rule: too short or too long, one of "
                "the 30,000 most common passwords, the username, or the current password)."
            ),
            **_TOO_LARGE,
            "401": _problem(
                "Wrong current password (`invalid_credentials`); no or bad token: "
                "`authorization_required`, `invalid_token`, `token_expired`, "
                "`session_revoked`, `wrong_token_type`."
            ),
            "429": _problem("Too many wrong passwords (`rate_limited`).", retry_after=True),
            "503": _HASHING_UNAVAILABLE,
        },
    },
    "admin_list_users": {
        "tags": ["admin"],
        "summary": "List the users of the user store by id (admin role; standalone service)",
        "description": "Ordered by id in UTF-8 byte order; a page starts strictly after "
        "the last id of the one before (`next_cursor`, `null` on the last page), so users "
        "created or deleted meanwhile never shift it.",
        "security": _BEARER,
        "parameters": [
            {
                "name": "prefix",
                "in": "query",
                "required": False,
                "description": "Only the ids that start with it (case-sensitive).",
                "schema": {"type": "string", "maxLength": MAX_USERNAME, "default": ""},
            },
            _limit(USERS_LIMIT_DEFAULT, USERS_LIMIT_MAX),
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "The `next_cursor` of the page before; opaque.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {"200": _ok("A page of users.", "UserPage"), **_ADMIN_ERRORS},
    },
    "admin_get_user": {
        "tags": ["admin"],
        "summary": "A user of the user store (admin role; standalone service)",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "responses": {"200": _ok("The user.", "User"), **_USER_NOT_FOUND, **_ADMIN_ERRORS},
    },
    "admin_update_user": {
        "tags": ["admin"],
        "summary": "Disable or enable a user, or set its roles (admin role)",
        "description": "Disabling revokes every session of the user (`user_disabled`); "
        "other roles revoke them too (`roles_changed`). Disabling or demoting the last "
        "admin is refused (409 `last_admin`).",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "requestBody": _body("UserChanges"),
        "responses": {
            "200": _ok("The user as it is now.", "User"),
            **_BAD_REQUEST,
            **_USER_NOT_FOUND,
            **_LAST_ADMIN,
            **_TOO_LARGE,
            **_ADMIN_ERRORS,
            **_USER_CHANGE_UNAVAILABLE,
        },
    },
    "admin_delete_user": {
        "tags": ["admin"],
        "summary": "Delete a user and every session of it (admin role)",
        "description": "Sessions are revoked with reason `user_deleted`; a user created "
        "again with the same name is another account and inherits nothing. Deleting the "
        "last admin is refused (409 `last_admin`).",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "responses": {
            "204": _ok("Deleted."),
            **_USER_NOT_FOUND,
            **_LAST_ADMIN,
            **_ADMIN_ERRORS,
            **_USER_CHANGE_UNAVAILABLE,
        },
    },
    "admin_list_user_sessions": {
        "tags": ["admin"],
        "summary": "List a user's sessions (admin role)",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "responses": {
            "200": _ok("The user's active sessions; `current` is false for all.", "SessionList"),
            **_ADMIN_ERRORS,
        },
    },
    "admin_list_user_events": {
        "tags": ["admin"],
        "summary": "A user's security events, newest first (admin role)",
        "description": "As the user's own listing; an unknown user has none.",
        "security": _BEARER,
        "parameters": [_USER_ID, _EVENTS_LIMIT],
        "responses": {"200": _ok("Events.", "EventList"), **_ADMIN_ERRORS},
    },
    "admin_revoke_user_sessions": {
        "tags": ["admin"],
        "summary": "Sign a user out everywhere (admin role)",
        "security": _BEARER,
        "parameters": [_USER_ID],
        "responses": {
            "200": _ok("How many sessions were revoked.", "Revoked"),
            **_ADMIN_ERRORS,
        },
    },
    "admin_revoke_user_session": {
        "tags": ["admin"],
        "summary": "Sign out one session of a user (admin role)",
        "security": _BEARER,
        "parameters": [_USER_ID, _SESSION_ID],
        "responses": {
            "204": _ok("Revoked."),
            "404": _problem("The user has no such session (`session_not_found`)."),
            **_ADMIN_ERRORS,
        },
    },
    "health": {
        "tags": ["service"],
        "summary": "Liveness: the process answers",
        "responses": {"200": _ok("Alive.", "Status")},
    },
    "readiness": {
        "tags": ["service"],
        "summary": "Readiness: the session store answers",
        "responses": {
            "200": _ok("Ready.", "Status"),
            "503": _problem("The store is unreachable (`store_unavailable`).", retry_after=True),
        },
    },
    "metrics": {
        "tags": ["service"],
        "summary": "Prometheus metrics (text exposition format)",
        "description": "Served unless `SESSIONSVC_METRICS` is off, and only to clients on "
        "loopback, or to any client that sends `Authorization: Bearer <SESSIONSVC_METRICS_TOKEN>` "
        "when that is set; otherwise 404 (`not_found`).",
        "responses": {
            "200": _text(
                "Prometheus text format; OpenMetrics when `Accept` asks for it.",
                "text/plain",
                "application/openmetrics-text",
            ),
            "404": _problem("Metrics are off, or not for this client (`not_found`)."),
        },
    },
    "account_page": {
        "tags": ["service"],
        "summary": "The account page: where you're signed in (HTML)",
        "description": "Signs in through `/api/v1/auth` and lists the caller's sessions with "
        "the sessions API; its script and stylesheet are at `/account/assets/`.",
        "responses": {"200": _text("The page.", "text/html")},
    },
    "console_page": {
        "tags": ["service"],
        "summary": "The admin console (HTML)",
        "description": "Signs in through `/api/v1/auth` and, for the callers the admin "
        "loader admits, finds users and shows and changes their records and sessions with the "
        "admin API; its script and stylesheet are at `/admin/assets/`.",
        "responses": {"200": _text("The page.", "text/html")},
    },
}
