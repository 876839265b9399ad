"""A bounded per-process cache of the tokens this process verified.

flask-jwt-extended verifies a token's signature and claims on every request
(~74 us for HS256); :class:`VerifiedTokens`, put in front of its decode step
by :func:`cache_verified_tokens`, verifies each exact token text once, and
:class:`VerifiedHeaders` answers the unverified header read that follows
it in ``jwt_required`` without parsing the token again. The revocation
check still runs on every request (:mod:`sessionsvc.tokens`).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import threading
import time
from datetime import timedelta
from typing import Any, cast

import flask_jwt_extended.utils
import flask_jwt_extended.view_decorators
import jwt as pyjwt
from flask import current_app
from flask_jwt_extended import JWTManager
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from jwt.utils import base64url_decode

logger = logging.getLogger("sessionsvc")

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
        HEADERS.put(token)


class VerifiedHeaders:
    """The JSON headers of tokens this process verified, by their exact text.

    ``jwt_required`` reads a token's header with PyJWT (which checks the
    token's base64 character by character) on every request, after the
    decode :class:`VerifiedTokens` answers. A token's header is a function
    of its text alone, so the header kept the first time answers every later
    read exactly, for any app of the process (with sessionsvc or without):
    a new ``dict`` parsed from the same JSON bytes, as PyJWT parses it.
    Only verified tokens enter (:meth:`VerifiedTokens.put`), so a client
    sending junk cannot fill it; beyond ``maxsize`` the oldest is dropped.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._headers: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._headers)

    def put(self, token: str) -> None:
        """Keep the header of ``token``, if PyJWT reads one from it."""
        if not isinstance(token, str) or token in self._headers:
            return
        try:
            pyjwt.get_unverified_header(token)  # as PyJWT refuses it, it is not kept
            # As PyJWT reads it: the first segment, "=" padding stripped.
            data = base64url_decode(token.split(".", 1)[0].rstrip("="))
        except (pyjwt.InvalidTokenError, ValueError, TypeError):
            return
        with self._lock:
            if len(self._headers) >= self.maxsize:
                self._headers.pop(next(iter(self._headers)), None)
            self._headers[token] = data

    def get(self, token: Any) -> dict[str, Any] | None:
        """The header of a token kept here (a new ``dict``), or ``None``."""
        data = self._headers.get(token) if isinstance(token, str) else None
        if data is None:
            return None
        header: dict[str, Any] = json.loads(data)
        return header


#: The process's verified headers (see :func:`read_verified_headers`).
HEADERS = VerifiedHeaders()


def read_verified_headers() -> bool:
    """Answer ``jwt_required``'s unverified header read from :data:`HEADERS`.

    Replaces ``flask_jwt_extended.view_decorators.get_unverified_jwt_headers``
    (for every app of the process) with a function that returns what it
    would: the kept header of a verified token, else the original's answer
    (or error). Done once; if the name is not flask-jwt-extended's own
    function (it changed, or someone else replaced it), nothing is replaced
    and the header is parsed as before. ``True`` when ours is in place.
    """
    module = flask_jwt_extended.view_decorators
    current = getattr(module, "get_unverified_jwt_headers", None)
    if getattr(current, "sessionsvc_headers", False):
        return True
    original = getattr(flask_jwt_extended.utils, "get_unverified_jwt_headers", None)
    if current is None or current is not original:
        logger.warning(
            "flask-jwt-extended's header read is not as sessionsvc expects: headers are not cached"
        )
        return False

    def get_unverified_jwt_headers(encoded_token: str) -> dict[str, Any]:
        header = HEADERS.get(encoded_token)
        if header is None:
            return cast(dict[str, Any], original(encoded_token))
        return header

    get_unverified_jwt_headers.__doc__ = original.__doc__
    get_unverified_jwt_headers.sessionsvc_headers = True  # type: ignore[attr-defined]
    get_unverified_jwt_headers.__wrapped__ = original  # type: ignore[attr-defined]
    module.get_unverified_jwt_headers = get_unverified_jwt_headers  # type: ignore[attr-defined]
    return True


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def cache_verified_tokens(
    jwt: JWTManager, cache: VerifiedTokens | None = None
) -> VerifiedTokens | None:
    """Put :class:`VerifiedTokens` in front of ``jwt``'s token decoding.

    One of the two places that touch flask-jwt-extended's internals (the
    other is :func:`read_verified_headers`, which this calls): it wraps
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
        fingerprint = tuple(map(config.get, _VERIFYING_KEYS))
        claims = cache.get(encoded_token, fingerprint)
        if claims is None:
            claims = cast(dict[str, Any], original(encoded_token, csrf_value, allow_expired))
            cache.put(encoded_token, fingerprint, claims)
        return claims

    decode.sessionsvc_cache = cache  # type: ignore[attr-defined]
    jwt._decode_jwt_from_config = decode  # type: ignore[method-assign]
    read_verified_headers()
    return cache
