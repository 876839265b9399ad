"""DPoP for Python clients: a key that signs proofs, and ``auth=`` for
``requests`` and ``httpx``.

::

    key = DPoPKey.generate()  # ES256; DPoPKey.generate("EdDSA") for Ed25519
    login = requests.post(url + "/api/v1/auth/login", json=credentials,
                          headers=key.headers("POST", url + "/api/v1/auth/login"))
    token = login.json()["access_token"]
    requests.get(url + "/api/v1/sessions", auth=DPoPAuth(key, token))

Keep the key for as long as the tokens it was bound to: a token bound to a key
is refused with a proof by any other.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .dpop import ALGORITHMS, access_token_hash, thumbprint

_Request = TypeVar("_Request")


class DPoPKey:
    """A private key that signs DPoP proofs: EC P-256 (``ES256``) or
    Ed25519 (``EdDSA``)."""

    #: ``"ES256"`` or ``"EdDSA"``.
    alg: str

    def __init__(self, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            numbers = key.public_key().public_numbers()
            self.alg = "ES256"
            self._jwk = {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64(numbers.x.to_bytes(32, "big")),
                "y": _b64(numbers.y.to_bytes(32, "big")),
            }
        else:
            self.alg = "EdDSA"
            self._jwk = {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64(key.public_key().public_bytes_raw()),
            }
        # The same header text on every proof, so the server's key cache serves it.
        header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self._jwk}
        self._head = _b64(json.dumps(header, separators=(",", ":")).encode("ascii"))
        self._jkt = thumbprint(self._jwk)

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoPKey:
        """A new key for ``alg`` (one of :data:`sessionsvc.dpop.ALGORITHMS`)."""
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        raise ValueError(f"alg must be one of {', '.join(ALGORITHMS)}")

    @classmethod
    def from_private_key(cls, key: Any) -> DPoPKey:
        """The key of a ``cryptography`` EC P-256 or Ed25519 private key.

        :raises ValueError: another kind of key, or another curve.
        """
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(key)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls(key)
        raise ValueError("a DPoP key is an EC P-256 or an Ed25519 private key")

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (a copy)."""
        return dict(self._jwk)

    @property
    def jkt(self) -> str:
        """The public key's RFC 7638 thumbprint: what bound tokens carry as ``cnf.jkt``."""
        return self._jkt

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        iat: int | None = None,
        jti: str | None = None,
    ) -> str:
        """A signed proof for one request.

        :param method: the request's method (``htm``).
        :param url: the request's URL; ``htu`` is it without query and fragment.
        :param access_token: the token the request presents (its hash goes in ``ath``).
        :param iat: the proof's time (default: now); ``jti``: its identifier
            (default: 128 random bits).
        """
        scheme, netloc, path, _, _ = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "htm": method,
            "htu": urlunsplit((scheme, netloc, path, "", "")),
            "iat": iat if iat is not None else int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        body = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        signed = f"{self._head}.{body}".encode("ascii")
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self._key.sign(signed, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self._key.sign(signed)
        return f"{self._head}.{body}.{_b64(signature)}"

    def headers(self, method: str, url: str, access_token: str | None = None) -> dict[str, str]:
        """The headers of one request: ``DPoP`` (a fresh proof), and
        ``Authorization: DPoP <token>`` when a token is given."""
        found = {"DPoP": self.proof(method, url, access_token=access_token)}
        if access_token is not None:
            found["Authorization"] = f"DPoP {access_token}"
        return found


class DPoPAuth:
    """``auth=`` for ``requests`` and ``httpx``: signs each request with a
    fresh proof (and presents ``access_token``, when given, as
    ``Authorization: DPoP``). A redirect is not signed again: its proof would
    name the first URL."""

    def __init__(self, key: DPoPKey, access_token: str | None = None) -> None:
        self.key = key
        self.access_token = access_token

    def __call__(self, request: _Request) -> _Request:
        """Sign ``request`` (a ``requests.PreparedRequest`` or an ``httpx.Request``)."""
        prepared = cast(Any, request)
        # requests gives the URL as a str, httpx as an httpx.URL.
        headers = self.key.headers(str(prepared.method), str(prepared.url), self.access_token)
        for name, value in headers.items():
            prepared.headers[name] = value
        return request


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
