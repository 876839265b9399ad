"""The admin blueprint: any user's sessions, for tokens with the ``admin`` role."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask_jwt_extended import get_jwt

from . import openapi, payloads, tokens
from .errors import Forbidden, SessionNotFound
from .payloads import no_content
from .state import current_manager

URL_PREFIX = "/api/v1/admin"

#: The role an access token's ``roles`` claim must hold.
ADMIN_ROLE = "admin"

blueprint = Blueprint("sessionsvc_admin", __name__)
blueprint.before_request(payloads.limit_body)
blueprint.after_request(payloads.no_store)


def _require_admin() -> None:
    roles = get_jwt().get("roles")
    if not isinstance(roles, list) or ADMIN_ROLE not in roles:
        raise Forbidden("This route needs a token with the admin role.")


@blueprint.get("/users/<user_id>/sessions")
@tokens.token_required
@openapi.spec("admin_list_sessions")
def list_user_sessions(user_id: str) -> Response:
    _require_admin()
    manager = current_manager()
    return jsonify({"sessions": [manager.session_json(s) for s in manager.list_for(user_id)]})


@blueprint.delete("/users/<user_id>/sessions")
@tokens.token_required
@openapi.spec("admin_revoke_sessions")
def revoke_user_sessions(user_id: str) -> Response:
    _require_admin()
    return jsonify({"revoked": current_manager().revoke_all(user_id, reason="admin")})


@blueprint.delete("/users/<user_id>/sessions/<session_id>")
@tokens.token_required
@openapi.spec("admin_revoke_session")
def revoke_user_session(user_id: str, session_id: str) -> Response:
    _require_admin()
    if not current_manager().revoke(user_id, session_id, reason="admin"):
        raise SessionNotFound("No such session.")
    return no_content()
