"""The standalone service's auth routes: login, refresh, logout."""

from __future__ import annotations

from flask import Blueprint, Request, Response, jsonify, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from . import accounts, binding, openapi, passwords, payloads, tokens
from .errors import InvalidRequest
from .payloads import MAX_USERNAME, no_content
from .state import current_manager, current_state

URL_PREFIX = "/api/v1/auth"

blueprint = Blueprint("sessionsvc_auth", __name__)
blueprint.before_request(payloads.limit_body)
blueprint.after_request(payloads.no_store)


def attempted_username(request: Request) -> str | None:
    """The username a login request names, read as :func:`login` reads it.

    ``None`` when the view will refuse the body (or the name is empty). Never
    raises: the rate limiter calls it before the view, which then answers a
    bad body with the usual problem document.
    """
    try:
        body = payloads.json_object(request)
        return payloads.string_field(body, "username", max_length=MAX_USERNAME) or None
    except (InvalidRequest, RequestEntityTooLarge, ClientDisconnected):
        return None


@blueprint.post("/login")
@openapi.spec("login")
def login() -> Response:
    body = payloads.json_object(request)
    username = payloads.string_field(body, "username", max_length=MAX_USERNAME)
    password = payloads.string_field(body, "password", max_length=passwords.MAX_LENGTH)
    # An invalid DPoP proof is refused before the password is hashed.
    binding.sign_in_proof(current_state().settings)
    return jsonify(accounts.sign_in(username, password).to_json())


@blueprint.post("/refresh")
@openapi.spec("refresh")
def refresh() -> Response:
    # The revocation check is skipped here only because rotate() does it,
    # atomically with the rotation: two refreshes with one token cannot both win.
    verify_jwt_in_request(refresh=True, skip_revocation_check=True)
    return jsonify(current_manager().rotate(get_jwt()).to_json())


@blueprint.post("/password")
@tokens.token_required
@openapi.spec("change_password")
def change_password() -> Response:
    user_id, session_id = tokens.token_session(get_jwt())
    body = payloads.json_object(request)
    current = payloads.string_field(body, "current_password", max_length=passwords.MAX_LENGTH)
    new = payloads.string_field(body, "new_password", max_length=passwords.MAX_LENGTH * 4)
    return jsonify({"revoked": accounts.change_password(user_id, current, new, keep=session_id)})


@blueprint.post("/logout")
@tokens.token_required
@openapi.spec("logout")
def logout() -> Response:
    user_id, session_id = tokens.token_session(get_jwt())
    current_manager().revoke(user_id, session_id, reason="logout", current=session_id)
    return no_content()
