"""The DPoP signer for Python clients (sessionsvc.dpop_client): its proofs
pass sessionsvc.dpop.verify, and DPoPAuth signs requests and httpx requests."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import sessionsvc
from sessionsvc import dpop
from sessionsvc.dpop_client import DPoPAuth, DPoPKey

URL = "https://api.example.com/api/v1/sessions"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"


def decoded(segment: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


def parts(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = proof.split(".")
    return decoded(head), decoded(body)


@pytest.fixture(params=["ES256", "EdDSA"])
def key(request: pytest.FixtureRequest) -> DPoPKey:
    return DPoPKey.generate(request.param)


def test_the_public_names() -> None:
    assert sessionsvc.DPoPKey is DPoPKey
    assert sessionsvc.DPoPAuth is DPoPAuth
    assert {"DPoPKey", "DPoPAuth"} <= set(sessionsvc.__all__)


def test_a_proof_verifies_and_names_the_key(key: DPoPKey) -> None:
    proof = key.proof("POST", URL + "?x=1#frag", access_token=TOKEN)
    checked = dpop.verify(
        proof, method="POST", url=URL, now=time.time(), max_age=60, access_token=TOKEN
    )
    assert checked.jkt == key.jkt == dpop.thumbprint(key.public_jwk)
    header, claims = parts(proof)
    assert header == {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.public_jwk}
    assert claims["htu"] == URL
    assert claims["htm"] == "POST"
    assert claims["ath"] == dpop.access_token_hash(TOKEN)
    assert claims["jti"] == checked.jti
    assert abs(claims["iat"] - time.time()) < 5


def test_each_proof_is_fresh_with_the_same_header(key: DPoPKey) -> None:
    first, second = key.proof("GET", URL), key.proof("GET", URL)
    assert first.split(".")[0] == second.split(".")[0]  # the server's key cache serves it
    assert parts(first)[1]["jti"] != parts(second)[1]["jti"]
    assert "ath" not in parts(first)[1]


def test_iat_and_jti_as_given(key: DPoPKey) -> None:
    proof = key.proof("GET", URL, iat=1_700_000_000, jti="chosen")
    assert dpop.verify(proof, method="GET", url=URL, now=1_700_000_001, max_age=60) == (
        dpop.Proof(jkt=key.jkt, jti="chosen", iat=1_700_000_000)
    )


def test_the_public_jwk(key: DPoPKey) -> None:
    jwk = key.public_jwk
    if key.alg == "ES256":
        assert set(jwk) == {"kty", "crv", "x", "y"}
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    else:
        assert jwk.keys() == {"kty", "crv", "x"}
        assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    jwk["x"] = "changed"
    assert key.public_jwk["x"] != "changed"  # a copy


def test_from_private_key() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = DPoPKey.from_private_key(private)
    assert key.alg == "ES256"
    numbers = private.public_key().public_numbers()
    assert base64.urlsafe_b64decode(key.public_jwk["x"] + "=") == numbers.x.to_bytes(32, "big")
    assert DPoPKey.from_private_key(ed25519.Ed25519PrivateKey.generate()).alg == "EdDSA"
    with pytest.raises(ValueError, match="P-256 or an Ed25519"):
        DPoPKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="P-256 or an Ed25519"):
        DPoPKey.from_private_key("not a key")
    with pytest.raises(ValueError, match="ES256, EdDSA"):
        DPoPKey.generate("RS256")


def test_headers(key: DPoPKey) -> None:
    assert set(key.headers("GET", URL)) == {"DPoP"}
    headers = key.headers("DELETE", URL + "/abc", TOKEN)
    assert headers["Authorization"] == f"DPoP {TOKEN}"
    checked = dpop.verify(
        headers["DPoP"],
        method="DELETE",
        url=URL + "/abc",
        now=time.time(),
        max_age=60,
        access_token=TOKEN,
    )
    assert checked.jkt == key.jkt


def check_signed(key: DPoPKey, method: str, headers: Any) -> None:
    assert headers["Authorization"] == f"DPoP {TOKEN}"
    proof = headers["DPoP"]
    _, claims = parts(proof)
    assert claims["htu"] == URL  # no query
    assert claims["htm"] == method
    assert claims["ath"] == dpop.access_token_hash(TOKEN)
    checked = dpop.verify(
        proof, method=method, url=URL, now=time.time(), max_age=60, access_token=TOKEN
    )
    assert checked.jkt == key.jkt


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_dpop_auth_signs_a_requests_request(key: DPoPKey, method: str) -> None:
    prepared = requests.Request(
        method, URL, params={"page": "2"}, auth=DPoPAuth(key, TOKEN)
    ).prepare()
    assert prepared.url == URL + "?page=2"
    check_signed(key, method, prepared.headers)


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_dpop_auth_signs_an_httpx_request(key: DPoPKey, method: str) -> None:
    request = httpx.Request(method, URL, params={"page": "2"})
    auth = DPoPAuth(key, TOKEN)
    assert auth(request) is request
    check_signed(key, method, request.headers)
    # As httpx's auth= takes it: a client signs each request it sends.
    seen: list[httpx.Request] = []

    def answer(sent: httpx.Request) -> httpx.Response:
        seen.append(sent)
        return httpx.Response(204)

    with httpx.Client(auth=auth, transport=httpx.MockTransport(answer)) as client:
        client.request(method, URL, params={"page": "3"})
        client.request(method, URL)
    assert [str(sent.url) for sent in seen] == [URL + "?page=3", URL]
    for sent in seen:
        check_signed(key, method, sent.headers)
    assert seen[0].headers["DPoP"] != seen[1].headers["DPoP"]


def test_dpop_auth_without_a_token_sends_only_the_proof(key: DPoPKey) -> None:
    request = httpx.Request("GET", URL)
    DPoPAuth(key)(request)
    assert "Authorization" not in request.headers
    assert (
        dpop.verify(request.headers["DPoP"], method="GET", url=URL, now=time.time(), max_age=60).jkt
        == key.jkt
    )
