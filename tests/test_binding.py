"""DPoP on the request path (docs/api.md section 13): bound sign-ins, bad
proofs, bound tokens used with and without their key, refresh and logout.

Each runs on fakeredis, a real Redis server and a Redis Cluster (the
``backend`` fixture). tests/test_dpop.py checks proofs on their own; these
check what the service does with them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from sessionsvc import DPoPKey, current_manager, signals
from sessionsvc.models import User
from tests.backends import Backend
from tests.clients import CHROME, assert_problem, fast_hash
from tests.test_dpop import DROP, b64, make, public_jwk, segment
from tests.test_extension import commands_of

BASE = "http://localhost"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
SESSIONS = "/api/v1/sessions"
CHALLENGE = 'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"'


# -- helpers -------------------------------------------------------------------


def ensure_user(app: Flask, name: str = "alice") -> None:
    with app.app_context():
        store = current_manager().store
        if store.get_user(name) is None:
            store.create_user(User(name, fast_hash("pw")))


def sign_in(
    app: Flask,
    key: DPoPKey | None = None,
    *,
    proof: str | None = None,
    user: str = "alice",
    create: bool = True,
) -> Any:
    """POST the login, with ``key``'s proof (or the ``proof`` given, or none)."""
    if create:
        ensure_user(app, user)
    if key is not None:
        proof = key.proof("POST", BASE + LOGIN)
    headers = {"User-Agent": CHROME, **({"DPoP": proof} if proof is not None else {})}
    body = {"username": user, "password": "pw"}
    return app.test_client().post(LOGIN, json=body, headers=headers)


def bound_login(app: Flask, key: DPoPKey, user: str = "alice") -> dict[str, Any]:
    response = sign_in(app, key, user=user)
    assert response.status_code == 200, response.get_json()
    tokens: dict[str, Any] = response.get_json()
    assert tokens["token_type"] == "DPoP"
    return tokens


def signed(key: DPoPKey, method: str, path: str, token: str) -> dict[str, str]:
    """The headers of a request by ``key``'s device: ``Authorization: DPoP`` and a fresh proof."""
    return {"User-Agent": CHROME, **key.headers(method, BASE + path, token)}


def with_proof(proof: str, token: str, scheme: str = "DPoP") -> dict[str, str]:
    return {"User-Agent": CHROME, "Authorization": f"{scheme} {token}", "DPoP": proof}


def bearer(token: str) -> dict[str, str]:
    return {"User-Agent": CHROME, "Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def event_types(app: Flask, user: str = "alice") -> list[tuple[str, dict[str, Any]]]:
    """The user's security events, oldest first: (type, detail)."""
    with app.app_context():
        found = current_manager().store.events(user, limit=100)
    return [(event.type, event.detail) for event in reversed(found)]


def mismatches(app: Flask) -> int:
    kind = {"kind": "dpop_mismatch"}
    return sum(
        1 for type_, detail in event_types(app) if (type_, detail) == ("session.anomaly", kind)
    )


def all_keys(rc: redis.Redis, backend: Backend) -> dict[str, Any]:
    """Every key of the test's store, with its value (hash or string) or type."""
    found: dict[str, Any] = {}
    for key in rc.scan_iter(match=f"{backend.prefix}:*", count=1000):
        kind = rc.type(key)
        found[key] = (
            rc.hgetall(key) if kind == "hash" else rc.get(key) if kind == "string" else kind
        )
    return found


# -- signing in bound -----------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_sign_in_with_a_proof_is_bound_to_its_key(
    app: Flask, backend: Backend, rc: redis.Redis, alg: str
) -> None:
    key = DPoPKey.generate(alg)
    tokens = bound_login(app, key)
    for kind, type_ in [("access_token", "access"), ("refresh_token", "refresh")]:
        claims = claims_of(tokens[kind])
        assert claims["cnf"] == {"jkt": key.jkt}
        assert claims["type"] == type_
    with app.app_context():
        session_key = current_manager().store.session_key("alice", tokens["session_id"])
    assert rc.hget(session_key, "k") == key.jkt
    client = app.test_client()
    listed = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, tokens["access_token"]))
    assert listed.status_code == 200, listed.get_json()
    assert [(s["id"], s["dpop_bound"]) for s in listed.get_json()["sessions"]] == [
        (tokens["session_id"], True)
    ]
    path = f"{SESSIONS}/{tokens['session_id']}"
    one = client.get(path, headers=signed(key, "GET", path, tokens["access_token"]))
    assert one.status_code == 200, one.get_json()
    assert one.get_json()["dpop_bound"] is True


def test_a_sign_in_without_a_proof_gets_bearer_tokens(
    app: Flask, backend: Backend, rc: redis.Redis
) -> None:
    response = sign_in(app)
    assert response.status_code == 200
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in claims_of(tokens["access_token"])
    assert "cnf" not in claims_of(tokens["refresh_token"])
    with app.app_context():
        session_key = current_manager().store.session_key("alice", tokens["session_id"])
    assert rc.hget(session_key, "k") is None
    listed = app.test_client().get(SESSIONS, headers=bearer(tokens["access_token"]))
    assert [s["dpop_bound"] for s in listed.get_json()["sessions"]] == [False]


# -- bad proofs at sign-in ------------------------------------------------------


def login_claims(**changes: Any) -> dict[str, Any]:
    found = {"jti": "a-fresh-jti", "htm": "POST", "htu": BASE + LOGIN, "iat": int(time.time())}
    return {name: value for name, value in (found | changes).items() if value is not DROP}


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def unsigned(alg: str) -> str:
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(p256())}
    return f"{segment(header)}.{segment(login_claims())}."


def hmac_signed() -> str:
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(b"secret")}}
    signed = f"{segment(header)}.{segment(login_claims())}"
    return f"{signed}.{b64(hmac.new(b'secret', signed.encode(), hashlib.sha256).digest())}"


def with_private_member() -> str:
    key = p256()
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return make(key, body=login_claims(), jwk={**public_jwk(key), "d": b64(private)})


def short_signature() -> str:
    head, body, signature = make(p256(), body=login_claims()).split(".")
    return f"{head}.{body}.{signature[:-4]}"


def bad_base64() -> str:
    head, _, signature = make(p256(), body=login_claims()).split(".")
    return f"{head}.eyJqdGkiOi$$.{signature}"


BAD_PROOFS = {
    "not a JWT": lambda: "not-a-jwt",
    "bad base64": bad_base64,
    "huge header": lambda: make(p256(), body=login_claims(), pad="x" * 5000),
    "unknown alg": lambda: make(p256(), body=login_claims(), alg="ES512"),
    "alg none": lambda: unsigned("none"),
    "HS256": hmac_signed,
    "jwk with d": with_private_member,
    "P-384 with ES256": lambda: make(ec.generate_private_key(ec.SECP384R1()), body=login_claims()),
    "wrong-length signature": short_signature,
    "two proofs joined": lambda: ", ".join(make(p256(), body=login_claims()) for _ in range(2)),
    "wrong htm": lambda: make(p256(), body=login_claims(htm="GET")),
    "wrong htu": lambda: make(p256(), body=login_claims(htu=BASE + SESSIONS)),
    "stale iat": lambda: make(p256(), body=login_claims(iat=int(time.time()) - 120)),
    "future iat": lambda: make(p256(), body=login_claims(iat=int(time.time()) + 60)),
}


def test_the_bad_proofs_are_bad_only_in_their_one_way(app: Flask) -> None:
    # The same construction with nothing wrong signs in bound: each case
    # below is refused for what it changes, not for how it is built.
    key = p256()
    response = sign_in(app, proof=make(key, body=login_claims()))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    assert claims_of(response.get_json()["access_token"])["cnf"] == {
        "jkt": DPoPKey.from_private_key(key).jkt
    }


@pytest.mark.parametrize("kind", list(BAD_PROOFS))
def test_a_sign_in_with_a_bad_proof_is_refused_and_writes_nothing(
    app: Flask,
    backend: Backend,
    rc: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    ensure_user(app)
    proof = BAD_PROOFS[kind]()
    if kind == "huge header":
        assert len(proof) > 5000
    before = all_keys(rc, backend)
    sent = commands_of(app, monkeypatch)
    response = sign_in(app, proof=proof, create=False)
    body = assert_problem(response, 400, "invalid_dpop_proof")
    assert proof[:20] not in body["detail"]
    assert sent == []  # refused before the password is checked or anything is asked
    assert all_keys(rc, backend) == before
    with app.app_context():
        assert current_manager().list_for("alice") == []


# -- using a bound token ----------------------------------------------------------


def test_a_bound_token_with_a_fresh_proof_passes_and_a_replay_is_refused(
    app: Flask, key: DPoPKey
) -> None:
    tokens = bound_login(app, key)
    client = app.test_client()
    headers = signed(key, "GET", SESSIONS, tokens["access_token"])
    assert client.get(SESSIONS, headers=headers).status_code == 200
    replay = client.get(SESSIONS, headers=headers)
    assert_problem(replay, 401, "invalid_dpop_proof")
    assert replay.headers["WWW-Authenticate"] == CHALLENGE
    # A new proof passes again; a replay records no anomaly.
    assert (
        client.get(
            SESSIONS, headers=signed(key, "GET", SESSIONS, tokens["access_token"])
        ).status_code
        == 200
    )
    assert mismatches(app) == 0


def test_a_bound_token_as_bearer_is_refused_and_recorded_once_per_touch_interval(
    app: Flask, key: DPoPKey, clock: Any
) -> None:
    tokens = bound_login(app, key)
    client = app.test_client()
    thief = {"REMOTE_ADDR": "203.0.113.9"}
    sent: list[Any] = []
    with signals.session_anomaly.connected_to(record_signal(sent)):
        for _ in range(3):
            refused = client.get(
                SESSIONS, headers=bearer(tokens["access_token"]), environ_base=thief
            )
            assert_problem(refused, 401, "invalid_dpop_proof")
            assert refused.headers["WWW-Authenticate"] == CHALLENGE
    assert mismatches(app) == 1
    with app.app_context():
        [anomaly] = [
            e
            for e in current_manager().store.events("alice", limit=100)
            if e.type == "session.anomaly"
        ]
    assert (anomaly.session_id, anomaly.ip, anomaly.detail) == (
        tokens["session_id"],
        "203.0.113.9",
        {"kind": "dpop_mismatch"},
    )
    assert sent == [("alice", tokens["session_id"], {"kind": "dpop_mismatch"}, False)]
    clock.shift(61)  # past the touch interval (60 s): recorded again
    assert_problem(
        client.get(SESSIONS, headers=bearer(tokens["access_token"])), 401, "invalid_dpop_proof"
    )
    assert mismatches(app) == 2
    # The session lives on: its own device still gets in.
    ok = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, tokens["access_token"]))
    assert ok.status_code == 200


def record_signal(sent: list[Any]) -> Any:
    """A receiver of ``session_anomaly`` that keeps (user, session, detail, revoked)."""

    def receive(_: Any, **fields: Any) -> None:
        sent.append((fields["user_id"], fields["session_id"], fields["detail"], fields["revoked"]))

    return receive


def test_another_keys_proof_is_refused_and_recorded(app: Flask, key: DPoPKey) -> None:
    tokens = bound_login(app, key)
    thief = DPoPKey.generate()
    response = app.test_client().get(
        SESSIONS, headers=signed(thief, "GET", SESSIONS, tokens["access_token"])
    )
    assert_problem(response, 401, "invalid_dpop_proof")
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert mismatches(app) == 1


def test_a_proof_for_another_token_or_none_is_refused_and_records_nothing(
    app: Flask, key: DPoPKey, backend: Backend, rc: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = bound_login(app, key)
    other = bound_login(app, key)
    client = app.test_client()
    before = all_keys(rc, backend)
    sent = commands_of(app, monkeypatch)
    token = tokens["access_token"]
    for headers in [
        # ath of another token by the right key
        with_proof(key.proof("GET", BASE + SESSIONS, access_token=other["access_token"]), token),
        # no ath at all
        with_proof(key.proof("GET", BASE + SESSIONS), token),
        # the DPoP scheme and no proof
        {"User-Agent": CHROME, "Authorization": f"DPoP {token}"},
        # a proof for another method, another URL
        with_proof(key.proof("POST", BASE + SESSIONS, access_token=token), token),
        with_proof(key.proof("GET", BASE + LOGIN, access_token=token), token),
        # stale
        with_proof(
            key.proof("GET", BASE + SESSIONS, access_token=token, iat=int(time.time()) - 120), token
        ),
    ]:
        response = client.get(SESSIONS, headers=headers)
        assert_problem(response, 401, "invalid_dpop_proof")
        assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert sent == []
    assert all_keys(rc, backend) == before
    assert mismatches(app) == 0


def test_a_mismatch_revokes_the_session_when_anomalies_revoke(make_app: Any, key: DPoPKey) -> None:
    app = make_app(SESSIONSVC_REVOKE_ON_ANOMALY=True)
    tokens = bound_login(app, key)
    client = app.test_client()
    sent: list[Any] = []
    with signals.session_anomaly.connected_to(record_signal(sent)):
        refused = client.get(SESSIONS, headers=bearer(tokens["access_token"]))
    assert_problem(refused, 401, "invalid_dpop_proof")
    assert sent == [("alice", tokens["session_id"], {"kind": "dpop_mismatch"}, True)]
    after = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, tokens["access_token"]))
    assert_problem(after, 401, "session_revoked")
    revoked = [d for t, d in event_types(app) if t == "session.revoked"]
    assert revoked == [{"reason": "anomaly"}]
    assert mismatches(app) == 1


def test_the_verified_token_cache_lets_no_bound_token_through_without_a_proof(
    app: Flask, key: DPoPKey
) -> None:
    tokens = bound_login(app, key)
    client = app.test_client()
    token = tokens["access_token"]
    for _ in range(2):  # verified, then served from the cache
        assert client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, token)).status_code == 200
    assert_problem(client.get(SESSIONS, headers=bearer(token)), 401, "invalid_dpop_proof")
    no_proof = {"User-Agent": CHROME, "Authorization": f"DPoP {token}"}
    assert_problem(client.get(SESSIONS, headers=no_proof), 401, "invalid_dpop_proof")


# -- refresh and logout ---------------------------------------------------------------


def refresh(app: Flask, headers: dict[str, str]) -> Any:
    return app.test_client().post(REFRESH, headers=headers)


def assert_alive(app: Flask, key: DPoPKey, tokens: dict[str, Any]) -> None:
    token = tokens["access_token"]
    response = app.test_client().get(SESSIONS, headers=signed(key, "GET", SESSIONS, token))
    assert response.status_code == 200, response.get_json()
    assert tokens["session_id"] in [s["id"] for s in response.get_json()["sessions"]]


def test_a_bound_refresh_keeps_the_binding(app: Flask, key: DPoPKey) -> None:
    tokens = bound_login(app, key)
    response = refresh(app, signed(key, "POST", REFRESH, tokens["refresh_token"]))
    assert response.status_code == 200, response.get_json()
    renewed = response.get_json()
    assert renewed["token_type"] == "DPoP"
    assert renewed["session_id"] == tokens["session_id"]
    for kind in ("access_token", "refresh_token"):
        assert claims_of(renewed[kind])["cnf"] == {"jkt": key.jkt}
    assert_alive(app, key, renewed)
    # The old refresh token is spent: used again (with a fresh proof) it is reuse.
    again = refresh(app, signed(key, "POST", REFRESH, tokens["refresh_token"]))
    assert_problem(again, 401, "refresh_token_reused")


def test_a_refused_refresh_consumes_nothing(app: Flask, key: DPoPKey) -> None:
    tokens = bound_login(app, key)
    token = tokens["refresh_token"]
    # The jti of a proof accepted before, in a proof for this refresh.
    used = key.proof("GET", BASE + SESSIONS, access_token=tokens["access_token"])
    assert (
        app.test_client()
        .get(SESSIONS, headers=with_proof(used, tokens["access_token"]))
        .status_code
        == 200
    )
    used_jti = claims_of(used)["jti"]
    for headers in [
        bearer(token),
        with_proof(key.proof("POST", BASE + REFRESH, access_token=token, jti=used_jti), token),
        with_proof(key.proof("GET", BASE + REFRESH, access_token=token), token),
        with_proof(DPoPKey.generate().proof("POST", BASE + REFRESH, access_token=token), token),
        {"User-Agent": CHROME, "Authorization": f"DPoP {token}"},
    ]:
        response = refresh(app, headers)
        assert_problem(response, 401, "invalid_dpop_proof")
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert_alive(app, key, tokens)
    response = refresh(app, signed(key, "POST", REFRESH, token))
    assert response.status_code == 200, response.get_json()
    assert_alive(app, key, response.get_json())


def test_a_replayed_refresh_proof_is_refused_after_the_refresh(app: Flask, key: DPoPKey) -> None:
    tokens = bound_login(app, key)
    headers = signed(key, "POST", REFRESH, tokens["refresh_token"])
    renewed = refresh(app, headers)
    assert renewed.status_code == 200
    # Replayed, the proof is refused before the token's reuse is judged:
    # the session and its new tokens live on.
    assert_problem(refresh(app, headers), 401, "invalid_dpop_proof")
    assert_alive(app, key, renewed.get_json())


def test_logout_needs_a_proof(app: Flask, key: DPoPKey) -> None:
    tokens = bound_login(app, key)
    token = tokens["access_token"]
    client = app.test_client()
    assert_problem(client.post(LOGOUT, headers=bearer(token)), 401, "invalid_dpop_proof")
    no_proof = {"User-Agent": CHROME, "Authorization": f"DPoP {token}"}
    assert_problem(client.post(LOGOUT, headers=no_proof), 401, "invalid_dpop_proof")
    assert_alive(app, key, tokens)
    assert client.post(LOGOUT, headers=signed(key, "POST", LOGOUT, token)).status_code == 204
    after = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, token))
    assert_problem(after, 401, "session_revoked")
