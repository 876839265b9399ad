"""The flask-jwt-extended wiring: revocation check and error answers.

flask-jwt-extended keeps one callback per slot on its ``JWTManager``;
:func:`bind` fills the slots that decide whether a token is accepted and how
a rejected one is answered. A host app that needs its own blocklist logic as
well composes it with :meth:`SessionManager.is_revoked`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, g
from flask_jwt_extended import JWTManager, jwt_required
from flask_jwt_extended.default_callbacks import default_blocklist_callback
from flask_jwt_extended.exceptions import InvalidHeaderError, WrongTokenError

from .errors import (
    AuthorizationRequired,
    InvalidToken,
    SessionRevoked,
    TokenExpired,
    WrongTokenType,
    error_response,
)

F = TypeVar("F", bound=Callable[..., Any])

#: What our session ids look like: ``secrets.token_urlsafe(16)``.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")

#: Claims flask-jwt-extended and we set ourselves; everything else a token
#: carries (``roles``, say) is handed on when a refresh rotates it.
RESERVED_CLAIMS = frozenset(
    {"sub", "sid", "jti", "type", "fresh", "iat", "nbf", "exp", "csrf", "iss", "aud"}
)


def is_session_id(value: Any) -> bool:
    """Whether ``value`` could be one of our session ids."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None


def token_session(payload: dict[str, Any]) -> tuple[str, str]:
    """The ``(user id, session id)`` a decoded token belongs to.

    :raises InvalidToken: when the token carries no usable ``sid``.
    """
    user_id, session_id = payload.get("sub"), payload.get("sid")
    if not isinstance(user_id, str) or not user_id or not isinstance(session_id, str):
        raise InvalidToken("The token does not belong to a session.")
    if not is_session_id(session_id):
        raise InvalidToken("The token does not belong to a session.")
    return user_id, session_id


class RevocationCheckBypassed(RuntimeError):
    """The app's JWT set-up no longer runs our revocation check: fail closed."""


def mark_checked() -> None:
    """Record that this request's token went through the revocation check."""
    g._sessionsvc_checked = True


def token_required(view: F) -> F:
    """``jwt_required()`` for an access token, and proof that the session was checked.

    If a host app replaced our blocklist loader with one that does not call
    :meth:`SessionManager.is_revoked`, our routes refuse to answer rather
    than serve a revoked session.
    """

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not g.get("_sessionsvc_checked"):
            raise RevocationCheckBypassed(
                "the token_in_blocklist_loader does not call SessionManager.is_revoked()"
            )
        return view(*args, **kwargs)

    return cast(F, jwt_required()(checked))


def has_blocklist_loader(jwt: JWTManager) -> bool:
    """Whether someone already filled flask-jwt-extended's blocklist slot."""
    return jwt._token_in_blocklist_callback is not default_blocklist_callback


def guard(app: Flask, jwt: JWTManager) -> None:
    """Fail closed if a later ``JWTManager(app)`` replaces the one we bound.

    A second manager would carry none of our callbacks, so every token would
    pass without a revocation check.
    """

    @app.before_request
    def _same_manager() -> None:
        if app.extensions.get("flask-jwt-extended") is not jwt:
            raise RevocationCheckBypassed(
                "a JWTManager was created after SessionManager.init_app; create it before"
            )


def bind(
    app: Flask,
    jwt: JWTManager,
    is_revoked: Callable[[dict[str, Any], dict[str, Any]], bool],
) -> None:
    """Install the revocation check and the problem-document error answers.

    Must run after ``jwt.init_app(app)``: the handlers for wrong token types
    and malformed headers replace the ones it registered.
    """
    jwt.token_in_blocklist_loader(is_revoked)

    @jwt.unauthorized_loader
    def _missing(reason: str) -> Response:
        return error_response(AuthorizationRequired(reason))

    @jwt.invalid_token_loader
    def _invalid(reason: str) -> Response:
        return error_response(InvalidToken(reason))

    @jwt.expired_token_loader
    def _expired(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return error_response(TokenExpired("The token has expired."))

    @jwt.revoked_token_loader
    def _revoked(header: dict[str, Any], payload: dict[str, Any]) -> Response:
        return error_response(SessionRevoked("The token's session was signed out or has expired."))

    # flask-jwt-extended sends these to the invalid-token callback as a bare
    # string; the spec gives each its own code.
    @app.errorhandler(WrongTokenError)
    def _wrong_type(error: WrongTokenError) -> Response:
        return error_response(WrongTokenType(str(error)))

    @app.errorhandler(InvalidHeaderError)
    def _bad_header(error: InvalidHeaderError) -> Response:
        return error_response(AuthorizationRequired(str(error)))
