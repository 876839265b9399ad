"""sessionsvc.tokens: the verified-token cache in front of flask-jwt-extended's
decoding. Only verified tokens enter; expiry, signing keys, revocation and
the host's own views behave exactly as without it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import time
from typing import Any

import time_machine
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, decode_token, get_jwt, get_jwt_header, jwt_required

from sessionsvc.token_cache import (
    HEADERS,
    VerifiedHeaders,
    VerifiedTokens,
    cache_verified_tokens,
    read_verified_headers,
)
from tests.backends import Backend, host_app
from tests.clients import CHROME, JWT_KEY, assert_jwt_answer


def cache_of(app: Flask) -> VerifiedTokens:
    decode = app.extensions["flask-jwt-extended"]._decode_jwt_from_config
    cache: VerifiedTokens = decode.sessionsvc_cache
    return cache


def signed_in(app: Flask, user: str = "alice") -> tuple[str, dict[str, str]]:
    client = app.test_client()
    tokens = client.post(f"/login/{user}", headers={"User-Agent": CHROME}).get_json()
    return tokens["session_id"], {
        "Authorization": f"Bearer {tokens['access_token']}",
        "User-Agent": CHROME,
    }


def test_flask_jwt_extended_decodes_as_the_cache_expects() -> None:
    # If this fails, flask-jwt-extended changed the step the cache wraps:
    # read cache_verified_tokens again before upgrading.
    parameters = list(inspect.signature(JWTManager._decode_jwt_from_config).parameters)
    assert parameters == ["self", "encoded_token", "csrf_value", "allow_expired"]
    import flask_jwt_extended.utils

    assert "jwt_manager._decode_jwt_from_config(" in inspect.getsource(
        flask_jwt_extended.utils.decode_token
    )
    assert cache_verified_tokens(JWTManager(Flask("plain"))) is not None


def test_a_token_is_verified_once_then_looked_up(backend: Backend) -> None:
    app, _ = host_app(backend)
    _, headers = signed_in(app)
    client = app.test_client()
    cache = cache_of(app)
    assert client.get("/things", headers=headers).status_code == 200
    assert (len(cache), cache.hits) == (1, 0)
    assert client.get("/things", headers=headers).status_code == 200
    assert client.get("/api/v1/sessions", headers=headers).status_code == 200
    assert cache.hits == 2
    with app.test_request_context(headers=headers):
        token = headers["Authorization"].split()[1]
        assert decode_token(token)["sub"] == "alice"
    assert cache.hits == 3


def test_the_revocation_check_runs_on_every_cached_token(backend: Backend) -> None:
    app, sessions = host_app(backend)
    session_id, headers = signed_in(app)
    client = app.test_client()
    assert client.get("/things", headers=headers).status_code == 200
    with app.app_context():
        assert sessions.revoke("alice", session_id)
    response = client.get("/things", headers=headers)
    assert_jwt_answer(response, 401, "Token has been revoked")
    assert cache_of(app).hits == 1  # it was a hit, and still refused


def test_an_expired_token_is_refused_on_a_hit(backend: Backend) -> None:
    app, _ = host_app(backend)
    _, headers = signed_in(app)
    client = app.test_client()
    assert client.get("/things", headers=headers).status_code == 200
    with time_machine.travel(time.time() + 15 * 60 + 1, tick=False):
        assert_jwt_answer(client.get("/things", headers=headers), 401, "Token has expired")
    assert len(cache_of(app)) == 0


def test_a_forged_token_never_enters(backend: Backend) -> None:
    app, _ = host_app(backend)
    _, headers = signed_in(app)
    token = headers["Authorization"].split()[1]
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    client = app.test_client()
    # A character inside the signature, not its last: the last one's low bits
    # are padding, so "...AA" for the last two is the same signature once
    # in 1024 tokens.
    other = "A" if signature[10] != "A" else "B"
    bad_signature = signature[:10] + other + signature[11:]
    for forged in (f"{head}.{forged_payload}.{signature}", f"{head}.{payload}.{bad_signature}"):
        response = client.get("/things", headers={**headers, "Authorization": f"Bearer {forged}"})
        assert_jwt_answer(response, 422, "Signature verification failed")
    assert len(cache_of(app)) == 0
    assert client.get("/things", headers=headers).status_code == 200


def test_a_new_signing_key_empties_the_cache(backend: Backend) -> None:
    app, _ = host_app(backend)
    _, headers = signed_in(app)
    client = app.test_client()
    assert client.get("/things", headers=headers).status_code == 200
    app.config["JWT_SECRET_KEY"] = JWT_KEY[::-1] + "-rotated"
    assert_jwt_answer(client.get("/things", headers=headers), 422, "Signature verification failed")
    assert len(cache_of(app)) == 0


def test_a_view_that_changes_the_claims_changes_nothing_cached(backend: Backend) -> None:
    app, _ = host_app(backend)

    @app.get("/meddle")
    @jwt_required()
    def meddle() -> Any:
        claims = get_jwt()
        roles = list(claims["roles"])
        claims["roles"].append("admin")
        claims["sub"] = "root"
        return jsonify(roles)

    _, headers = signed_in(app)
    client = app.test_client()
    assert client.get("/meddle", headers=headers).get_json() == ["reader"]
    assert client.get("/meddle", headers=headers).get_json() == ["reader"]
    assert cache_of(app).hits == 1


def test_the_cache_is_bounded(backend: Backend) -> None:
    app, _ = host_app(backend)
    cache = cache_of(app)
    cache.maxsize = 3
    client = app.test_client()
    for n in range(5):
        _, headers = signed_in(app, f"user{n}")
        assert client.get("/things", headers=headers).status_code == 200
    assert len(cache) == 3


def test_an_app_with_its_own_decode_keys_decodes_every_time(backend: Backend) -> None:
    app, _ = host_app(backend)
    jwt = app.extensions["flask-jwt-extended"]

    @jwt.decode_key_loader
    def keys(header: dict[str, Any], payload: dict[str, Any]) -> str:
        return JWT_KEY

    _, headers = signed_in(app)
    client = app.test_client()
    for _ in range(2):
        assert client.get("/things", headers=headers).status_code == 200
    assert (len(cache_of(app)), cache_of(app).hits) == (0, 0)


def test_a_setting_changed_in_place_empties_the_cache(backend: Backend) -> None:
    app, _ = host_app(backend, JWT_ENCODE_AUDIENCE="mobile", JWT_DECODE_AUDIENCE=["mobile", "web"])
    _, headers = signed_in(app)
    client = app.test_client()
    assert client.get("/things", headers=headers).status_code == 200
    assert client.get("/things", headers=headers).status_code == 200
    assert cache_of(app).hits == 1
    app.config["JWT_DECODE_AUDIENCE"].remove("mobile")  # in place: mobile tokens are out
    assert_jwt_answer(client.get("/things", headers=headers), 422, "Audience doesn't match")


def test_a_decimal_exp_ends_as_pyjwt_ends_it() -> None:
    import jwt as pyjwt

    app = Flask("decimal-exp")
    app.config["JWT_SECRET_KEY"] = JWT_KEY
    manager = JWTManager(app)
    cache = cache_verified_tokens(manager)
    assert cache is not None
    start = int(time.time())
    token = pyjwt.encode(
        {"sub": "alice", "exp": start + 10.9, "big": 10**30}, JWT_KEY, algorithm="HS256"
    )
    with time_machine.travel(start, tick=False), app.test_request_context():
        assert decode_token(token)["big"] == 10**30
        assert decode_token(token)["big"] == 10**30
    assert cache.hits == 1
    with time_machine.travel(start + 10.5, tick=False), app.test_request_context():
        # PyJWT compares whole seconds of exp: expired at start + 10.
        try:
            decode_token(token)
            accepted = True
        except pyjwt.ExpiredSignatureError:
            accepted = False
    assert not accepted


def test_flask_jwt_extended_reads_headers_as_the_header_cache_expects(backend: Backend) -> None:
    # If this fails, flask-jwt-extended changed the read the header cache
    # answers: read read_verified_headers again before upgrading.
    import flask_jwt_extended.utils
    import flask_jwt_extended.view_decorators as views

    host_app(backend)
    source = inspect.getsource(views._decode_jwt_from_request)
    assert "jwt_header = get_unverified_jwt_headers(encoded_token)" in source
    assert views.get_unverified_jwt_headers.sessionsvc_headers is True
    original = flask_jwt_extended.utils.get_unverified_jwt_headers
    assert views.get_unverified_jwt_headers.__wrapped__ is original
    assert read_verified_headers() is True  # once: not wrapped twice
    assert views.get_unverified_jwt_headers.__wrapped__ is original


def test_a_verified_token_s_header_is_parsed_once(backend: Backend, monkeypatch: Any) -> None:
    import jwt as pyjwt

    parsed: list[str] = []
    parse = pyjwt.get_unverified_header

    def counting(token: str) -> dict[str, Any]:
        parsed.append(token)
        return parse(token)

    monkeypatch.setattr(pyjwt, "get_unverified_header", counting)
    app, _ = host_app(backend)
    _, headers = signed_in(app)
    client = app.test_client()
    assert client.get("/things", headers=headers).status_code == 200
    # When it was verified: flask-jwt-extended's full decode, and the header kept.
    assert parsed == [headers["Authorization"].split()[1]] * 2
    for _ in range(3):
        assert client.get("/things", headers=headers).status_code == 200
        assert client.get("/api/v1/sessions", headers=headers).status_code == 200
    assert len(parsed) == 2


def plain_app() -> Flask:
    """An app of the same process without sessionsvc, that shows the header it read."""
    app = Flask("plain")
    app.config["JWT_SECRET_KEY"] = JWT_KEY
    JWTManager(app)

    @app.get("/header")
    @jwt_required()
    def header() -> Any:
        seen = get_jwt_header()
        shown = json.loads(json.dumps(seen))
        seen["alg"] = "none"  # a view that changes it changes nothing kept
        seen.get("x", {}).clear()
        return jsonify(shown)

    return app


def test_an_app_without_sessionsvc_reads_the_headers_it_would(backend: Backend) -> None:
    import jwt as pyjwt

    host, _ = host_app(backend)
    _, headers = signed_in(host)
    token = headers["Authorization"].split()[1]
    assert host.test_client().get("/things", headers=headers).status_code == 200
    assert HEADERS.get(token) == {"alg": "HS256", "typ": "JWT"}
    client = plain_app().test_client()
    for _ in range(2):
        response = client.get("/header", headers=headers)
        assert response.get_json() == pyjwt.get_unverified_header(token)
        assert response.get_json() == {"alg": "HS256", "typ": "JWT"}
    # A header with nested values, padded with "=" as some issuers do.
    head = {"alg": "HS256", "typ": "JWT", "kid": "k1", "x": {"n": [1, 2.5, None]}}
    own = pyjwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, JWT_KEY, headers=head)
    first, payload, _ = own.split(".")
    signing_input = (first + "=" * (-len(first) % 4) + "." + payload).encode()
    digest = hmac.new(JWT_KEY.encode(), signing_input, hashlib.sha256).digest()
    padded = signing_input.decode() + "." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert padded != own
    for text in (own, padded):
        with host.test_request_context():
            assert decode_token(text)["sub"] == "bob"  # verified: its header is kept
        answers = [
            client.get("/header", headers={"Authorization": f"Bearer {text}"}).get_json()
            for _ in range(2)
        ]
        assert answers == [pyjwt.get_unverified_header(text)] * 2
        assert answers[0]["x"] == {"n": [1, 2.5, None]}
        assert HEADERS.get(text) == answers[0]
    # Tokens that are refused answer as before: none of them is kept.
    for junk in ("abc", "a.b.c", own[:-3] + "AAA"):
        response = client.get("/header", headers={"Authorization": f"Bearer {junk}"})
        assert response.status_code == 422
        assert HEADERS.get(junk) is None


def test_the_header_cache_is_bounded() -> None:
    import jwt as pyjwt

    headers = VerifiedHeaders(maxsize=2)
    texts = [pyjwt.encode({"n": n}, JWT_KEY, headers={"kid": str(n)}) for n in range(3)]
    for text in texts:
        headers.put(text)
    assert len(headers) == 2
    assert headers.get(texts[0]) is None
    assert headers.get(texts[2]) == {"alg": "HS256", "typ": "JWT", "kid": "2"}
    headers.put("not.a-token")
    headers.put("!!!.e30.e30")
    assert (len(headers), headers.get(["unhashable"])) == (2, None)
