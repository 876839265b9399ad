"""The admin blueprints, for the callers the app's admin loader admits
(:meth:`SessionManager.admin_loader`): any user's sessions, and (standalone
service) the users of the user store. Mounted only when the app turns them on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from flask_jwt_extended import get_jwt, get_jwt_identity

from . import accounts, audit_query, openapi, payloads, tokens
from .errors import Forbidden, SessionNotFound
from .models import EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX, USERS_LIMIT_DEFAULT, USERS_LIMIT_MAX
from .payloads import no_content
from .state import current_manager

logger = logging.getLogger("sessionsvc")

URL_PREFIX = "/api/v1/admin"

#: ``callback(user_id, claims) -> bool``: see :meth:`SessionManager.admin_loader`.
AdminLoader = Callable[[str, dict[str, Any]], bool]

#: The role the standalone service's tokens carry in ``roles`` for its admins.
ADMIN_ROLE = accounts.ADMIN_ROLE

blueprint = Blueprint("sessionsvc_admin", __name__)
#: The user store's users (the standalone service mounts it).
users = Blueprint("sessionsvc_admin_users", __name__)
#: The audit trail's reading (mounted only with ``SESSIONSVC_AUDIT_URL``).
audit_trail = Blueprint("sessionsvc_admin_audit", __name__)
for _admin in (blueprint, users, audit_trail):
    _admin.before_request(payloads.limit_body)
    # Before the token check: a user id that is not UTF-8 names no user.
    _admin.before_request(payloads.utf8_path)
    _admin.after_request(payloads.no_store)


def register(app: Flask, *, with_users: bool, with_audit: bool) -> None:
    """Mount the admin routes on ``app``; ``with_users``: the user store's
    too; ``with_audit``: the audit trail's (off, its path is one the app
    does not route, left out of the OpenAPI document as well)."""
    app.register_blueprint(blueprint, url_prefix=URL_PREFIX)
    if with_users:
        app.register_blueprint(users, url_prefix=URL_PREFIX)
    if with_audit:
        app.register_blueprint(audit_trail, url_prefix=URL_PREFIX)


def holds_admin_role(user_id: str, claims: dict[str, Any]) -> bool:
    """The standalone service's admin loader: the access token's ``roles``
    claim holds ``admin``. Its login and refresh put the user store's roles
    there, as they are at that moment; another app's claims are its own."""
    roles = claims.get("roles")
    return isinstance(roles, list) and ADMIN_ROLE in roles


#: Whether this process has logged that no admin loader is registered.
_told_no_loader = False


def _require_admin() -> None:
    """Refuse (403) unless the app's admin loader returns ``True`` for the token.

    Without a loader no one is an admin (fail closed): the loader is
    registered after ``init_app``, so this is only known now, and the first
    refusal of the process logs the fix.
    """
    global _told_no_loader
    loader = current_manager().admin_callback
    if loader is None and not _told_no_loader:
        _told_no_loader = True
        logger.error(
            "the admin routes are on but no admin loader is registered, so no one is an "
            "admin: decorate a function (user_id, claims) -> bool with @sessions.admin_loader"
        )
    if loader is None or loader(get_jwt_identity(), get_jwt()) is not True:
        raise Forbidden("This route is for admins only.")


@blueprint.get("/users/<user_id>/sessions")
@tokens.token_required
@openapi.spec("admin_list_user_sessions")
def list_user_sessions(user_id: str) -> Response:
    _require_admin()
    manager = current_manager()
    return jsonify({"sessions": [manager.session_json(s) for s in manager.list_for(user_id)]})


@blueprint.delete("/users/<user_id>/sessions")
@tokens.token_required
@openapi.spec("admin_revoke_user_sessions")
def revoke_user_sessions(user_id: str) -> Response:
    _require_admin()
    return jsonify({"revoked": current_manager().revoke_all(user_id, reason="admin")})


@blueprint.delete("/users/<user_id>/sessions/<session_id>")
@tokens.token_required
@openapi.spec("admin_revoke_user_session")
def revoke_user_session(user_id: str, session_id: str) -> Response:
    _require_admin()
    if not current_manager().revoke(user_id, session_id, reason="admin"):
        raise SessionNotFound("No such session.")
    return no_content()


@blueprint.get("/users/<user_id>/events")
@tokens.token_required
@openapi.spec("admin_list_user_events")
def list_user_events(user_id: str) -> Response:
    _require_admin()
    limit = payloads.query_int(
        request, "limit", EVENTS_LIMIT_DEFAULT, minimum=1, maximum=EVENTS_LIMIT_MAX
    )
    events = current_manager().events_for(user_id, limit=limit)
    return jsonify({"events": [event.to_json() for event in events]})


@audit_trail.get("/audit")
@tokens.token_required
@openapi.spec("admin_audit")
def read_audit_trail() -> Response:
    _require_admin()
    filters, limit, cursor = audit_query.query(request)
    events, next_cursor = audit_query.reader().page(filters, limit, cursor)
    return jsonify({"events": events, "next_cursor": next_cursor})


@users.get("/users")
@tokens.token_required
@openapi.spec("admin_list_users")
def list_users() -> Response:
    _require_admin()
    prefix = payloads.query_text(request, "prefix", max_length=payloads.MAX_USERNAME)
    limit = payloads.query_int(
        request, "limit", USERS_LIMIT_DEFAULT, minimum=1, maximum=USERS_LIMIT_MAX
    )
    found, after = accounts.page(prefix, payloads.query_cursor(request), limit)
    return jsonify(
        {
            "users": [user.to_json() for user in found],
            "next_cursor": None if after is None else payloads.page_cursor(after),
        }
    )


@users.get("/users/<user_id>")
@tokens.token_required
@openapi.spec("admin_get_user")
def get_user(user_id: str) -> Response:
    _require_admin()
    return jsonify(accounts.get(user_id).to_json())


@users.patch("/users/<user_id>")
@tokens.token_required
@openapi.spec("admin_update_user")
def update_user(user_id: str) -> Response:
    _require_admin()
    disabled, roles = payloads.user_changes(payloads.json_object(request))
    return jsonify(accounts.update(user_id, disabled=disabled, roles=roles).to_json())


@users.delete("/users/<user_id>")
@tokens.token_required
@openapi.spec("admin_delete_user")
def delete_user(user_id: str) -> Response:
    _require_admin()
    accounts.delete(user_id)
    return no_content()
