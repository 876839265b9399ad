"""The flask-jwt-extended wiring: revocation check and error answers.

flask-jwt-extended keeps one callback per slot on its ``JWTManager``;
:func:`bind` fills the one that decides whether a token is accepted (the
blocklist check), and answers rejected tokens on sessionsvc's own paths
through error handlers, leaving the host's callbacks to answer on the
host's paths. A host app that needs its own blocklist logic as well
composes it with :meth:`SessionManager.is_revoked`.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    jwt_required,
)
from flask_jwt_extended.default_callbacks import (
    default_blocklist_callback,
)
from flask_jwt_extended.exceptions import (
    CSRFError,
    InvalidHeaderError,
    InvalidQueryParamError,
    JWTDecodeError,
    NoAuthorizationError,
    RevokedTokenError,
    UserClaimsVerificationError,
    UserLookupError,
    WrongTokenError,
)
from jwt import (
    DecodeError,
    ExpiredSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from . import token_cache
from .errors import (
    AuthorizationRequired,
    InvalidToken,
    RefreshTokenReused,
    SessionRevoked,
    SessionsvcError,
    TokenExpired,
    WrongTokenType,
    answer_ours_first,
    error_response,
)
from .models import TokenPair
from .settings import ConfigError, Settings
from .state import EXTENSION_KEY

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("sessionsvc")

#: What our session ids look like: ``secrets.token_urlsafe(16)``.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")

#: Claims flask-jwt-extended and we set ourselves; everything else a token
#: carries (``roles``, say) is handed on when a refresh rotates it.
RESERVED_CLAIMS = frozenset(
    {"sub", "sid", "jti", "type", "fresh", "iat", "nbf", "exp", "csrf", "iss", "aud", "cnf"}
)


def extra_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """``claims`` without the reserved ones (:data:`RESERVED_CLAIMS`): what a
    host's claims, or a token's, may hand on to a new token pair."""
    return {k: v for k, v in claims.items() if k not in RESERVED_CLAIMS}


def is_session_id(value: Any) -> bool:
    """Whether ``value`` could be one of our session ids."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None


def token_session(payload: dict[str, Any]) -> tuple[str, str]:
    """The ``(user id, session id)`` a decoded token belongs to.

    :raises InvalidToken: when the token carries no usable ``sid``.
    """
    user_id, session_id = payload.get("sub"), payload.get("sid")
    if "sid" not in payload:
        _explain_sessionless_token()
    if not isinstance(user_id, str) or not user_id or not isinstance(session_id, str):
        raise InvalidToken("The token does not belong to a session.")
    if not is_session_id(session_id):
        raise InvalidToken("The token does not belong to a session.")
    return user_id, session_id


@functools.cache
def _explain_sessionless_token() -> None:
    """Say once per process why a validly signed token without ``sid`` fails.

    Such a token was made with ``create_access_token`` (or another issuer):
    refused as it must be, but the 401 alone leaves a host app's developer
    guessing. Once, so a client retrying it cannot fill the log.
    """
    logger.warning(
        "refused a validly signed token without a session id ('sid' claim): tokens for "
        "sessionsvc come from sessions.open(user_id) (or rotate() on refresh), not "
        "create_access_token(); this is said once per process"
    )


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


#: Smallest HMAC key per algorithm: as long as the hash (RFC 7518, section 3.2).
_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_ASYMMETRIC = re.compile(r"(RS|PS|ES)(256|384|512)|ES256K|EdDSA")


def check_signing(config: Mapping[str, Any], *, strict: bool) -> list[str]:
    """Refuse a token set-up that lets tokens be forged; return the warnings.

    Tokens are signed with one pinned algorithm: ``none`` is refused, and so is
    accepting another family of algorithms than the one that signs (an RSA
    public key used as an HMAC secret forges tokens). An HMAC key must be at
    least as long as the hash; with ``strict=False`` (debug or testing) a
    short one is only a warning.

    :raises ConfigError: naming the key at fault.
    """
    algorithm = config.get("JWT_ALGORITHM", "HS256")
    decode = config.get("JWT_DECODE_ALGORITHMS") or [algorithm]
    if not isinstance(decode, (list, tuple)) or not all(isinstance(a, str) for a in decode):
        raise ConfigError(f"JWT_DECODE_ALGORITHMS must be a list of names, got {decode!r}")
    named = [("JWT_ALGORITHM", algorithm), *(("JWT_DECODE_ALGORITHMS", a) for a in decode)]
    for name, value in named:
        known = isinstance(value, str) and (
            value in _HMAC_KEY_BYTES or _ASYMMETRIC.fullmatch(value)
        )
        if not known:
            raise ConfigError(f"{name}: {value!r} is not an algorithm tokens may be signed with")
    if any((a in _HMAC_KEY_BYTES) != (algorithm in _HMAC_KEY_BYTES) for a in decode):
        raise ConfigError(
            "JWT_DECODE_ALGORITHMS mixes HMAC and public-key algorithms: a public key "
            "could then be used as an HMAC secret to forge tokens"
        )
    if algorithm not in _HMAC_KEY_BYTES:
        if not config.get("JWT_PRIVATE_KEY") or not config.get("JWT_PUBLIC_KEY"):
            raise ConfigError(f"JWT_PRIVATE_KEY and JWT_PUBLIC_KEY must be set for {algorithm}")
        return []
    key = config.get("JWT_SECRET_KEY") or config.get("SECRET_KEY")
    if not key:
        raise ConfigError("JWT_SECRET_KEY must be set to sign tokens")
    size = len(key.encode("utf-8") if isinstance(key, str) else bytes(key))
    needed = _HMAC_KEY_BYTES[algorithm]
    if size >= needed:
        return []
    message = (
        f"JWT_SECRET_KEY is too short for {algorithm}: {size} bytes, at least {needed} are "
        "needed (e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )
    if strict:
        raise ConfigError(message)
    return [message + "; accepted only because the app is in debug or testing mode"]


def has_blocklist_loader(jwt: JWTManager) -> bool:
    """Whether someone else already filled flask-jwt-extended's blocklist slot
    (sessionsvc's own, from another app of the same manager, is no one else)."""
    loader = jwt._token_in_blocklist_callback
    return loader is not default_blocklist_callback and not getattr(loader, "sessionsvc", False)


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


def authorization_environ_key(app: Flask) -> str:
    """The WSGI environ key of the header the app reads its token from
    (``JWT_HEADER_NAME``, ``Authorization``)."""
    name: str = app.config.get("JWT_HEADER_NAME", "Authorization")
    return "HTTP_" + name.upper().replace("-", "_")


def _case_insensitive_scheme(app: Flask, owns: Callable[[], bool]) -> None:
    """Accept the header's scheme name in any case (RFC 9110, section 11.1).

    flask-jwt-extended compares ``JWT_HEADER_TYPE`` (``Bearer``) exactly; a
    client that sends ``bearer`` to one of our paths gets its scheme
    rewritten before any view (or ``jwt_required``) reads the header. The
    host's own paths see the header as it came.
    """
    scheme = app.config.get("JWT_HEADER_TYPE", "Bearer")
    if not scheme:
        return
    environ_key = authorization_environ_key(app)
    exact = scheme + " "
    # Each comma-separated credential, as flask-jwt-extended splits them.
    other_case = re.compile(rf"(^\s*|,\s*){re.escape(scheme)}(?=\s)", re.IGNORECASE)

    @app.before_request
    def _scheme_in_any_case() -> None:
        environ = request.environ
        value = environ.get(environ_key)
        if value and not value.startswith(exact) and owns():
            environ[environ_key] = other_case.sub(lambda m: m.group(1) + scheme, value)


def bind(app: Flask, jwt: JWTManager, owns: Callable[[], bool]) -> None:
    """Install the revocation check and the problem-document error answers.

    flask-jwt-extended's own callback slots (``expired_token_loader``,
    ``invalid_token_loader``, ``unauthorized_loader``, ``revoked_token_loader``
    and the rest) stay the host's: sessionsvc answers the errors they answer
    through error handlers of its own, which render problem documents on the
    paths it owns and hand every other request to the handler that was there
    before (flask-jwt-extended's, which calls the host's callback or its
    default). Must run after ``jwt.init_app(app)``.

    :param owns: tells, inside a request, whether the request is sessionsvc's.
    """
    jwt.token_in_blocklist_loader(_session_check(owns))
    token_cache.cache_verified_tokens(jwt)
    _case_insensitive_scheme(app, owns)
    _answer_token_errors(app, owns)


def _session_check(owns: Callable[[], bool]) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    """The blocklist loader: the current app's :meth:`SessionManager.is_revoked`.

    The app's, not one manager's: a host's ``JWTManager`` made once and
    ``init_app``-ed on every app of a factory keeps one loader for them all.
    An app of that manager without sessionsvc has nothing revoked. On the
    host's routes a token that belongs to no session, and a refresh token
    presented again (its session is revoked by then), are revoked tokens:
    the host's ``revoked_token_loader`` answers them, as it answers a
    signed-out session. sessionsvc's routes keep their own codes for both.
    """

    def check(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        state = current_app.extensions.get(EXTENSION_KEY)
        if state is None:
            return False
        try:
            return bool(state.manager.is_revoked(jwt_header, jwt_payload))
        except (InvalidToken, RefreshTokenReused):
            if owns():
                raise
            return True

    check.sessionsvc = True  # type: ignore[attr-defined]  # see has_blocklist_loader
    return check


def _invalid(error: Exception) -> SessionsvcError:
    return InvalidToken(str(error))


def _unauthorized(error: Exception) -> SessionsvcError:
    return AuthorizationRequired(str(error))


#: How sessionsvc's routes answer each error ``JWTManager.init_app`` registers
#: a handler for (but ``FreshTokenRequired``: no route of ours asks for one).
_TOKEN_ERRORS: dict[type[Exception], Callable[[Exception], SessionsvcError]] = {
    NoAuthorizationError: _unauthorized,
    CSRFError: _unauthorized,
    # flask-jwt-extended sends these two to the invalid-token callback as a
    # bare string; docs/api.md gives each its own code.
    InvalidHeaderError: _unauthorized,
    WrongTokenError: lambda error: WrongTokenType(str(error)),
    ExpiredSignatureError: lambda error: TokenExpired("The token has expired."),
    RevokedTokenError: lambda error: SessionRevoked(
        "The token's session was signed out or has expired."
    ),
    # The host's user_lookup_loader and token_verification_loader run on our
    # routes too (in jwt_required); what they refuse is an invalid token here.
    UserLookupError: lambda error: InvalidToken("The token's user could not be loaded."),
    UserClaimsVerificationError: lambda error: InvalidToken(
        "The token's claims failed the app's verification."
    ),
    DecodeError: _invalid,
    InvalidTokenError: _invalid,
    MissingRequiredClaimError: _invalid,
    InvalidAudienceError: _invalid,
    InvalidIssuerError: _invalid,
    JWTDecodeError: _invalid,
    InvalidQueryParamError: _invalid,
}


def _answer_token_errors(app: Flask, owns: Callable[[], bool]) -> None:
    """Answer token errors as problem documents on our paths, the host's way elsewhere.

    Each keeps the handler it wraps (flask-jwt-extended's, which calls the
    slot's callback at the time, so callbacks the host registers later are
    honoured too; or the host's own handler, registered before or after
    ``init_app``: see :func:`~sessionsvc.errors.answer_ours_first`).
    """
    for error_class, problem_of in _TOKEN_ERRORS.items():
        answer_ours_first(app, owns, error_class, _problem_answer(problem_of))


def _problem_answer(
    problem_of: Callable[[Exception], SessionsvcError],
) -> Callable[[Exception], Response]:
    return lambda error: error_response(problem_of(error))


def token_pair(
    user_id: str,
    session_id: str,
    refresh_jti: str | None,
    settings: Settings,
    extra: dict[str, Any],
    refresh_lifetime: int,
    *,
    jkt: str | None = None,
) -> TokenPair:
    """A new token pair of a session: both carry ``sid`` and the extra claims
    (but the reserved ones, which only this sets), and with ``jkt`` the key
    they are bound to (``cnf``, RFC 9449)."""
    claims = {**extra_claims(extra), "sid": session_id}
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    access = create_access_token(
        identity=user_id,
        # 128 random bits in 22 characters instead of a 36-character UUID:
        # every request decodes the token, so its length is paid per request.
        additional_claims={**claims, "jti": secrets.token_urlsafe(16)},
        expires_delta=timedelta(seconds=settings.access_expires),
    )
    refresh = create_refresh_token(
        identity=user_id,
        additional_claims={**claims, "jti": refresh_jti},
        expires_delta=timedelta(seconds=refresh_lifetime),
    )
    token_type = "DPoP" if jkt is not None else "Bearer"
    return TokenPair(access, refresh, settings.access_expires, session_id, token_type)
