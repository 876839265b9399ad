"""DPoP proof verification (sessionsvc.dpop): what passes, every way a proof
can be wrong, and that a malformed proof only ever raises ProofError."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionsvc import dpop
from sessionsvc.dpop import ProofError

URL = "https://api.example.com/api/v1/sessions"
TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
NOW = 1_700_000_000
MAX_AGE = 60
PROPERTIES = settings(max_examples=300, deadline=None, database=None)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return b64(text.encode("utf-8"))


def public_jwk(key: PrivateKey) -> dict[str, str]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().public_bytes_raw())}
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name, key.curve.name)
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64(numbers.x.to_bytes(size, "big")),
        "y": b64(numbers.y.to_bytes(size, "big")),
    }


def sign(key: PrivateKey, signed: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(signed)
    size = (key.curve.key_size + 7) // 8
    r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def claims(**changes: Any) -> dict[str, Any]:
    ath = dpop.access_token_hash(TOKEN)
    found = {"jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath}
    return {name: value for name, value in (found | changes).items() if value is not DROP}


DROP = object()


def make(
    key: PrivateKey | None = None,
    *,
    body: dict[str, Any] | str | None = None,
    signer: PrivateKey | None = None,
    **header_changes: Any,
) -> str:
    """A proof by ``key`` (a new ES256 key by default), signed by ``signer``
    (default: the same key); the header's members changed (DROP: left out),
    the claims as given or the defaults."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key), **header_changes}
    header = {name: value for name, value in header.items() if value is not DROP}
    signed = f"{segment(header)}.{segment(claims() if body is None else body)}"
    return f"{signed}.{b64(sign(signer or key, signed.encode('ascii')))}"


def check(value: str | None, **given: Any) -> dpop.Proof:
    options = dict(method="GET", url=URL, now=NOW, max_age=MAX_AGE, access_token=TOKEN)
    return dpop.verify(value, **(options | given))


def refused(value: str | None, reason: str, **given: Any) -> None:
    with pytest.raises(ProofError, match=reason) as raised:
        check(value, **given)
    # The reason is short and never echoes the proof.
    assert len(str(raised.value)) < 60
    assert not value or value[:20] not in str(raised.value)


@pytest.fixture(params=["ES256", "EdDSA"])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    if request.param == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


# -- what passes -------------------------------------------------------------------


def test_a_good_proof_gives_its_key_thumbprint_jti_and_iat(key: PrivateKey) -> None:
    proof = check(make(key))
    assert proof == dpop.Proof(
        jkt=dpop.thumbprint(public_jwk(key)), jti="e1j3V_bKic8-LAEB", iat=NOW
    )


def test_the_thumbprint_is_rfc_9449s_example() -> None:
    # RFC 9449 section 4.2's example proof key, and section 6.1's cnf.jkt for it.
    jwk = {
        "kty": "EC",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        "crv": "P-256",
    }
    assert dpop.thumbprint(jwk) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_the_thumbprint_hashes_the_required_members_in_order_without_spaces(
    key: PrivateKey,
) -> None:
    jwk = public_jwk(key)
    if jwk["kty"] == "EC":
        text = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    else:
        text = f'{{"crv":"Ed25519","kty":"OKP","x":"{jwk["x"]}"}}'
    expected = b64(hashlib.sha256(text.encode("ascii")).digest())
    # Member order and other members make no difference.
    shuffled = {"use": "sig", "kid": "k1", **dict(reversed(list(jwk.items())))}
    assert dpop.thumbprint(shuffled) == dpop.thumbprint(jwk) == expected
    assert len(expected) == 43


def test_the_thumbprint_of_other_keys_is_refused() -> None:
    with pytest.raises(ProofError, match="unsupported key type"):
        dpop.thumbprint({"kty": "RSA", "n": "AQAB", "e": "AQAB"})
    with pytest.raises(ProofError, match="incomplete"):
        dpop.thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})


def test_the_access_token_hash_is_rfc_9449s_example() -> None:
    # RFC 9449 section 7.1: the access token and the ath of its example proof.
    assert dpop.access_token_hash(TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_a_float_iat_is_truncated_and_the_window_edges_pass(key: PrivateKey) -> None:
    assert check(make(key, body=claims(iat=NOW + 0.9))).iat == NOW
    assert check(make(key, body=claims(iat=NOW - MAX_AGE))).iat == NOW - MAX_AGE
    ahead = NOW + dpop.FUTURE_SKEW
    assert check(make(key, body=claims(iat=ahead))).iat == ahead


def test_ath_is_ignored_when_no_access_token_is_presented(key: PrivateKey) -> None:
    assert check(make(key, body=claims(ath="whatever")), access_token=None).iat == NOW
    assert check(make(key, body=claims(ath=DROP)), access_token=None).iat == NOW


@pytest.mark.parametrize(
    "htu",
    [
        URL + "?page=2",
        URL + "#top",
        URL + "?a=1#b",
        "HTTPS://API.Example.COM/api/v1/sessions",
        "https://api.example.com:443/api/v1/sessions",
        "https://api.example.com/api/v1/%73essions",  # %73 is 's', unreserved
    ],
)
def test_htu_matches_ignoring_query_fragment_case_default_port_and_escapes(htu: str) -> None:
    assert check(make(body=claims(htu=htu))).jti == "e1j3V_bKic8-LAEB"
    assert check(make(body=claims(htu=URL)), url=htu).jti == "e1j3V_bKic8-LAEB"


def test_normalise_url() -> None:
    assert dpop.normalise_url("HTTP://Host:80") == "http://host/"
    assert dpop.normalise_url("http://host:8080/a%2fb%7e?q#f") == "http://host:8080/a%2Fb~"
    # Escaped or not, one path; a literal '%' stays one, and so does a space.
    assert dpop.normalise_url("http://h/a%3Db%25%20c") == "http://h/a=b%25%20c"
    assert dpop.normalise_url("http://h/%C3%A9") == dpop.normalise_url("http://h/%c3%a9")
    assert dpop.normalise_url("https://[::1]:443/x") == "https://[::1]/x"
    for bad in ("ftp://host/", "/relative", "https://user@host/", "http://host:99999/", ""):
        with pytest.raises(ValueError, match=r"URL|[Pp]ort"):
            dpop.normalise_url(bad)


def test_a_key_is_built_once_per_header_and_only_good_headers_are_kept() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first, second = make(key), make(key, body=claims(jti="another"))
    assert first.split(".")[0] == second.split(".")[0]
    before = dpop._header.cache_info()
    assert check(first).jti != check(second).jti
    after = dpop._header.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert after.maxsize == dpop.KEY_CACHE_SIZE
    bad = make(key, typ="JWT")
    for _ in range(2):
        refused(bad, "typ")
    assert dpop._header.cache_info().misses == after.misses + 2


# -- what is refused ----------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_no_proof(value: str | None) -> None:
    refused(value, "missing DPoP proof")


@pytest.mark.parametrize("value", ["garbage", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "a.b.c "])
def test_not_a_compact_jws(value: str) -> None:
    refused(value, "not a compact JWS")
    with pytest.raises(ProofError, match="not a compact JWS"):
        check(cast(Any, value.encode()))


def test_bad_base64() -> None:
    good = make()
    head, body, signature = good.split(".")
    refused(f"{head}=.{body}.{signature}", "not a compact JWS")  # padding
    refused(f"{head}.{body}.{signature[:-2]}+/", "not a compact JWS")  # the other alphabet
    refused(f"{head}.{body}.{signature}AAA", "signature is not base64url")  # 4n+1 characters
    refused(f"{head[:-1]}.{body}.{signature}", "header is not")  # a character short


def test_too_long_and_huge_headers() -> None:
    refused(make(pad="x" * dpop.MAX_PROOF_LENGTH), "too long")
    refused("a" * (dpop.MAX_PROOF_LENGTH + 1), "too long")
    # Just under the limit, a deeply nested header is not JSON we read.
    nested = "[" * 1400 + "]" * 1400
    refused(f"{segment(nested)}.{segment(claims())}.{b64(bytes(64))}", "header is not JSON")


def test_two_proofs_joined_as_wsgi_joins_repeated_headers(key: PrivateKey) -> None:
    refused(f"{make(key)}, {make(key)}", "more than one")
    refused(f"{make(key)},{make(key)}", "more than one")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"alg": "RS256"}, "unsupported alg"),
        ({"alg": "ES384"}, "unsupported alg"),
        ({"alg": "none"}, "unsupported alg"),
        ({"alg": DROP}, "unsupported alg"),
        ({"typ": "JWT"}, "typ"),
        ({"typ": "DPoP+JWT"}, "typ"),
        ({"typ": DROP}, "typ"),
        ({"crit": ["exp"]}, "crit"),
        ({"jwk": DROP}, "jwk is not a JSON object"),
        ({"jwk": "key"}, "jwk is not a JSON object"),
    ],
)
def test_bad_headers(key: PrivateKey, changes: dict[str, Any], reason: str) -> None:
    refused(make(key, **changes), reason)


def test_alg_none_with_no_signature() -> None:
    header = {
        "typ": "dpop+jwt",
        "alg": "none",
        "jwk": public_jwk(ec.generate_private_key(ec.SECP256R1())),
    }
    refused(f"{segment(header)}.{segment(claims())}.", "not a compact JWS")
    refused(f"{segment(header)}.{segment(claims())}.AA", "unsupported alg")


def test_hs256_with_a_symmetric_jwk() -> None:
    secret = b"s" * 32
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(secret)}}
    signed = f"{segment(header)}.{segment(claims())}"
    mac = hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()
    refused(f"{signed}.{b64(mac)}", "unsupported alg")


def test_a_jwk_with_private_members(key: PrivateKey) -> None:
    jwk = public_jwk(key)
    refused(make(key, jwk={**jwk, "d": b64(bytes(32))}), "private key")
    refused(make(key, jwk={**jwk, "k": "AA"}), "private key")


def test_keys_on_other_curves() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    refused(make(p384), "ES256 needs an EC P-256 jwk")  # honest crv: P-384
    refused(make(p384, jwk={**public_jwk(p384), "crv": "P-256"}), "not 32 bytes")
    k256 = ec.generate_private_key(ec.SECP256K1())
    refused(make(k256), "ES256 needs an EC P-256 jwk")  # crv secp256k1
    refused(make(k256, jwk={**public_jwk(k256), "crv": "P-256"}), "not a point on P-256")
    ed = ed25519.Ed25519PrivateKey.generate()
    refused(make(ed, alg="ES256"), "ES256 needs an EC P-256 jwk")
    p256 = ec.generate_private_key(ec.SECP256R1())
    refused(make(p256, alg="EdDSA"), "EdDSA needs an OKP Ed25519 jwk")
    refused(make(ed, jwk={**public_jwk(ed), "crv": "X25519"}), "EdDSA needs an OKP Ed25519 jwk")


def test_a_coordinate_spelled_another_way() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key)
    last = jwk["x"][-1]
    # 32 bytes in 43 characters: the last character's low 2 bits are padding.
    other = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = other[other.index(last) ^ 1]
    refused(make(key, jwk={**jwk, "x": jwk["x"][:-1] + twin}), "jwk x is not 32 bytes")
    refused(make(key, jwk={**jwk, "x": jwk["x"] + "="}), "jwk x is not base64url")
    refused(make(key, jwk={**jwk, "y": jwk["y"].replace("-", "+")[:-1] + "+"}), "jwk y")


@pytest.mark.parametrize("size", [0, 63, 65, 72])
def test_wrong_length_signatures(key: PrivateKey, size: int) -> None:
    head, body, _ = make(key).split(".")
    refused(
        f"{head}.{body}.{b64(bytes(range(size)))}" if size else f"{head}.{body}.",
        "64 bytes|compact",
    )


def test_a_signature_by_another_key_than_the_jwk(key: PrivateKey) -> None:
    other = (
        ed25519.Ed25519PrivateKey.generate()
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else ec.generate_private_key(ec.SECP256R1())
    )
    refused(make(key, signer=other), "signature does not verify")
    head, _, signature = make(key).split(".")
    refused(f"{head}.{segment(claims(jti='changed'))}.{signature}", "signature does not verify")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"htm": "POST"}, "htm"),
        ({"htm": "get"}, "htm"),
        ({"htm": DROP}, "htm"),
        ({"htu": "https://evil.example.com/api/v1/sessions"}, "htu"),
        ({"htu": "https://api.example.com/api/v1/session"}, "htu"),
        ({"htu": "https://api.example.com/api/v1/sessions/"}, "htu"),
        ({"htu": "http://api.example.com/api/v1/sessions"}, "htu"),
        ({"htu": "https://api.example.com:8443/api/v1/sessions"}, "htu"),
        ({"htu": "https://api.example.com/api/v1/ses\tsions"}, "htu"),
        ({"htu": "/api/v1/sessions"}, "htu"),
        ({"htu": DROP}, "htu"),
        ({"iat": NOW - MAX_AGE - 1}, "too old"),
        ({"iat": NOW + dpop.FUTURE_SKEW + 1}, "future"),
        ({"iat": str(NOW)}, "iat is not a number"),
        ({"iat": True}, "iat is not a number"),
        ({"iat": None}, "iat is not a number"),
        ({"iat": DROP}, "iat is not a number"),
        ({"iat": 10**2000}, "future"),
        ({"iat": -(10**2000)}, "too old"),
        ({"jti": DROP}, "jti"),
        ({"jti": 12345}, "jti"),
        ({"jti": ["a"]}, "jti"),
        ({"jti": ""}, "jti"),
        ({"jti": "j" * (dpop.MAX_JTI_LENGTH + 1)}, "jti"),
        ({"ath": "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEp"}, "ath"),
        ({"ath": dpop.access_token_hash("another token")}, "ath"),
        ({"ath": DROP}, "ath"),
        ({"ath": None}, "ath"),
    ],
)
def test_bad_claims(key: PrivateKey, changes: dict[str, Any], reason: str) -> None:
    refused(make(key, body=claims(**changes)), reason)


def test_the_longest_jti_passes() -> None:
    jti = "j" * dpop.MAX_JTI_LENGTH
    assert check(make(body=claims(jti=jti))).jti == jti


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
def test_iat_beyond_a_float(number: str) -> None:
    body = json.dumps(claims()).replace(str(NOW), number)
    reason = "iat is not a number" if "e" in number else "claims is not JSON"
    refused(make(body=body), reason)


def test_an_access_token_outside_ascii_matches_no_ath() -> None:
    refused(make(), "ath", access_token="tökén")


@pytest.mark.parametrize("body", ["[]", '"text"', "1", "null", "{", '{"jti":"a"} x', "\udcff"])
def test_claims_that_are_not_a_json_object(body: str) -> None:
    text = body.encode("utf-8", "surrogateescape")
    key = ec.generate_private_key(ec.SECP256R1())
    head = segment({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)})
    signed = f"{head}.{b64(text)}"
    refused(f"{signed}.{b64(sign(key, signed.encode('ascii')))}", "claims is not")


# -- only ever ProofError ---------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
HEADER_MEMBERS = ["typ", "alg", "jwk", "crit"]
JWK_MEMBERS = ["kty", "crv", "x", "y", "d"]
CLAIM_MEMBERS = ["jti", "htm", "htu", "iat", "ath"]
WRONG: list[Any] = [None, True, False, 0, -1, 1.5, 10**30, "", "x" * 3000, [], {}, [1], {"a": 1}]


def only_proof_errors(value: str, access_token: str | None = TOKEN) -> None:
    # Any other exception fails the test.
    with contextlib.suppress(ProofError):
        check(value, access_token=access_token)


@given(value=st.text(max_size=300))
@PROPERTIES
def test_any_text(value: str) -> None:
    only_proof_errors(value)


@given(
    parts=st.lists(
        st.binary(max_size=200).map(b64) | st.text(alphabet="AZaz09-_=+/.", max_size=80),
        min_size=1,
        max_size=4,
    )
)
@PROPERTIES
def test_any_segments(parts: list[str]) -> None:
    only_proof_errors(".".join(parts))


@given(header=JSON_VALUES, body=JSON_VALUES, signature=st.binary(max_size=80))
@PROPERTIES
def test_any_json_in_the_segments(header: Any, body: Any, signature: bytes) -> None:
    only_proof_errors(
        f"{segment(json.dumps(header))}.{segment(json.dumps(body))}.{b64(signature) or 'A'}"
    )


@given(name=st.sampled_from(HEADER_MEMBERS), value=JSON_VALUES)
@PROPERTIES
def test_any_value_of_a_header_member(name: str, value: Any) -> None:
    only_proof_errors(make(**{name: value}))


@given(name=st.sampled_from(JWK_MEMBERS), value=JSON_VALUES)
@PROPERTIES
def test_any_value_of_a_jwk_member(name: str, value: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    only_proof_errors(make(key, jwk={**public_jwk(key), name: value}))


@given(name=st.sampled_from(CLAIM_MEMBERS), value=JSON_VALUES, token=st.booleans())
@PROPERTIES
def test_any_value_of_a_claim(name: str, value: Any, token: bool) -> None:
    # Signed by the key, so the checks of the claims themselves run.
    only_proof_errors(make(body=claims(**{name: value})), TOKEN if token else None)


def test_every_kind_of_value_in_every_member_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key)
    for value in WRONG:
        for name in ("typ", "alg", "jwk"):
            refused(make(key, **{name: value}), ".")
        for name in ("kty", "crv", "x", "y"):
            refused(make(key, jwk={**jwk, name: value}), ".")
        for name in CLAIM_MEMBERS:
            refused(make(key, body=claims(**{name: value})), ".")


@given(position=st.integers(min_value=0), character=st.sampled_from("AQgw-_x.,= "))
@PROPERTIES
def test_a_changed_character_is_refused(position: int, character: str) -> None:
    good = make(ed25519.Ed25519PrivateKey.generate())
    position %= len(good)
    changed = good[:position] + character + good[position + 1 :]
    if changed == good:
        return
    try:
        check(changed)
    except ProofError:
        return
    # Only the signature's last character has spare bits (64 bytes in 86
    # characters): a twin spelling of the same signature.
    assert position == len(good) - 1
