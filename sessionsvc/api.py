"""The sessions blueprint: a user's own sessions and security events."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import get_jwt

from . import openapi, payloads, tokens
from .errors import InvalidRequest, SessionNotFound
from .models import MAX_NAME
from .payloads import no_content
from .state import current_manager

blueprint = Blueprint("sessionsvc", __name__)
blueprint.before_request(payloads.limit_body)


def _caller() -> tuple[str, str]:
    """The calling token's user id and session id."""
    return tokens.token_session(get_jwt())


@blueprint.get("")
@blueprint.get("/")
@tokens.token_required
@openapi.spec("list_sessions")
def list_sessions() -> Response:
    user_id, current = _caller()
    manager = current_manager()
    sessions = manager.list_for(user_id)
    return jsonify(
        {"sessions": [manager.session_json(s, current=s.id == current) for s in sessions]}
    )


@blueprint.get("/events")
@tokens.token_required
@openapi.spec("list_events")
def list_events() -> Response:
    user_id, _ = _caller()
    manager = current_manager()
    limit = payloads.query_int(request, "limit", 50, minimum=1, maximum=200)
    return jsonify({"events": [e.to_json() for e in manager.events_for(user_id, limit=limit)]})


@blueprint.get("/<session_id>")
@tokens.token_required
@openapi.spec("get_session")
def get_session(session_id: str) -> Response:
    user_id, current = _caller()
    manager = current_manager()
    session = manager.get(user_id, session_id)
    if session is None:
        raise SessionNotFound("No such session.")
    return jsonify(manager.session_json(session, current=session.id == current))


@blueprint.patch("/<session_id>")
@tokens.token_required
@openapi.spec("rename_session")
def rename_session(session_id: str) -> Response:
    user_id, current = _caller()
    manager = current_manager()
    body = payloads.json_object(request)
    if "name" not in body:
        raise InvalidRequest("'name' is required (a string, or null to clear it).")
    name = body["name"]
    if name is not None:
        if not isinstance(name, str):
            raise InvalidRequest("'name' must be a string or null.")
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
            raise InvalidRequest(f"'name' must be 1 to {MAX_NAME} printable characters.")
    session = manager.rename(user_id, session_id, name)
    if session is None:
        raise SessionNotFound("No such session.")
    return jsonify(manager.session_json(session, current=session.id == current))


@blueprint.delete("/<session_id>")
@tokens.token_required
@openapi.spec("revoke_session")
def revoke_session(session_id: str) -> Response:
    user_id, current = _caller()
    manager = current_manager()
    if not manager.revoke(user_id, session_id, reason="user", current=current):
        raise SessionNotFound("No such session.")
    return no_content()


@blueprint.delete("")
@blueprint.delete("/")
@tokens.token_required
@openapi.spec("revoke_sessions")
def revoke_sessions() -> Response:
    user_id, current = _caller()
    manager = current_manager()
    include_current = payloads.query_bool(request, "include_current", False)
    if include_current:
        count = manager.revoke_all(user_id, reason="others", current=current)
    else:
        count = manager.revoke_all(user_id, reason="others", keep=current)
    return jsonify({"revoked": count})
