"""DPoP across apps and deployments (docs/api.md section 13): a proof is
accepted once by every worker, the DPoP scheme and unbound tokens, the three
SESSIONSVC_DPOP modes, the URL behind trusted proxies, and the extension
mounted in a host app.

tests/test_binding.py has the requests of one app; these build several, on
one store (the ``backend`` fixture), or run the service under gunicorn.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis
from flask import Flask, jsonify
from flask_jwt_extended import get_jwt, jwt_required, verify_jwt_in_request

from sessionsvc import ConfigError, DPoPKey, current_manager
from sessionsvc.errors import InvalidDPoPProof
from tests.backends import AppFactory, Backend, host_app, served
from tests.clients import CHROME, assert_problem
from tests.test_binding import (
    BASE,
    CHALLENGE,
    LOGIN,
    REFRESH,
    SESSIONS,
    all_keys,
    bearer,
    bound_login,
    claims_of,
    sign_in,
    signed,
    with_proof,
)
from tests.test_limits import half_a_request

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"}
PUBLIC = "https://api.example.com"


# -- one proof, many workers ------------------------------------------------------


def test_a_proof_accepted_by_one_app_is_refused_by_another(
    make_app: AppFactory, key: DPoPKey
) -> None:
    first, second = make_app(), make_app()  # two processes' worth of state, one store
    tokens = bound_login(first, key)
    headers = signed(key, "GET", SESSIONS, tokens["access_token"])
    assert first.test_client().get(SESSIONS, headers=headers).status_code == 200
    replay = second.test_client().get(SESSIONS, headers=headers)
    assert_problem(replay, 401, "invalid_dpop_proof")
    assert replay.headers["WWW-Authenticate"] == CHALLENGE
    # The other way round, and for a sign-in's proof.
    headers = signed(key, "GET", SESSIONS, tokens["access_token"])
    assert second.test_client().get(SESSIONS, headers=headers).status_code == 200
    assert_problem(first.test_client().get(SESSIONS, headers=headers), 401, "invalid_dpop_proof")
    proof = key.proof("POST", BASE + LOGIN)
    assert sign_in(first, proof=proof).status_code == 200
    assert_problem(sign_in(second, proof=proof), 400, "invalid_dpop_proof")


def send(url: str, headers: dict[str, str], body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request on a new connection: (status, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers = {**headers, "Content-Type": "application/json"}
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def worker_of(output: str, request_id: str) -> int | None:
    """The pid of the worker that answered the request of this id (its access-log line)."""
    for line in output.splitlines():
        if line.startswith("{") and f'"{request_id}"' in line:
            entry = json.loads(line)
            if entry.get("logger") == "access" and entry.get("request_id") == request_id:
                return int(entry["pid"])
    return None


@pytest.mark.slow
def test_a_proof_is_accepted_once_by_two_gunicorn_workers(redis_url: str, key: DPoPKey) -> None:
    # Sync workers answer one request at a time: a connection that sends
    # half a request holds one worker, so the other answers.
    with served(
        redis_url,
        {"alice": "pw"},
        SESSIONSVC_LOGIN_RATE_LIMIT="",
        GUNICORN_CMD_ARGS="--worker-class sync --threads 1",
    ) as service:
        url = service.base + SESSIONS
        login = {"User-Agent": CHROME, "DPoP": key.proof("POST", service.base + LOGIN)}
        status, tokens = send(service.base + LOGIN, login, {"username": "alice", "password": "pw"})
        assert status == 200, tokens
        assert tokens["token_type"] == "DPoP"
        token = tokens["access_token"]
        answers: list[tuple[int, int]] = []
        for round_ in range(3):
            headers = {"User-Agent": CHROME, **key.headers("GET", url, token)}
            held = half_a_request(service.port)
            first = send(url, {**headers, "X-Request-Id": f"first{round_}"})
            other = half_a_request(service.port)  # the worker that just answered
            held.close()
            replay = send(url, {**headers, "X-Request-Id": f"replay{round_}"})
            other.close()
            assert first[0] == 200, first
            assert replay[0] == 401
            assert replay[1]["code"] == "invalid_dpop_proof"
            answers.append((first[0], replay[0]))
        deadline = time.monotonic() + 10
        pids: list[tuple[int | None, int | None]] = []
        while time.monotonic() < deadline:
            output = service.output()
            pids = [
                (worker_of(output, f"first{n}"), worker_of(output, f"replay{n}")) for n in range(3)
            ]
            if all(a is not None and b is not None for a, b in pids):
                break
            time.sleep(0.05)
    assert answers == [(200, 401)] * 3
    # Each replay was answered by the other worker than its first use.
    assert all(a is not None and b is not None and a != b for a, b in pids), pids


# -- the scheme ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["DPoP", "dpop", "DPOP"])
def test_an_unbound_token_with_the_dpop_scheme_is_refused(
    app: Flask, key: DPoPKey, scheme: str
) -> None:
    token = sign_in(app).get_json()["access_token"]
    proof = key.proof("GET", BASE + SESSIONS, access_token=token)
    response = app.test_client().get(SESSIONS, headers=with_proof(proof, token, scheme))
    assert_problem(response, 401, "invalid_dpop_proof")
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert app.test_client().get(SESSIONS, headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("scheme", ["dpop", "DPOP", "dPoP"])
def test_the_dpop_scheme_is_matched_in_any_case(app: Flask, key: DPoPKey, scheme: str) -> None:
    token = bound_login(app, key)["access_token"]
    proof = key.proof("GET", BASE + SESSIONS, access_token=token)
    response = app.test_client().get(SESSIONS, headers=with_proof(proof, token, scheme))
    assert response.status_code == 200, response.get_json()


# -- the modes -------------------------------------------------------------------


def test_required_refuses_sign_ins_without_a_proof_and_unbound_tokens(
    make_app: AppFactory, key: DPoPKey, backend: Backend
) -> None:
    rc = backend.client()
    optional, required = make_app(), make_app(SESSIONSVC_DPOP="required")
    unbound = sign_in(optional).get_json()
    assert unbound["token_type"] == "Bearer"
    before = all_keys(rc, backend)
    assert_problem(sign_in(required, create=False), 400, "invalid_dpop_proof")
    assert all_keys(rc, backend) == before
    refused = required.test_client().get(SESSIONS, headers=bearer(unbound["access_token"]))
    assert_problem(refused, 401, "invalid_dpop_proof")
    assert refused.headers["WWW-Authenticate"] == CHALLENGE
    refresh = required.test_client().post(REFRESH, headers=bearer(unbound["refresh_token"]))
    assert_problem(refresh, 401, "invalid_dpop_proof")
    # Bound tokens work, and the unbound session is still there for the optional app.
    tokens = bound_login(required, key)
    listed = required.test_client().get(
        SESSIONS, headers=signed(key, "GET", SESSIONS, tokens["access_token"])
    )
    assert listed.status_code == 200
    assert sorted(s["dpop_bound"] for s in listed.get_json()["sessions"]) == [False, True]
    renewed = required.test_client().post(
        REFRESH, headers=signed(key, "POST", REFRESH, tokens["refresh_token"])
    )
    assert renewed.status_code == 200, renewed.get_json()
    assert claims_of(renewed.get_json()["access_token"])["cnf"] == {"jkt": key.jkt}
    assert (
        optional.test_client().get(SESSIONS, headers=bearer(unbound["access_token"])).status_code
        == 200
    )


def test_off_ignores_proofs_at_sign_in_but_bound_tokens_stay_bound(
    make_app: AppFactory, key: DPoPKey
) -> None:
    optional, off = make_app(), make_app(SESSIONSVC_DPOP="off")
    earlier = bound_login(optional, key)
    response = sign_in(off, key)
    assert response.status_code == 200
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in claims_of(tokens["access_token"])
    assert "cnf" not in claims_of(tokens["refresh_token"])
    # Even a malformed proof is not looked at.
    assert sign_in(off, proof="not-a-jwt").get_json()["token_type"] == "Bearer"
    client = off.test_client()
    listed = client.get(SESSIONS, headers=bearer(tokens["access_token"]))
    assert listed.status_code == 200
    bound = {s["id"]: s["dpop_bound"] for s in listed.get_json()["sessions"]}
    assert bound[tokens["session_id"]] is False
    assert bound[earlier["session_id"]] is True
    # The token bound before still needs its key.
    assert_problem(
        client.get(SESSIONS, headers=bearer(earlier["access_token"])), 401, "invalid_dpop_proof"
    )
    ok = client.get(SESSIONS, headers=signed(key, "GET", SESSIONS, earlier["access_token"]))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SESSIONSVC_DPOP": "maybe"}, "SESSIONSVC_DPOP must be one of"),
        ({"SESSIONSVC_DPOP": "Optional"}, "SESSIONSVC_DPOP must be one of"),
        ({"SESSIONSVC_DPOP_MAX_AGE": 0}, "SESSIONSVC_DPOP_MAX_AGE"),
        ({"SESSIONSVC_DPOP_MAX_AGE": 3601}, "SESSIONSVC_DPOP_MAX_AGE"),
        ({"SESSIONSVC_DPOP_MAX_AGE": "soon"}, "SESSIONSVC_DPOP_MAX_AGE"),
    ],
)
def test_bad_dpop_settings_are_refused(
    make_app: AppFactory, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_app(**config)


def test_the_max_age_setting_is_the_proofs_window(make_app: AppFactory, key: DPoPKey) -> None:
    app = make_app(SESSIONSVC_DPOP_MAX_AGE=5)
    stale = key.proof("POST", BASE + LOGIN, iat=int(time.time()) - 10)
    assert_problem(sign_in(app, proof=stale), 400, "invalid_dpop_proof")
    recent = key.proof("POST", BASE + LOGIN, iat=int(time.time()) - 2)
    assert sign_in(app, proof=recent).status_code == 200


# -- behind proxies ----------------------------------------------------------------


def test_behind_a_trusted_proxy_the_proof_names_the_forwarded_url(
    make_app: AppFactory, key: DPoPKey
) -> None:
    app = make_app(SESSIONSVC_TRUSTED_PROXIES=1)
    client = app.test_client()
    sign_in(app, create=True, proof=key.proof("POST", PUBLIC + LOGIN))  # creates alice
    body = {"username": "alice", "password": "pw"}
    local = {"User-Agent": CHROME, **FORWARDED, "DPoP": key.proof("POST", BASE + LOGIN)}
    assert_problem(client.post(LOGIN, json=body, headers=local), 400, "invalid_dpop_proof")
    public = {"User-Agent": CHROME, **FORWARDED, "DPoP": key.proof("POST", PUBLIC + LOGIN)}
    response = client.post(LOGIN, json=body, headers=public)
    assert response.status_code == 200, response.get_json()
    token = response.get_json()["access_token"]
    use = {
        **FORWARDED,
        **with_proof(key.proof("GET", PUBLIC + SESSIONS, access_token=token), token),
    }
    assert client.get(SESSIONS, headers=use).status_code == 200
    # The value the nearest proxy set counts, not what the client sent it.
    spoofed = {**use, "X-Forwarded-Host": "evil.example, api.example.com"}
    spoofed["DPoP"] = key.proof("GET", PUBLIC + SESSIONS, access_token=token)
    assert client.get(SESSIONS, headers=spoofed).status_code == 200
    spoofed["DPoP"] = key.proof("GET", "https://evil.example" + SESSIONS, access_token=token)
    assert_problem(client.get(SESSIONS, headers=spoofed), 401, "invalid_dpop_proof")


def test_without_trusted_proxies_forwarded_headers_are_ignored(app: Flask, key: DPoPKey) -> None:
    client = app.test_client()
    sign_in(app, key)  # creates alice
    body = {"username": "alice", "password": "pw"}
    public = {"User-Agent": CHROME, **FORWARDED, "DPoP": key.proof("POST", PUBLIC + LOGIN)}
    assert_problem(client.post(LOGIN, json=body, headers=public), 400, "invalid_dpop_proof")
    local = {"User-Agent": CHROME, **FORWARDED, "DPoP": key.proof("POST", BASE + LOGIN)}
    assert client.post(LOGIN, json=body, headers=local).status_code == 200


# -- mounted in a host app ----------------------------------------------------------


def mounted(backend: Backend) -> Flask:
    """tests/backends.host_app, and a refresh view of the host's own."""
    app, sessions = host_app(backend)

    @app.post("/host/refresh")
    @jwt_required(refresh=True)
    def host_refresh() -> Any:
        return jsonify(sessions.rotate(get_jwt()).to_json())

    return app


def host_login(app: Flask, key: DPoPKey | None, user: str = "alice") -> Any:
    headers = {"User-Agent": CHROME}
    if key is not None:
        headers["DPoP"] = key.proof("POST", f"{BASE}/login/{user}")
    return app.test_client().post(f"/login/{user}", headers=headers)


def proof_keys(rc: redis.Redis, backend: Backend) -> set[str]:
    return {name for name in all_keys(rc, backend) if ":j:" in name}


def test_a_host_login_view_binds_and_its_routes_enforce_proofs(
    backend: Backend, key: DPoPKey
) -> None:
    app = mounted(backend)
    client = app.test_client()
    response = host_login(app, key)
    assert response.status_code == 200
    tokens = response.get_json()
    assert tokens["token_type"] == "DPoP"
    assert claims_of(tokens["access_token"])["cnf"] == {"jkt": key.jkt}
    assert claims_of(tokens["access_token"])["roles"] == ["reader"]
    token = tokens["access_token"]
    assert client.get("/things", headers=signed(key, "GET", "/things", token)).get_json() == [
        "a",
        "b",
    ]
    for headers in [bearer(token), {"User-Agent": CHROME, "Authorization": f"DPoP {token}"}]:
        refused = client.get("/things", headers=headers)
        assert_problem(refused, 401, "invalid_dpop_proof")
        assert refused.headers["WWW-Authenticate"] == CHALLENGE
    # Unbound tokens are served as before.
    plain = host_login(app, None).get_json()
    assert plain["token_type"] == "Bearer"
    assert client.get("/things", headers=bearer(plain["access_token"])).get_json() == ["a", "b"]
    # An invalid proof at the host's login opens nothing.
    bad = app.test_client().post(
        "/login/alice", headers={"DPoP": key.proof("GET", f"{BASE}/login/alice")}
    )
    assert_problem(bad, 400, "invalid_dpop_proof")
    with app.app_context():
        assert len(current_manager().list_for("alice")) == 2
        # Outside a request, open() binds nothing.
        assert current_manager().open("alice").token_type == "Bearer"


def test_a_host_refresh_view_checks_the_token_twice_with_one_proof(
    backend: Backend, key: DPoPKey
) -> None:
    rc = backend.client()
    app = mounted(backend)
    tokens = host_login(app, key).get_json()
    before = proof_keys(rc, backend)
    headers = signed(key, "POST", "/host/refresh", tokens["refresh_token"])
    response = app.test_client().post("/host/refresh", headers=headers)
    assert response.status_code == 200, response.get_json()
    renewed = response.get_json()
    assert renewed["token_type"] == "DPoP"
    assert claims_of(renewed["refresh_token"])["cnf"] == {"jkt": key.jkt}
    assert len(proof_keys(rc, backend) - before) == 1  # remembered once
    assert_problem(
        app.test_client().post("/host/refresh", headers=headers), 401, "invalid_dpop_proof"
    )
    again = app.test_client().post(
        "/host/refresh", headers=signed(key, "POST", "/host/refresh", renewed["refresh_token"])
    )
    assert again.status_code == 200, again.get_json()


def test_a_host_refresh_as_bearer_consumes_nothing(backend: Backend, key: DPoPKey) -> None:
    app = mounted(backend)
    tokens = host_login(app, key).get_json()
    client = app.test_client()
    refused = client.post("/host/refresh", headers=bearer(tokens["refresh_token"]))
    assert_problem(refused, 401, "invalid_dpop_proof")
    headers = signed(key, "POST", "/host/refresh", tokens["refresh_token"])
    assert client.post("/host/refresh", headers=headers).status_code == 200


def test_a_replay_refused_in_a_request_is_not_accepted_by_its_next_check(
    backend: Backend, key: DPoPKey
) -> None:
    """A host that looks for a user in a tolerant hook (errors ignored), then
    checks again in the view: the replayed proof, refused by the first check,
    must not pass the second (a proof counts as the request's only once the
    store accepted it)."""
    app, _ = host_app(backend)

    @app.get("/tolerant")
    def tolerant() -> Any:
        with contextlib.suppress(InvalidDPoPProof):
            verify_jwt_in_request()
        verify_jwt_in_request()
        return jsonify("in")

    token = host_login(app, key).get_json()["access_token"]
    headers = signed(key, "GET", "/tolerant", token)
    assert app.test_client().get("/tolerant", headers=headers).get_json() == "in"
    replay = app.test_client().get("/tolerant", headers=headers)
    assert_problem(replay, 401, "invalid_dpop_proof")


def test_a_sign_in_proof_refused_as_a_replay_stays_refused_when_opened_again(
    backend: Backend, key: DPoPKey
) -> None:
    """A host login view that catches the refusal and calls open() again."""
    app, sessions = host_app(backend)

    @app.post("/stubborn")
    def stubborn() -> Any:
        try:
            return jsonify(sessions.open("alice").to_json())
        except InvalidDPoPProof:
            return jsonify(sessions.open("alice").to_json())

    headers = {"DPoP": key.proof("POST", f"{BASE}/stubborn")}
    assert app.test_client().post("/stubborn", headers=headers).get_json()["token_type"] == "DPoP"
    assert_problem(app.test_client().post("/stubborn", headers=headers), 400, "invalid_dpop_proof")
