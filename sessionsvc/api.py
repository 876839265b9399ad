"""The sessions blueprint: a user's own sessions and security events."""

from __future__ import annotations

from flask import Blueprint, Response, has_request_context, jsonify, request
from flask_jwt_extended import get_jwt

from . import openapi, payloads, reviews, tokens
from .errors import SessionNotFound
from .models import EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX, Session
from .payloads import no_content
from .state import current_manager

blueprint = Blueprint("sessionsvc", __name__)
blueprint.before_request(payloads.limit_body)
blueprint.after_request(payloads.no_store)


def _caller() -> tuple[str, str]:
    """The calling token's user id and session id."""
    return tokens.token_session(get_jwt())


def _session_answer(session: Session | None, current: str) -> Response:
    """A session of the caller's as the API's Session object; ``None`` is 404."""
    if session is None:
        raise SessionNotFound("No such session.")
    return jsonify(current_manager().session_json(session, current=session.id == current))


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
    limit = payloads.query_int(
        request, "limit", EVENTS_LIMIT_DEFAULT, minimum=1, maximum=EVENTS_LIMIT_MAX
    )
    return jsonify({"events": [e.to_json() for e in manager.events_for(user_id, limit=limit)]})


def asks_for_session(session_id: str) -> bool:
    """Whether this request reads session ``session_id`` (``GET /<id>``): the
    revocation check then reads the whole session once, for the view too."""
    return (
        has_request_context()
        and request.endpoint == f"{blueprint.name}.get_session"
        and request.view_args is not None
        and request.view_args.get("session_id") == session_id
    )


@blueprint.get("/<session_id>")
@tokens.token_required
@openapi.spec("get_session")
def get_session(session_id: str) -> Response:
    user_id, current = _caller()
    return _session_answer(current_manager().get(user_id, session_id), current)


@blueprint.patch("/<session_id>")
@tokens.token_required
@openapi.spec("rename_session")
def rename_session(session_id: str) -> Response:
    user_id, current = _caller()
    name = payloads.session_name(payloads.json_object(request))
    return _session_answer(current_manager().rename(user_id, session_id, name), current)


@blueprint.post("/<session_id>/confirm")
@tokens.token_required
@openapi.spec("confirm_session")
def confirm_session(session_id: str) -> Response:
    user_id, current = _caller()
    return _session_answer(reviews.confirm(user_id, session_id, caller=current), current)


@blueprint.post("/<session_id>/deny")
@tokens.token_required
@openapi.spec("deny_session")
def deny_session(session_id: str) -> Response:
    user_id, current = _caller()
    return jsonify({"revoked": reviews.deny(user_id, session_id, caller=current)})


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
@openapi.spec("revoke_other_sessions")
def revoke_sessions() -> Response:
    user_id, current = _caller()
    manager = current_manager()
    include_current = payloads.query_bool(request, "include_current", False)
    if include_current:
        count = manager.revoke_all(user_id, reason="others", current=current)
    else:
        count = manager.revoke_all(user_id, reason="others", keep=current)
    return jsonify({"revoked": count})
