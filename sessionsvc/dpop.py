"""DPoP proofs (RFC 9449): parsing and verification, as pure functions.

:func:`verify` checks one ``DPoP`` header value against the request's method,
URL and the clock and returns the :class:`Proof` it carries (the key's
thumbprint, the ``jti``, the ``iat``), or raises :class:`ProofError`, whatever
the value holds. No Flask, no Redis: remembering ``jti`` values (replays) is
the store's job, reading the header and the request line the binding's.

Cost, measured with ``python -m bench.proofs`` (median of 20,000 proofs by one
key): ES256 49 us, of which the signature check is 43; EdDSA 68 us, of which 62.
The header is parsed and its key built and checked once per key (a bounded
cache keyed by the header's text; ~19 us ES256, ~9 us EdDSA on a new key);
the signature is checked by PyJWT's algorithm objects, over ``cryptography``.
PyJWT's path (``get_unverified_header`` for the jwk, ``PyJWK``, ``jwt.decode``)
costs ~113 us for either: it parses the token twice, checking base64url one
character at a time in Python (~20 us a parse), and builds the key every time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

#: The signature algorithms a proof may use (``alg``), as ``WWW-Authenticate``
#: lists them.
ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA")
#: Longest ``DPoP`` header value, in characters.
MAX_PROOF_LENGTH = 4096
#: Seconds an ``iat`` may lie ahead of the server's clock.
FUTURE_SKEW = 5
#: Longest ``jti``, in characters.
MAX_JTI_LENGTH = 256
#: How many headers (so, client keys) the key cache holds.
KEY_CACHE_SIZE = 1024

#: The ``typ`` a proof's header must carry.
_TYP = "dpop+jwt"
#: The members of a JWK that belong to a private or symmetric key.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: A compact JWS: three base64url segments without padding.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
#: The signature check of each algorithm: PyJWT's (``pyjwt[crypto]``).
_VERIFIERS: dict[str, Any] = {"ES256": ECAlgorithm(ECAlgorithm.SHA256), "EdDSA": OKPAlgorithm()}
_P256 = ec.SECP256R1()
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: What a path keeps as it is in the URLs ``htu`` comparison sees (RFC 3986's
#: ``pchar`` and ``/``, less ``%``): everything else is percent-encoded.
PATH_SAFE = "/:@!$&'()*+,;=-._~"
#: An escaped ``/``, which no proof may spell as ``/`` (nor the other way).
_ESCAPED_SLASH = re.compile("%2[Ff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: not JSON


#: Built once: ``json.loads`` with an option builds a decoder per call (~2 us).
_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


class ProofError(ValueError):
    """The proof is not acceptable; ``str(error)`` is a short reason safe to
    show a client (it never echoes the proof)."""


@dataclass(frozen=True, slots=True)
class Proof:
    """What an accepted proof carries."""

    #: RFC 7638 SHA-256 thumbprint of the proof's public key, base64url, no padding.
    jkt: str
    #: The proof's ``jti`` (1 to 256 characters).
    jti: str
    #: The proof's ``iat``, in whole seconds (a float is truncated).
    iat: int


@dataclass(frozen=True, slots=True)
class _Header:
    """A proof header that passed every check: its algorithm and key."""

    alg: str
    key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    jkt: str


def verify(
    value: str | None,
    *,
    method: str,
    url: str,
    now: float,
    max_age: int,
    access_token: str | None = None,
) -> Proof:
    """Check one DPoP proof (the ``DPoP`` header's value) against the request.

    :param value: the header's value; ``None`` or empty when the request has none.
    :param method: the request's method, compared with ``htm`` exactly.
    :param url: the request's URL, compared with ``htu`` after both are
        normalised (:func:`normalise_url`), ignoring query and fragment.
    :param now: the server's clock (epoch seconds).
    :param max_age: how many seconds old ``iat`` may be.
    :param access_token: the access token the request presents, whose hash
        ``ath`` must carry; ``None`` when it presents none (``ath`` is then ignored).
    :raises ProofError: the proof is missing, malformed, signed by another key
        than its own, or does not match the request or the clock.
    """
    if not value:
        raise ProofError("missing DPoP proof")
    if not isinstance(value, str):
        raise ProofError("DPoP proof is not a compact JWS")
    if len(value) > MAX_PROOF_LENGTH:
        raise ProofError("DPoP proof too long")
    if "," in value:
        raise ProofError("more than one DPoP proof")
    parts = _COMPACT.fullmatch(value)
    if parts is None:
        raise ProofError("DPoP proof is not a compact JWS")
    head, body, signature = parts.groups()
    header = _header(head)
    claims = _json_object(body, "claims")
    _check_signature(header, f"{head}.{body}".encode("ascii"), _b64decode(signature, "signature"))
    return _check_claims(claims, header.jkt, method, url, now, max_age, access_token)


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of an EC or OKP public key, base64url.

    :raises ProofError: the key is of another type, or lacks a member.
    """
    kty = jwk.get("kty")
    if kty == "EC":
        names: tuple[str, ...] = ("crv", "kty", "x", "y")
    elif kty == "OKP":
        names = ("crv", "kty", "x")
    else:
        raise ProofError("unsupported key type")
    members = {name: jwk.get(name) for name in names}
    if not all(isinstance(v, str) for v in members.values()):
        raise ProofError("incomplete jwk")
    canonical = json.dumps(members, separators=(",", ":"), ensure_ascii=False)
    return _b64encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(token: str) -> str:
    """The ``ath`` a proof carries with ``token``: base64url SHA-256 of its ASCII."""
    return _b64encode(hashlib.sha256(token.encode("ascii")).digest())


@lru_cache(maxsize=256)
def normalise_url(url: str) -> str:
    """``url`` as ``htu`` comparison sees it: scheme and host in lower case,
    the default port dropped, no query or fragment, an empty path as ``/``,
    and the path as the server routes it: its percent escapes decoded (once;
    UTF-8), then what :data:`PATH_SAFE` leaves out encoded again, so that a
    client may escape any character of the path it sends, or none, but
    ``/``: ``%2F`` stays apart from a ``/``, and ``%25`` a literal ``%``.

    :raises ValueError: not an absolute http(s) URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        raise ValueError("not an absolute http(s) URL")
    port = parts.port  # ValueError when it is not a number in range
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    # A path that is no UTF-8 once decoded names no route: ValueError.
    path = "%2F".join(
        quote(unquote(piece, errors="strict"), safe=PATH_SAFE)
        for piece in _ESCAPED_SLASH.split(parts.path)
    )
    return f"{scheme}://{netloc}{path or '/'}"


# -- the parts of a proof --------------------------------------------------------


@lru_cache(maxsize=KEY_CACHE_SIZE)
def _header(segment: str) -> _Header:
    """The header segment checked, its key built: once per header text (a
    client reuses its key, so its header), which is most of a proof's cost
    besides the signature. Only headers that pass are cached."""
    if len(segment) > MAX_PROOF_LENGTH:
        raise ProofError("DPoP proof too long")
    header = _json_object(segment, "header")
    if header.get("typ") != _TYP:
        raise ProofError("typ is not dpop+jwt")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise ProofError("unsupported alg")
    if "crit" in header:
        raise ProofError("unsupported crit")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise ProofError("jwk is not a JSON object")
    if not _PRIVATE_MEMBERS.isdisjoint(jwk):
        raise ProofError("jwk holds a private key")
    key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    if alg == "ES256":
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise ProofError("ES256 needs an EC P-256 jwk")
        x, y = _coordinate(jwk, "x"), _coordinate(jwk, "y")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(_P256, b"\x04" + x + y)
        except ValueError:
            raise ProofError("jwk is not a point on P-256") from None
    else:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ProofError("EdDSA needs an OKP Ed25519 jwk")
        key = ed25519.Ed25519PublicKey.from_public_bytes(_coordinate(jwk, "x"))
    return _Header(alg, key, thumbprint(jwk))


def _coordinate(jwk: Mapping[str, Any], name: str) -> bytes:
    text = jwk.get(name)
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None:
        raise ProofError(f"jwk {name} is not base64url")
    raw = _b64decode(text, f"jwk {name}")
    # Only the canonical spelling: another would give the key another thumbprint.
    if len(raw) != 32 or _b64encode(raw) != text:
        raise ProofError(f"jwk {name} is not 32 bytes in base64url")
    return raw


def _check_signature(header: _Header, signed: bytes, signature: bytes) -> None:
    """PyJWT's own algorithms check the signature (its ES256 takes the JWS
    form, r and s of 32 bytes each, as RFC 7518 writes it)."""
    if len(signature) != 64:
        raise ProofError("signature is not 64 bytes")
    if not _VERIFIERS[header.alg].verify(signed, header.key, signature):
        raise ProofError("signature does not verify with the jwk")


def _check_claims(
    claims: dict[str, Any],
    jkt: str,
    method: str,
    url: str,
    now: float,
    max_age: int,
    access_token: str | None,
) -> Proof:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise ProofError("jti is not a string of 1 to 256 characters")
    if claims.get("htm") != method:
        raise ProofError("htm does not match the request method")
    htu = claims.get("htu")
    if not isinstance(htu, str) or not _same_url(htu, url):
        raise ProofError("htu does not match the request URL")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, (int, float)):
        raise ProofError("iat is not a number")
    if isinstance(iat, float) and not math.isfinite(iat):  # 1e999 parses as inf
        raise ProofError("iat is not a number")
    if iat < now - max_age:
        raise ProofError("proof is too old")
    if iat > now + FUTURE_SKEW:
        raise ProofError("iat is in the future")
    if access_token is not None:
        try:
            expected = access_token_hash(access_token)
        except UnicodeEncodeError:
            raise ProofError("ath does not match the access token") from None
        if claims.get("ath") != expected:
            raise ProofError("ath does not match the access token")
    return Proof(jkt=jkt, jti=jti, iat=int(iat))


def _same_url(htu: str, url: str) -> bool:
    # Printable ASCII only: urlsplit would quietly drop tabs and newlines.
    if not (htu.isascii() and htu.isprintable()) or " " in htu:
        return False
    try:
        return normalise_url(htu) == normalise_url(url)
    except ValueError:
        return False


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        text = _b64decode(segment, what).decode("utf-8")
        value = _JSON.decode(text)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, too many digits, too deep
        raise ProofError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ProofError(f"{what} is not a JSON object")
    return value


def _b64decode(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise ProofError(f"{what} is not base64url") from None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
