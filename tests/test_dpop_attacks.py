"""DPoP attacked from outside (docs/api.md section 13): the request line and
Host tricks, token substitution, concurrent refreshes, floods, proof keys in
the store, mode and window changes, a host's own error answers.

The test marked ``xfail(strict=True)`` shows a limit docs/api.md states (a
raised ``SESSIONSVC_DPOP_MAX_AGE`` does not cover proofs accepted under the
old window): it passes, and so fails the run, once the limit is lifted; drop
the mark then.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
import redis
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, get_jwt, jwt_required

from sessionsvc import DPoPKey, SessionManager, current_manager
from sessionsvc.store.keys import proof_digest
from tests.backends import AppFactory, Backend, host_app, record_commands
from tests.clients import CHROME, JWT_KEY, assert_problem
from tests.test_binding import (
    BASE,
    CHALLENGE,
    LOGOUT,
    REFRESH,
    SESSIONS,
    all_keys,
    bearer,
    bound_login,
    claims_of,
    event_types,
    mismatches,
    signed,
    with_proof,
)
from tests.test_binding_modes import host_login


def proof_for(key: DPoPKey, method: str, url: str, token: str, **extra: str) -> dict[str, str]:
    return {**with_proof(key.proof(method, url, access_token=token), token), **extra}


# -- htu and the Host header ----------------------------------------------------------


@pytest.mark.parametrize(
    "htu",
    [
        BASE + SESSIONS + "/",
        BASE + "/api/v1//sessions",
        BASE + "/api/v1/./sessions",
        BASE + "/api/v1/x/../sessions",
        BASE + SESSIONS + ";a=b",
        BASE + "/api%2Fv1/sessions",
        "http://u@localhost" + SESSIONS,
        "http://localhost." + SESSIONS,
        "https://localhost" + SESSIONS,
        "http://localhost:8080" + SESSIONS,
    ],
)
def test_a_proof_for_another_spelling_of_the_path_or_host_is_refused(
    app: Flask, key: DPoPKey, htu: str
) -> None:
    token = bound_login(app, key)["access_token"]
    refused = app.test_client().get(SESSIONS, headers=proof_for(key, "GET", htu, token))
    assert_problem(refused, 401, "invalid_dpop_proof")
    assert refused.headers["WWW-Authenticate"] == CHALLENGE


@pytest.mark.parametrize(
    ("htu", "host"),
    [
        ("http://LOCALHOST" + SESSIONS, "localhost"),
        (BASE + SESSIONS, "LocalHost"),
        ("http://localhost:80" + SESSIONS, "localhost"),
        (BASE + SESSIONS, "localhost:80"),
        (BASE + "/api/v1/%73ession%73", "localhost"),
        ("http://[::1]:5000" + SESSIONS, "[::1]:5000"),
        ("http://localhost." + SESSIONS, "localhost."),
    ],
)
def test_a_proof_is_accepted_once_however_its_url_is_spelled(
    app: Flask, key: DPoPKey, htu: str, host: str
) -> None:
    token = bound_login(app, key)["access_token"]
    client = app.test_client()
    headers = proof_for(key, "GET", htu, token, Host=host)
    assert client.get(SESSIONS, headers=headers).status_code == 200
    # The same proof again, under another spelling of the same URL: a replay.
    again = {**headers, "Host": "LOCALHOST:80" if "[" not in host else host}
    assert_problem(client.get(SESSIONS, headers=again), 401, "invalid_dpop_proof")


def test_a_proof_for_one_method_or_route_is_refused_on_another(app: Flask, key: DPoPKey) -> None:
    token = bound_login(app, key)["access_token"]
    client = app.test_client()
    for_get = proof_for(key, "GET", BASE + SESSIONS, token)
    head = client.head(SESSIONS, headers=for_get)
    assert (head.status_code, head.headers["WWW-Authenticate"]) == (401, CHALLENGE)
    assert_problem(client.post(LOGOUT, headers=for_get), 401, "invalid_dpop_proof")
    # Nothing was consumed: the same proof still works where it was made for.
    assert client.get(SESSIONS, headers=for_get).status_code == 200


def percent_app(backend: Backend) -> Flask:
    app, _ = host_app(backend)

    @app.get("/files/<name>")
    @jwt_required()
    def file(name: str) -> Any:
        return jsonify(name)

    return app


def test_a_literal_percent_in_the_path_is_not_read_as_an_escape(
    backend: Backend, key: DPoPKey
) -> None:
    app = percent_app(backend)
    token = host_login(app, key).get_json()["access_token"]
    client = app.test_client()
    # /files/%2573 is the file named "%73", not /files/s.
    moved = client.get("/files/%2573", headers=proof_for(key, "GET", BASE + "/files/s", token))
    assert_problem(moved, 401, "invalid_dpop_proof")
    own = client.get("/files/%2573", headers=proof_for(key, "GET", BASE + "/files/%2573", token))
    assert (own.status_code, own.get_json()) == (200, "%73")


def test_a_forwarded_host_with_a_path_cannot_move_a_proof_to_another_route(
    backend: Backend, key: DPoPKey
) -> None:
    app, _ = host_app(backend, SESSIONSVC_TRUSTED_PROXIES=1)

    @app.get("/admin/things")
    @jwt_required()
    def admin_things() -> Any:
        return jsonify(["secret"])

    token = host_login(app, key).get_json()["access_token"]
    # A proof the owner made for GET /admin/things, sent to GET /things by a
    # proxy that forwards the client's Host as it came.
    headers = proof_for(key, "GET", BASE + "/admin/things", token)
    headers["X-Forwarded-Host"] = "localhost/admin"
    moved = app.test_client().get("/things", headers=headers)
    assert_problem(moved, 401, "invalid_dpop_proof")


# -- token substitution -------------------------------------------------------------


def located_app(backend: Backend, locations: list[str]) -> Flask:
    app, _ = host_app(backend, JWT_TOKEN_LOCATION=locations)

    @app.get("/whoami")
    @jwt_required()
    def whoami() -> Any:
        return jsonify(get_jwt()["sub"])

    return app


def whoami_with(app: Flask, locations: list[str], token: str, headers: dict[str, str]) -> Any:
    """GET /whoami with ``token`` where ``locations`` looks first (a cookie, the query)."""
    client = app.test_client()
    if locations[0] == "cookies":
        client.set_cookie("access_token_cookie", token)
        return client.get("/whoami", headers=headers)
    return client.get(f"/whoami?jwt={token}", headers=headers)


@pytest.mark.parametrize("locations", [["cookies", "headers"], ["query_string", "headers"]])
def test_a_bound_token_in_a_cookie_or_the_query_needs_the_dpop_scheme(
    backend: Backend, key: DPoPKey, locations: list[str]
) -> None:
    app = located_app(backend, locations)
    token = host_login(app, key, "bob").get_json()["access_token"]
    proof = {"DPoP": key.proof("GET", BASE + "/whoami", access_token=token)}
    assert_problem(whoami_with(app, locations, token, proof), 401, "invalid_dpop_proof")


@pytest.mark.parametrize("locations", [["cookies", "headers"], ["query_string", "headers"]])
def test_a_proof_is_accepted_only_with_the_token_its_ath_names(
    backend: Backend, key: DPoPKey, locations: list[str]
) -> None:
    app = located_app(backend, locations)
    alice = host_login(app, key, "alice").get_json()["access_token"]
    bob = host_login(app, key, "bob").get_json()["access_token"]
    # A proof made for alice's token, alice's token in the header, bob's
    # where flask-jwt-extended looks first: bob's is the one checked.
    headers = proof_for(key, "GET", BASE + "/whoami", alice)
    assert_problem(whoami_with(app, locations, bob, headers), 401, "invalid_dpop_proof")


@pytest.mark.parametrize(
    "authorization",
    [
        "DPoP {bound}, Bearer {bound}",
        "Bearer {bound}, DPoP {bound}",
        "DPoP\t{bound}",
        "Bearer {bound}",
        "DPoP {unbound}",
    ],
)
def test_no_spelling_of_the_header_lets_a_bound_token_through_without_its_proof(
    backend: Backend, key: DPoPKey, authorization: str
) -> None:
    app = located_app(backend, ["headers"])
    bound = host_login(app, key, "alice").get_json()["access_token"]
    unbound = host_login(app, None, "carol").get_json()["access_token"]
    header = authorization.format(bound=bound, unbound=unbound)
    proof = key.proof("GET", BASE + "/whoami", access_token=bound)
    answer = app.test_client().get("/whoami", headers={"Authorization": header, "DPoP": proof})
    assert answer.status_code == 401
    assert answer.get_json() != "alice"


@pytest.mark.parametrize(
    ("config", "name", "scheme"),
    [
        ({"JWT_HEADER_TYPE": "JWT"}, "Authorization", "JWT"),
        ({"JWT_HEADER_NAME": "X-Auth"}, "X-Auth", "Bearer"),
        ({"JWT_HEADER_TYPE": ""}, "Authorization", ""),
    ],
)
def test_another_header_setup_takes_the_dpop_scheme_and_refuses_its_own_without_a_proof(
    backend: Backend, key: DPoPKey, config: dict[str, str], name: str, scheme: str
) -> None:
    app, _ = host_app(backend, **config)
    token = host_login(app, key).get_json()["access_token"]
    client = app.test_client()
    proof = key.proof("GET", BASE + "/things", access_token=token)
    assert client.get("/things", headers={name: f"DPoP {token}", "DPoP": proof}).status_code == 200
    own = client.get("/things", headers={name: f"{scheme} {token}".strip()})
    assert_problem(own, 401, "invalid_dpop_proof")


# -- refresh ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_of_concurrent_refreshes_with_different_proofs_exactly_one_wins(
    app: Flask, key: DPoPKey
) -> None:
    refresh = bound_login(app, key)["refresh_token"]
    proofs = [key.proof("POST", BASE + REFRESH, access_token=refresh) for _ in range(6)]
    start = threading.Barrier(len(proofs))
    answers: list[int] = []

    def send(proof: str) -> None:
        client = app.test_client()
        start.wait()
        answers.append(client.post(REFRESH, headers=with_proof(proof, refresh)).status_code)

    threads = [threading.Thread(target=send, args=(proof,)) for proof in proofs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One rotation; the others are reuse of the rotated token (the session
    # is revoked then: section 2's rule, not DPoP's).
    assert sorted(answers) == [200] + [401] * 5


def test_a_logout_with_a_replayed_proof_signs_nothing_out(app: Flask, key: DPoPKey) -> None:
    access = bound_login(app, key)["access_token"]
    client = app.test_client()
    headers = proof_for(key, "POST", BASE + LOGOUT, access)
    with app.app_context():  # the proof was seen before (by another worker, say)
        digest = proof_digest(key.jkt, proof_claims(headers["DPoP"])["jti"])
        assert current_manager().store.remember_proof("alice", digest, 70)
    assert_problem(client.post(LOGOUT, headers=headers), 401, "invalid_dpop_proof")
    fine = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, access))
    assert fine.status_code == 200


def proof_claims(proof: str) -> dict[str, Any]:
    body = proof.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


# -- a thief's flood ----------------------------------------------------------------


def test_a_flood_of_bearer_requests_records_one_anomaly_and_keeps_the_sign_in(
    app: Flask, key: DPoPKey, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = bound_login(app, key)
    client = app.test_client()
    with app.app_context():
        sent = record_commands(current_manager().store.client, monkeypatch)
    for _ in range(200):
        assert_problem(
            client.get(SESSIONS, headers=bearer(tokens["access_token"])), 401, "invalid_dpop_proof"
        )
    # One script a request (it writes only once per touch interval), and the
    # scripts' loading the first time.
    # (a script not loaded yet is one EVALSHA refused, SCRIPT LOAD, EVALSHA again).
    assert set(sent) == {"EVALSHA", "SCRIPT LOAD"} or set(sent) == {"EVALSHA"}
    assert sent.count("EVALSHA") - sent.count("SCRIPT LOAD") == 200
    assert mismatches(app) == 1
    assert ("session.created", {}) in [(t, d or {}) for t, d in event_types(app)]
    ok = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, tokens["access_token"]))
    assert ok.status_code == 200


# -- proof keys in the store ----------------------------------------------------------


def test_every_proof_key_has_a_ttl_on_every_path(
    backend: Backend, rc: redis.Redis, key: DPoPKey
) -> None:
    app, sessions = host_app(backend)

    @app.post("/host/refresh")
    @jwt_required(refresh=True)
    def host_refresh() -> Any:
        return jsonify(sessions.rotate(get_jwt()).to_json())

    tokens = host_login(app, key).get_json()  # remember_proof
    client = app.test_client()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert (
        client.get("/things", headers=proof_for(key, "GET", BASE + "/things", access)).status_code
        == 200
    )  # bound.lua
    assert (
        client.post(
            "/host/refresh", headers=proof_for(key, "POST", BASE + "/host/refresh", refresh)
        ).status_code
        == 200
    )  # activity.lua
    keys = {name: rc.ttl(name) for name in all_keys(rc, backend) if ":j:" in name}
    assert len(keys) == 3
    assert all(0 < ttl <= 70 for ttl in keys.values()), keys
    if backend.name == "redis":
        assert all(rc.memory_usage(name) <= 128 for name in keys)


# -- settings changes ------------------------------------------------------------


@pytest.mark.xfail(
    strict=True, reason="a limit docs/api.md states: a proof is remembered for its own window"
)
@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)  # the clock moves its TTLs
def test_raising_the_max_age_does_not_accept_a_used_proof_again(
    make_app: AppFactory, key: DPoPKey, clock: Any
) -> None:
    before = make_app()
    token = bound_login(before, key)["access_token"]
    headers = proof_for(key, "GET", BASE + SESSIONS, token)
    assert before.test_client().get(SESSIONS, headers=headers).status_code == 200
    clock.shift(71)  # the proof is forgotten (60 + 10 s) ...
    after = make_app(SESSIONSVC_DPOP_MAX_AGE=3600)  # ... and the restart accepts it
    assert_problem(after.test_client().get(SESSIONS, headers=headers), 401, "invalid_dpop_proof")


@pytest.mark.parametrize("mode", ["required", "off"])
def test_tokens_bound_under_optional_stay_bound_after_a_mode_switch(
    make_app: AppFactory, key: DPoPKey, mode: str
) -> None:
    token = bound_login(make_app(), key)["access_token"]
    after = make_app(SESSIONSVC_DPOP=mode).test_client()
    assert_problem(after.get(SESSIONS, headers=bearer(token)), 401, "invalid_dpop_proof")
    assert after.get(SESSIONS, headers=signed(key, "GET", SESSIONS, token)).status_code == 200


# -- claims ----------------------------------------------------------------------


def test_a_refresh_claims_loader_cannot_set_cnf(backend: Backend) -> None:
    app, sessions = host_app(backend)

    @sessions.refresh_claims_loader
    def claims(user_id: str, given: dict[str, Any]) -> dict[str, Any]:
        return {**given, "cnf": {"jkt": "someone-else"}, "type": "access"}

    @app.post("/host/refresh")
    @jwt_required(refresh=True)
    def host_refresh() -> Any:
        return jsonify(sessions.rotate(get_jwt()).to_json())

    client = app.test_client()
    refresh = client.post("/login/alice").get_json()["refresh_token"]
    pair = client.post("/host/refresh", headers=bearer(refresh)).get_json()
    assert "cnf" not in claims_of(pair["access_token"])
    assert (
        claims_of(pair["refresh_token"])["type"],
        "cnf" in claims_of(pair["refresh_token"]),
    ) == (
        "refresh",
        False,
    )


@pytest.mark.parametrize("length", [256, 257])
def test_a_jti_of_256_characters_outside_ascii_is_accepted_once(
    app: Flask, key: DPoPKey, length: int
) -> None:
    token = bound_login(app, key)["access_token"]
    client = app.test_client()
    jti = "é\U0001f511" * (length // 2) + "x" * (length % 2)
    proof = key.proof("GET", BASE + SESSIONS, access_token=token, jti=jti)
    first = client.get(SESSIONS, headers=with_proof(proof, token))
    if length > 256:
        assert_problem(first, 401, "invalid_dpop_proof")
        return
    assert first.status_code == 200
    assert_problem(
        client.get(SESSIONS, headers=with_proof(proof, token)), 401, "invalid_dpop_proof"
    )


def test_iat_as_a_float_at_the_window_edges(app: Flask, key: DPoPKey, clock: Any) -> None:
    token = bound_login(app, key)["access_token"]
    client = app.test_client()
    now = time.time()
    for iat, status in [(now - 60, 200), (now - 60.5, 401), (now + 5, 200), (now + 5.5, 401)]:
        proof = key.proof("GET", BASE + SESSIONS, access_token=token, iat=iat)  # type: ignore[arg-type]
        assert client.get(SESSIONS, headers=with_proof(proof, token)).status_code == status, iat


# -- a host's own error answers ---------------------------------------------------------


def test_a_hosts_own_handlers_keep_its_errors_and_dpop_refusals_stay_problems(
    backend: Backend, key: DPoPKey
) -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY, **backend.app_config())
    jwt = JWTManager(app)
    jwt.invalid_token_loader(lambda message: (jsonify(host="invalid"), 422))
    jwt.unauthorized_loader(lambda message: (jsonify(host="unauthorized"), 401))
    jwt.revoked_token_loader(lambda header, payload: (jsonify(host="revoked"), 401))
    app.register_error_handler(401, lambda error: (jsonify(host="401"), 401))
    sessions = SessionManager(**backend.app_kwargs())
    sessions.init_app(app)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        return jsonify(sessions.open(user).to_json())

    @app.get("/things")
    @jwt_required()
    def things() -> Any:
        return jsonify(["a"])

    client = app.test_client()
    bound = host_login(app, key).get_json()["access_token"]
    unbound = client.post("/login/bob").get_json()["access_token"]
    for headers in (bearer(bound), {"Authorization": f"DPoP {bound}", "DPoP": "x"}):
        refused = client.get("/things", headers=headers)
        assert_problem(refused, 401, "invalid_dpop_proof")
        assert refused.headers["WWW-Authenticate"] == CHALLENGE
    assert client.get("/things", headers=bearer(unbound)).get_json() == ["a"]
    assert client.get("/things").get_json() == {"host": "unauthorized"}
    assert client.get("/things", headers=bearer("abc")).get_json() == {"host": "invalid"}
    assert client.get("/things", headers={"User-Agent": CHROME}).status_code == 401
