"""DPoP on the request path: tokens bound to the key of the device they were
issued to (RFC 9449; docs/api.md, section 15).

:mod:`sessionsvc.dpop` checks a proof against the request line and a clock;
this module reads both off the current request, decides what a token needs
(by its ``cnf.jkt`` and ``SESSIONSVC_DPOP``), and keeps what one request
has accepted, so that the checks a request makes more than once (a host's
``jwt_required`` and then :meth:`SessionManager.rotate`) remember its proof
once. Every check of a proof happens before the store is asked anything:
an invalid proof writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from flask import Flask, request

from . import devices, dpop, tokens
from .errors import InvalidDPoPProof, InvalidLoginProof
from .settings import Settings
from .state import State
from .store import CheckResult, CheckStatus
from .store.keys import proof_digest

#: Where a request keeps the token it sent with the ``DPoP`` scheme.
_SENT = "sessionsvc.dpop_sent"
#: Where a request keeps the proofs it had accepted: (thumbprint, jti).
_ACCEPTED = "sessionsvc.dpop_accepted"
#: Where a sign-in keeps its verified proof (checked before the password).
_LOGIN = "sessionsvc.dpop_login"

#: Seconds the store remembers a proof beyond its ``max_age``: the ``iat``
#: may lie ahead (:data:`dpop.FUTURE_SKEW`), and hosts' clocks differ a little.
_MARGIN = dpop.FUTURE_SKEW + 5


class ProofRefused(InvalidDPoPProof):
    """401 ``invalid_dpop_proof``, with the challenge of RFC 9449, section 7.1."""

    headers = {
        "WWW-Authenticate": f'DPoP error="{InvalidDPoPProof.code}", '
        f'algs="{" ".join(dpop.ALGORITHMS)}"'
    }


class Mismatch(ProofRefused):
    """A bound token used without its key (as ``Bearer``, or with a proof by
    another key): a theft signal the caller records before refusing."""


@dataclass(frozen=True, slots=True)
class Presented:
    """A bound token's proof, verified: what the store checks and remembers."""

    #: The thumbprint of the key the token is bound to.
    jkt: str
    #: The proof's name in the store (:func:`proof_digest`), or ``""`` when
    #: this request had it remembered already.
    digest: str
    #: Seconds the store remembers it.
    window: int
    #: The proof's ``jti``.
    jti: str


def install(app: Flask) -> None:
    """Read ``Authorization: DPoP <token>`` as the app's own scheme, first thing.

    flask-jwt-extended reads one scheme (``JWT_HEADER_TYPE``, ``Bearer``): a
    request that sends its token with the ``DPoP`` scheme (any case) has its
    header rewritten to that scheme before any other hook or view, and the
    token is kept for the proof's ``ath``. Every path: the host app's
    ``jwt_required`` routes enforce proofs too.
    """
    scheme = app.config.get("JWT_HEADER_TYPE", "Bearer")
    environ_key = tokens.authorization_environ_key(app)

    def _dpop_scheme() -> None:
        environ = request.environ
        value = environ.get(environ_key)
        if value and value[:5].lower() == "dpop " and "," not in value:
            token = value[5:].strip()
            environ[_SENT] = token
            environ[environ_key] = f"{scheme} {token}" if scheme else token

    app.before_request_funcs.setdefault(None, []).insert(0, _dpop_scheme)


def request_url(settings: Settings) -> str:
    """The URL the client addressed, without query: what a proof's ``htu`` names.

    Behind ``SESSIONSVC_TRUSTED_PROXIES`` proxies, the scheme and host they
    forwarded (``X-Forwarded-Proto``, ``X-Forwarded-Host``, the value the
    nearest trusted proxy set, as for ``X-Forwarded-For``).
    """
    scheme, host = request.scheme, request.host
    if settings.trusted_proxies:
        scheme = _forwarded("X-Forwarded-Proto", settings.trusted_proxies) or scheme
        host = _forwarded("X-Forwarded-Host", settings.trusted_proxies) or host
    if scheme not in ("http", "https") or _HOST.fullmatch(host) is None:
        # A forwarded value that is no scheme or no host (a path in it would
        # move the URL to another route): no proof names this request.
        return _NO_URL
    path = quote(request.script_root + request.path, safe=dpop.PATH_SAFE)
    return f"{scheme}://{host}{path}"


#: A host as a URL's authority may name it: a name or IPv4 address, or an
#: IPv6 one in brackets, and a port (no userinfo, path, query or fragment).
_HOST = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
#: What :func:`request_url` gives for a request no proof can name.
_NO_URL = "invalid:"


def _forwarded(name: str, trusted: int) -> str | None:
    values = [part.strip() for part in ",".join(request.headers.getlist(name)).split(",")]
    values = [value for value in values if value]
    return values[-trusted] if len(values) >= trusted else None


@lru_cache(maxsize=1024)
def _token_id(token: str) -> Any:
    """The ``jti`` of a token's claims, read without verifying it (``None`` if unreadable).

    Kept per token text (a client sends its token until it expires): ~3 us a
    decode, against a lookup."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    return claims.get("jti") if isinstance(claims, dict) else None


def bound_key(payload: dict[str, Any]) -> str | None:
    """The thumbprint a token is bound to (its ``cnf.jkt``), or ``None``.

    :raises ProofRefused: the token has a ``cnf`` claim without a usable
        ``jkt``: it is bound, to nothing a proof can match.
    """
    if "cnf" not in payload:
        return None
    confirmation = payload["cnf"]
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise ProofRefused("The token's key binding (cnf) names no key thumbprint.")
    return jkt


def _verify(settings: Settings, access_token: str | None) -> dpop.Proof:
    return dpop.verify(
        request.headers.get("DPoP"),
        method=request.method,
        url=request_url(settings),
        now=time.time(),
        max_age=settings.dpop_max_age,
        access_token=access_token,
    )


def window(settings: Settings) -> int:
    """Seconds a proof is remembered: as long as it could be accepted."""
    return settings.dpop_max_age + _MARGIN


def sign_in_proof(settings: Settings) -> dpop.Proof | None:
    """The valid proof of the current sign-in request, or ``None`` for an unbound one.

    Kept on the request: the standalone login checks it before the password,
    :meth:`SessionManager.open` then binds with it.

    :raises InvalidLoginProof: the proof is invalid, or missing where
        ``SESSIONSVC_DPOP`` is ``required``.
    """
    if settings.dpop == "off":
        return None
    environ = request.environ
    if _LOGIN in environ:
        kept: dpop.Proof | None = environ[_LOGIN]
        return kept
    if not request.headers.get("DPoP"):
        if settings.dpop == "required":
            raise InvalidLoginProof("A DPoP proof is required to sign in.")
        proof = None
    else:
        try:
            proof = _verify(settings, None)
        except dpop.ProofError as error:
            raise InvalidLoginProof(f"The DPoP proof is invalid: {error}.") from None
    environ[_LOGIN] = proof
    return proof


def first_use(proof: dpop.Proof) -> str:
    """The proof's name in the store unless the store accepted it for this
    request already (then ``""``: see :func:`accepted`)."""
    if (proof.jkt, proof.jti) in request.environ.get(_ACCEPTED, ()):
        return ""
    return proof_digest(proof.jkt, proof.jti)


def accepted(jkt: str, jti: str) -> None:
    """Record that the store accepted this proof for the current request (and
    only then: a proof the store refused as a replay stays refused, however
    often the request checks its token)."""
    request.environ.setdefault(_ACCEPTED, set()).add((jkt, jti))


def presented(settings: Settings, payload: dict[str, Any]) -> Presented | None:
    """What a token needs of the current request: ``None`` for an unbound one.

    :raises Mismatch: a bound token as ``Bearer``, or with another key's proof.
    :raises InvalidDPoPProof: a bound token's proof missing or invalid (stale,
        for another request or token); an unbound token sent with the
        ``DPoP`` scheme, or anywhere when ``SESSIONSVC_DPOP`` is ``required``.
    """
    jkt = bound_key(payload)
    token = request.environ.get(_SENT)
    if jkt is None:
        if token is not None:
            raise ProofRefused("The token is not bound to a key: send it as Bearer.")
        if settings.dpop == "required":
            raise ProofRefused("Tokens must be bound to a key (DPoP): sign in with a proof.")
        return None
    if token is None:
        raise Mismatch("The token is bound to a key: send it with the DPoP scheme and a proof.")
    if _token_id(token) != payload.get("jti"):
        # The app read its token elsewhere (a cookie, the query): the proof's
        # ath names the header's token, not this one.
        raise ProofRefused("The token checked is not the one sent with the DPoP scheme.")
    try:
        proof = _verify(settings, token)
    except dpop.ProofError as error:
        raise ProofRefused(f"The DPoP proof is invalid: {error}.") from None
    if proof.jkt != jkt:
        raise Mismatch("The DPoP proof is signed by another key than the token is bound to.")
    return Presented(jkt, first_use(proof), window(settings), proof.jti)


def check(
    state: State, user_id: str, session_id: str, payload: dict[str, Any], *, now: int
) -> Presented | None:
    """:func:`presented`, recording a mismatch (``session.anomaly``, kind
    ``dpop_mismatch``; a revocation when anomalies revoke) before refusing."""
    try:
        return presented(state.settings, payload)
    except Mismatch:
        state.store.record_mismatch(user_id, session_id, now=now, actor=devices.request_actor())
        raise


def check_access(
    state: State,
    user_id: str,
    session_id: str,
    proof: Presented | None,
    *,
    now: int,
    whole: bool,
) -> CheckResult:
    """The access-token check: one ``HMGET`` unbound, one script bound (its
    proof remembered in the same round trip; see :meth:`SessionStore.check_bound`).

    :raises InvalidDPoPProof: the proof was accepted before.
    """
    actor = devices.request_actor()
    if proof is None:
        return state.store.check_access(user_id, session_id, now=now, actor=actor, whole=whole)
    result = state.store.check_bound(
        user_id,
        session_id,
        jkt=proof.jkt,
        proof=proof.digest,
        window=proof.window,
        now=now,
        actor=actor,
        whole=whole,
    )
    return refuse_replay(result, proof)


def refuse_replay(result: CheckResult, proof: Presented | None) -> CheckResult:
    """The check's result, unless its proof was accepted before.

    :raises InvalidDPoPProof: the proof is a replay.
    """
    if result.status is CheckStatus.PROOF_REPLAYED:
        raise ProofRefused("The DPoP proof was used before: send a new one.")
    if proof is not None and result.status is CheckStatus.ACTIVE:
        accepted(proof.jkt, proof.jti)
    return result


def sign_in(state: State, user_id: str) -> str | None:
    """The thumbprint to bind a new session of ``user_id`` to, from the
    current request's proof (``None``: unbound); the proof is remembered.

    :raises InvalidLoginProof: see :func:`sign_in_proof`, or the proof was
        used before.
    """
    proof = sign_in_proof(state.settings)
    if proof is None:
        return None
    digest = first_use(proof)
    if digest:
        if not state.store.remember_proof(user_id, digest, window(state.settings)):
            raise InvalidLoginProof("The DPoP proof was used before: send a new one.")
        accepted(proof.jkt, proof.jti)
    return proof.jkt
