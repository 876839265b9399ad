"""The admin blueprints, for tokens with the ``admin`` role: any user's
sessions, and (standalone service) the users of the user store."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import get_jwt

from . import accounts, openapi, payloads, tokens
from .errors import Forbidden, SessionNotFound
from .payloads import no_content
from .state import current_manager

URL_PREFIX = "/api/v1/admin"

#: The role an access token's ``roles`` claim must hold.
ADMIN_ROLE = accounts.ADMIN_ROLE

blueprint = Blueprint("sessionsvc_admin", __name__)
#: The user store's users (the standalone service mounts it).
users = Blueprint("sessionsvc_admin_users", __name__)
for _admin in (blueprint, users):
    _admin.before_request(payloads.limit_body)
    _admin.after_request(payloads.no_store)


def _require_admin() -> None:
    roles = get_jwt().get("roles")
    if not isinstance(roles, list) or ADMIN_ROLE not in roles:
        raise Forbidden("This route needs a token with the admin role.")


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
