"""The flask-jwt-extended wiring: revocation check and error answers.

flask-jwt-extended keeps one callback per slot on its ``JWTManager``;
:func:`bind` fills the slots that decide whether a token is accepted and how
a rejected one is answered. A host app that needs its own blocklist logic as
well composes it with :meth:`SessionManager.is_revoked`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import JWTManager, jwt_required
from flask_jwt_extended.default_callbacks import (
    default_blocklist_callback,
    default_decode_key_callback,
)
from flask_jwt_extended.exceptions import InvalidHeaderError, WrongTokenError

from .errors import (
    AuthorizationRequired,
    InvalidToken,
    SessionRevoked,
    TokenExpired,
    WrongTokenType,
    error_response,
)
from .settings import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("sessionsvc")

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


def _case_insensitive_scheme(app: Flask) -> None:
    """Accept the header's scheme name in any case (RFC 9110, section 11.1).

    flask-jwt-extended compares ``JWT_HEADER_TYPE`` (``Bearer``) exactly; a
    client that sends ``bearer`` gets its scheme rewritten before any view
    (or ``jwt_required``) reads the header.
    """
    scheme = app.config.get("JWT_HEADER_TYPE", "Bearer")
    if not scheme:
        return
    environ_key = "HTTP_" + app.config.get("JWT_HEADER_NAME", "Authorization").upper().replace(
        "-", "_"
    )
    exact = scheme + " "
    # Each comma-separated credential, as flask-jwt-extended splits them.
    other_case = re.compile(rf"(^\s*|,\s*){re.escape(scheme)}(?=\s)", re.IGNORECASE)

    @app.before_request
    def _scheme_in_any_case() -> None:
        environ = request.environ
        value = environ.get(environ_key)
        if value and not value.startswith(exact):
            environ[environ_key] = other_case.sub(lambda m: m.group(1) + scheme, value)


#: The config keys a token's verification depends on: when any changes
#: (a new signing key, say), the verified-token cache is emptied.
_VERIFYING_KEYS = (
    "JWT_SECRET_KEY",
    "SECRET_KEY",
    "JWT_PUBLIC_KEY",
    "JWT_ALGORITHM",
    "JWT_DECODE_ALGORITHMS",
    "JWT_DECODE_AUDIENCE",
    "JWT_DECODE_ISSUER",
    "JWT_DECODE_LEEWAY",
    "JWT_IDENTITY_CLAIM",
    "JWT_VERIFY_SUB",
)
#: What flask-jwt-extended's decode step looks like, which the cache wraps.
_DECODE_PARAMETERS = ["self", "encoded_token", "csrf_value", "allow_expired"]


class VerifiedTokens:
    """A bounded cache of tokens this process verified, by their exact text.

    flask-jwt-extended decodes every token twice per request and PyJWT
    checks its base64 in Python each time; a token is verified once and
    then looked up. Only a token that passed verification enters; a hit is
    refused once the token's ``exp`` (or before its ``nbf``) is passed, by
    the app's leeway, so that the full decode raises the error it would;
    the claims come back as a new object each time (stored as JSON), so a
    view that changes them changes nothing here. The revocation check runs
    on every request, hit or not.

    :param maxsize: tokens kept; beyond it the oldest is dropped.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._entries: dict[str, tuple[str, float, float, tuple[Any, ...]]] = {}
        self._fingerprint: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        #: Lookups answered from the cache (for tests and curiosity).
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, fingerprint: tuple[Any, ...]) -> dict[str, Any] | None:
        """The claims of a verified token still valid now, or ``None``."""
        if fingerprint != self._fingerprint:
            with self._lock:
                self._entries.clear()
                # A copy: a list changed in place (an audience removed) must
                # compare unequal next time.
                self._fingerprint = copy.deepcopy(fingerprint)
            return None
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, not_after, not_before, verified_with = entry
        if verified_with != fingerprint:
            # Verified under other settings (another app on the same
            # manager, between the check above and this read).
            return None
        now = time.time()
        if now >= not_after or now < not_before:
            with self._lock:
                self._entries.pop(token, None)
            return None
        self.hits += 1
        loaded: dict[str, Any] = json.loads(claims)
        return loaded

    def put(self, token: str, fingerprint: tuple[Any, ...], claims: dict[str, Any]) -> None:
        """Keep a token that just passed verification."""
        leeway = _seconds(current_app.config.get("JWT_DECODE_LEEWAY") or 0)
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return  # a token that never expires is decoded every time
        try:
            # As PyJWT compares them: whole seconds of exp.
            not_after = float(int(exp)) + leeway
            not_before = float(nbf) - leeway if isinstance(nbf, (int, float)) else float("-inf")
            text = json.dumps(claims)
        except (TypeError, ValueError, OverflowError):
            return
        with self._lock:
            if fingerprint != self._fingerprint:
                return
            if len(self._entries) >= self.maxsize and token not in self._entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[token] = (text, not_after, not_before, self._fingerprint)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def cache_verified_tokens(
    jwt: JWTManager, cache: VerifiedTokens | None = None
) -> VerifiedTokens | None:
    """Put :class:`VerifiedTokens` in front of ``jwt``'s token decoding.

    The one place that touches flask-jwt-extended's internals: it wraps
    ``JWTManager._decode_jwt_from_config``, through which both
    ``verify_jwt_in_request``/``jwt_required`` and ``decode_token`` decode.
    Host apps see the same claims and the same errors. Tokens with a CSRF
    value, ``allow_expired`` decodes and apps with their own
    ``decode_key_loader`` always take the full decode. If the internals are
    not what this expects, nothing is wrapped (a warning says so) and
    tokens are decoded as before; a test fails then.
    """
    original = getattr(jwt, "_decode_jwt_from_config", None)
    if getattr(original, "sessionsvc_cache", None) is not None:
        return cast(VerifiedTokens, original.sessionsvc_cache)  # type: ignore[union-attr]
    try:
        parameters = list(inspect.signature(JWTManager._decode_jwt_from_config).parameters)
    except (AttributeError, TypeError, ValueError):
        parameters = []
    if original is None or parameters != _DECODE_PARAMETERS:
        logger.warning(
            "flask-jwt-extended's decoding is not as sessionsvc expects: tokens are not cached"
        )
        return None
    cache = cache or VerifiedTokens()

    def decode(
        encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if (
            csrf_value
            or allow_expired
            or jwt._decode_key_callback is not default_decode_key_callback
        ):
            return cast(dict[str, Any], original(encoded_token, csrf_value, allow_expired))
        config = current_app.config
        fingerprint = tuple(config.get(key) for key in _VERIFYING_KEYS)
        claims = cache.get(encoded_token, fingerprint)
        if claims is None:
            claims = cast(dict[str, Any], original(encoded_token, csrf_value, allow_expired))
            cache.put(encoded_token, fingerprint, claims)
        return claims

    decode.sessionsvc_cache = cache  # type: ignore[attr-defined]
    jwt._decode_jwt_from_config = decode  # type: ignore[method-assign]
    return cache


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
    cache_verified_tokens(jwt)
    _case_insensitive_scheme(app)

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
    # string; docs/api.md gives each its own code.
    @app.errorhandler(WrongTokenError)
    def _wrong_type(error: WrongTokenError) -> Response:
        return error_response(WrongTokenType(str(error)))

    @app.errorhandler(InvalidHeaderError)
    def _bad_header(error: InvalidHeaderError) -> Response:
        return error_response(AuthorizationRequired(str(error)))
