"""The sessions blueprint: /api/v1/sessions (docs/api.md sections 2, 4, 7, 10)."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import current_manager
from tests.clients import CHROME, FIREFOX_LINUX, IPHONE, Auth, assert_problem
from tests.geodata import BERLIN_IP, NEW_YORK_IP

SESSIONS = "/api/v1/sessions"
EVENTS = "/api/v1/sessions/events"
REFRESH = "/api/v1/auth/refresh"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
THIRTY_DAYS = 30 * 86400
SESSION_KEYS = {
    "id",
    "current",
    "created_at",
    "last_seen_at",
    "expires_at",
    "ip",
    "created_ip",
    "user_agent",
    "device",
    "location",
    "name",
    "idle_expires_at",
    "risk",
    "review",
    "dpop_bound",
}
EVENT_KEYS = {"id", "type", "at", "session_id", "ip", "user_agent", "detail"}
CHROME_DEVICE = {
    "type": "desktop",
    "browser": "Chrome",
    "browser_version": "120.0",
    "os": "Windows",
    "os_version": "10",
    "label": "Chrome 120 on Windows 10",
}


# -- helpers -------------------------------------------------------------------


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(timestamp: str) -> int:
    assert TIMESTAMP.fullmatch(timestamp), timestamp
    return int(datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def list_sessions(client: FlaskClient, tokens: dict[str, Any], **kwargs: Any) -> list[Any]:
    response = client.get(SESSIONS, headers=Auth.headers(tokens), **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert set(response.get_json()) == {"sessions"}
    sessions: list[Any] = response.get_json()["sessions"]
    return sessions


def session_ids(client: FlaskClient, tokens: dict[str, Any]) -> list[str]:
    return [s["id"] for s in list_sessions(client, tokens)]


def list_events(
    client: FlaskClient, tokens: dict[str, Any], query: str = "", **kwargs: Any
) -> list[Any]:
    response = client.get(EVENTS + query, headers=Auth.headers(tokens), **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert set(response.get_json()) == {"events"}
    events: list[Any] = response.get_json()["events"]
    return events


def revocations(events: list[Any]) -> dict[str, str]:
    """session id -> reason of every session.revoked event."""
    return {
        e["session_id"]: e["detail"]["reason"] for e in events if e["type"] == "session.revoked"
    }


def assert_revoked(client: FlaskClient, tokens: dict[str, Any]) -> None:
    assert_problem(client.get(SESSIONS, headers=Auth.headers(tokens)), 401, "session_revoked")


def patch_name(client: FlaskClient, tokens: dict[str, Any], sid: str, **kwargs: Any) -> Any:
    return client.patch(f"{SESSIONS}/{sid}", headers=Auth.headers(tokens), **kwargs)


# -- list and the Session object ---------------------------------------------------


def test_list_returns_the_exact_session_object(auth: Auth, client: FlaskClient, clock: Any):
    start = int(time.time())
    tokens = auth.login("alice", user_agent=CHROME, ip="198.51.100.4")

    sessions = list_sessions(client, tokens, environ_base={"REMOTE_ADDR": "198.51.100.4"})

    assert sessions == [
        {
            "id": tokens["session_id"],
            "current": True,
            "created_at": iso(start),
            "last_seen_at": iso(start),
            "expires_at": iso(start + THIRTY_DAYS),
            "ip": "198.51.100.4",
            "created_ip": "198.51.100.4",
            "user_agent": CHROME,
            "device": CHROME_DEVICE,
            "location": None,
            "name": None,
            "idle_expires_at": None,
            "risk": sessions[0]["risk"],
            # "Was this you?": only a session with risk flags is to review.
            "review": "pending" if sessions[0]["risk"] else None,
            "dpop_bound": False,
        }
    ]
    assert isinstance(sessions[0]["risk"], list)
    assert set(sessions[0]["risk"]) <= {"new_device", "new_country", "anomaly"}


def test_session_id_is_opaque_and_random(auth: Auth):
    ids = {auth.login("alice", ip=f"192.0.2.{n}")["session_id"] for n in range(5)}
    assert len(ids) == 5
    for sid in ids:
        assert isinstance(sid, str)
        assert len(sid) >= 22  # >= 128 bits of randomness in URL-safe base64
        assert "alice" not in sid


def test_current_is_true_only_for_the_callers_session(auth: Auth, client: FlaskClient):
    first = auth.login("alice", user_agent=CHROME)
    second = auth.login("alice", user_agent=IPHONE)

    for tokens in (first, second):
        sessions = list_sessions(client, tokens)
        assert len(sessions) == 2
        assert {s["id"]: s["current"] for s in sessions} == {
            tokens["session_id"]: True,
            (second if tokens is first else first)["session_id"]: False,
        }
        for session in sessions:
            assert set(session) == SESSION_KEYS
            assert session["current"] is (session["id"] == tokens["session_id"])


def test_iphone_user_agent_is_a_mobile_device(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice", user_agent=IPHONE)
    [session] = list_sessions(client, tokens)
    device = session["device"]
    assert session["user_agent"] == IPHONE
    assert set(device) == set(CHROME_DEVICE)
    assert device["type"] == "mobile"
    assert device["os"] == "iOS"
    assert device["os_version"] == "17.1"
    assert device["browser"] == "Mobile Safari"
    assert device["browser_version"] == "17.1"
    assert device["label"] == "Mobile Safari 17 on iOS 17.1"


def test_timestamps_are_utc_seconds_with_z_and_expiry_is_thirty_days(
    auth: Auth, client: FlaskClient
):
    before = int(time.time())
    tokens = auth.login("alice")
    after = int(time.time())
    [session] = list_sessions(client, tokens)
    for key in ("created_at", "last_seen_at", "expires_at"):
        assert TIMESTAMP.fullmatch(session[key]), session[key]
    created = epoch(session["created_at"])
    assert before <= created <= after
    assert epoch(session["expires_at"]) == created + THIRTY_DAYS


def test_expiry_follows_the_refresh_token_lifetime(make_app: Any):
    app = make_app(JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=7))
    tokens = Auth(app).login("alice")
    [session] = list_sessions(app.test_client(), tokens)
    assert epoch(session["expires_at"]) == epoch(session["created_at"]) + 7 * 86400


def test_list_is_ordered_most_recently_active_first(make_app: Any, clock: Any):
    app = make_app(SESSIONSVC_TOUCH_INTERVAL=1)
    auth, client = Auth(app), app.test_client()
    start = int(time.time())
    a = auth.login("alice", ip="192.0.2.1")
    clock.shift(10)
    b = auth.login("alice", ip="192.0.2.2")
    clock.shift(10)
    c = auth.login("alice", ip="192.0.2.3")
    clock.shift(10)
    assert client.get(f"{SESSIONS}/{a['session_id']}", headers=auth.headers(a)).status_code == 200
    clock.shift(10)

    sessions = list_sessions(client, b)  # this request is b's activity at start + 40

    assert [(s["id"], s["last_seen_at"]) for s in sessions] == [
        (b["session_id"], iso(start + 40)),
        (a["session_id"], iso(start + 30)),
        (c["session_id"], iso(start + 20)),
    ]
    assert [s["created_at"] for s in sessions] == [iso(start + 10), iso(start), iso(start + 20)]


def test_activity_is_not_written_more_often_than_the_touch_interval(
    auth: Auth, client: FlaskClient, clock: Any
):
    start = int(time.time())
    tokens = auth.login("alice")
    clock.shift(30)
    [session] = list_sessions(client, tokens)
    assert session["last_seen_at"] == iso(start)  # default interval is 60 s
    clock.shift(31)
    [session] = list_sessions(client, tokens)
    assert session["last_seen_at"] == iso(start + 61)


def test_trailing_slash_on_the_collection_is_accepted(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    other = auth.login("alice")
    response = client.get(SESSIONS + "/", headers=auth.headers(tokens))
    assert response.status_code == 200
    assert {s["id"] for s in response.get_json()["sessions"]} == {
        tokens["session_id"],
        other["session_id"],
    }
    response = client.delete(SESSIONS + "/", headers=auth.headers(tokens))
    assert response.status_code == 200
    assert response.get_json() == {"revoked": 1}
    assert session_ids(client, tokens) == [tokens["session_id"]]


def test_no_user_agent_stores_null_and_an_unknown_device(app: Flask):
    auth = Auth(app)
    auth.create_user("alice", "pw")
    client = app.test_client()
    client.environ_base.pop("HTTP_USER_AGENT", None)  # the test client sends one by default
    response = client.post("/api/v1/auth/login", json={"username": "alice", "password": "pw"})
    assert response.status_code == 200
    tokens = response.get_json()

    [session] = list_sessions(client, tokens)

    assert session["user_agent"] is None
    assert session["device"] == {
        "type": "other",
        "browser": None,
        "browser_version": None,
        "os": None,
        "os_version": None,
        "label": None,
    }


def test_ip_is_the_last_address_and_created_ip_the_first(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice", ip="198.51.100.4")

    [session] = list_sessions(client, tokens, environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert (session["ip"], session["created_ip"]) == ("203.0.113.7", "198.51.100.4")

    [session] = list_sessions(client, tokens, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert (session["ip"], session["created_ip"]) == ("203.0.113.9", "198.51.100.4")

    response = client.get(
        f"{SESSIONS}/{tokens['session_id']}",
        headers=auth.headers(tokens),
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert (response.get_json()["ip"], response.get_json()["created_ip"]) == (
        "203.0.113.9",
        "198.51.100.4",
    )


# -- one session ---------------------------------------------------------------


def test_get_one_returns_the_same_object_as_the_list(auth: Auth, client: FlaskClient):
    mine = auth.login("alice", user_agent=CHROME)
    other = auth.login("alice", user_agent=IPHONE)
    listed = {s["id"]: s for s in list_sessions(client, mine)}

    for sid, current in ((mine["session_id"], True), (other["session_id"], False)):
        response = client.get(f"{SESSIONS}/{sid}", headers=auth.headers(mine))
        assert response.status_code == 200
        body = response.get_json()
        assert set(body) == SESSION_KEYS
        assert body["id"] == sid
        assert body["current"] is current
        assert body == listed[sid]


MALFORMED_IDS = ["x", "a" * 500, "..", "%00", "a b", "\u00e9" * 22]


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
@pytest.mark.parametrize("sid", MALFORMED_IDS, ids=["x", "500chars", "dotdot", "nul", "sp", "u"])
def test_malformed_session_id_is_session_not_found(
    auth: Auth, client: FlaskClient, method: str, sid: str
):
    tokens = auth.login("alice")
    response = client.open(
        f"{SESSIONS}/{quote(sid, safe='')}",
        method=method,
        headers=auth.headers(tokens),
        json={"name": "x"} if method == "PATCH" else None,
    )
    assert_problem(response, 404, "session_not_found")
    assert session_ids(client, tokens) == [tokens["session_id"]]


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_id_with_an_encoded_slash_is_an_unknown_path(auth: Auth, client: FlaskClient, method: str):
    # werkzeug decodes %2F before routing: "../etc" is two path segments, so
    # no session route matches. Still a 404, still nothing revealed or touched.
    tokens = auth.login("alice")
    response = client.open(
        f"{SESSIONS}/{quote('../etc', safe='')}", method=method, headers=auth.headers(tokens)
    )
    assert_problem(response, 404, "not_found")
    assert session_ids(client, tokens) == [tokens["session_id"]]


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_unknown_well_formed_session_id_is_session_not_found(
    auth: Auth, client: FlaskClient, method: str
):
    tokens = auth.login("alice")
    unknown = secrets.token_urlsafe(16)
    response = client.open(
        f"{SESSIONS}/{unknown}",
        method=method,
        headers=auth.headers(tokens),
        json={"name": "x"} if method == "PATCH" else None,
    )
    assert_problem(response, 404, "session_not_found")


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_another_users_session_is_session_not_found_and_untouched(
    auth: Auth, client: FlaskClient, method: str
):
    alice = auth.login("alice")
    bob = auth.login("bob")
    response = client.open(
        f"{SESSIONS}/{bob['session_id']}",
        method=method,
        headers=auth.headers(alice),
        json={"name": "pwned"} if method == "PATCH" else None,
    )
    assert_problem(response, 404, "session_not_found")

    [bobs] = list_sessions(client, bob)
    assert bobs["id"] == bob["session_id"]
    assert bobs["name"] is None
    assert [e["type"] for e in list_events(client, bob)] == ["session.created"]
    assert session_ids(client, alice) == [alice["session_id"]]


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_revoked_session_id_is_session_not_found(auth: Auth, client: FlaskClient, method: str):
    mine = auth.login("alice")
    other = auth.login("alice")
    assert (
        client.delete(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(mine)).status_code
        == 204
    )
    response = client.open(
        f"{SESSIONS}/{other['session_id']}",
        method=method,
        headers=auth.headers(mine),
        json={"name": "x"} if method == "PATCH" else None,
    )
    assert_problem(response, 404, "session_not_found")
    # A PATCH on a revoked session must not bring its hash back.
    assert session_ids(client, mine) == [mine["session_id"]]


# Moves the clock past a session's TTL: only fakeredis follows time-machine.
@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_expired_session_id_is_session_not_found(make_app: Any):
    app = make_app(JWT_REFRESH_TOKEN_EXPIRES=3600, JWT_ACCESS_TOKEN_EXPIRES=7200)
    auth, client = Auth(app), app.test_client()
    with time_machine.travel(int(time.time()), tick=False) as clock:
        old = auth.login("alice")
        clock.shift(1800)
        new = auth.login("alice")
        clock.shift(1801)
        response = client.get(f"{SESSIONS}/{old['session_id']}", headers=auth.headers(new))
        assert_problem(response, 404, "session_not_found")
        assert session_ids(client, new) == [new["session_id"]]
        assert_revoked(client, old)


# -- revoking one ------------------------------------------------------------------


def test_revoke_one_is_204_and_its_token_fails_on_the_next_request(auth: Auth, client: FlaskClient):
    mine = auth.login("alice")
    other = auth.login("alice")
    assert client.get(SESSIONS, headers=auth.headers(other)).status_code == 200

    response = client.delete(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(mine))

    assert response.status_code == 204
    assert response.get_data() == b""
    assert_revoked(client, other)
    assert_problem(
        client.get(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(other)),
        401,
        "session_revoked",
    )
    assert session_ids(client, mine) == [mine["session_id"]]


def test_revoke_on_one_app_instance_bites_on_another_immediately(make_app: Any):
    app_a, app_b = make_app(), make_app()
    auth = Auth(app_a)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    mine = auth.login("alice")
    other = auth.login("alice")
    assert session_ids(client_b, other) != []

    response = client_a.delete(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(mine))
    assert response.status_code == 204

    assert_revoked(client_b, other)
    assert_problem(
        client_b.post("/api/v1/auth/refresh", headers=auth.headers(other, "refresh_token")),
        401,
        "session_revoked",
    )
    assert session_ids(client_b, mine) == [mine["session_id"]]


def test_revoke_all_others_on_one_app_instance_bites_on_another(make_app: Any):
    app_a, app_b = make_app(), make_app()
    auth = Auth(app_a)
    client_a, client_b = app_a.test_client(), app_b.test_client()
    mine = auth.login("alice")
    others = [auth.login("alice") for _ in range(2)]
    for tokens in others:
        assert client_b.get(SESSIONS, headers=auth.headers(tokens)).status_code == 200

    response = client_b.delete(SESSIONS, headers=auth.headers(mine))
    assert response.get_json() == {"revoked": 2}

    for tokens in others:
        assert_revoked(client_a, tokens)


def test_revoking_the_current_session_is_a_logout(auth: Auth, client: FlaskClient):
    mine = auth.login("alice")
    other = auth.login("alice")

    response = client.delete(f"{SESSIONS}/{mine['session_id']}", headers=auth.headers(mine))

    assert response.status_code == 204
    assert response.get_data() == b""
    assert_revoked(client, mine)
    assert session_ids(client, other) == [other["session_id"]]
    assert revocations(list_events(client, other)) == {mine["session_id"]: "logout"}


# -- revoking many -----------------------------------------------------------------


def test_delete_collection_revokes_all_others_and_keeps_the_current(
    auth: Auth, client: FlaskClient
):
    mine = auth.login("alice")
    others = [auth.login("alice") for _ in range(3)]
    bob = auth.login("bob")

    response = client.delete(SESSIONS, headers=auth.headers(mine))

    assert response.status_code == 200
    assert response.get_json() == {"revoked": 3}
    for tokens in others:
        assert_revoked(client, tokens)
    assert session_ids(client, mine) == [mine["session_id"]]
    assert session_ids(client, bob) == [bob["session_id"]]
    # Nothing left to revoke.
    assert client.delete(SESSIONS, headers=auth.headers(mine)).get_json() == {"revoked": 0}


@pytest.mark.parametrize("value", ["false", "0"])
def test_include_current_false_keeps_the_current(auth: Auth, client: FlaskClient, value: str):
    mine = auth.login("alice")
    auth.login("alice")
    response = client.delete(f"{SESSIONS}?include_current={value}", headers=auth.headers(mine))
    assert response.get_json() == {"revoked": 1}
    assert session_ids(client, mine) == [mine["session_id"]]


@pytest.mark.parametrize("value", ["true", "1"])
def test_include_current_revokes_all_and_counts_the_current(
    auth: Auth, client: FlaskClient, value: str
):
    mine = auth.login("alice")
    others = [auth.login("alice") for _ in range(2)]
    bob = auth.login("bob")

    response = client.delete(f"{SESSIONS}?include_current={value}", headers=auth.headers(mine))

    assert response.status_code == 200
    assert response.get_json() == {"revoked": 3}
    for tokens in (mine, *others):
        assert_revoked(client, tokens)
    assert session_ids(client, bob) == [bob["session_id"]]


@pytest.mark.parametrize(
    "query", ["include_current=yes", "include_current=", "include_current=TRUE", "include_current"]
)
def test_bad_include_current_is_400_and_revokes_nothing(
    auth: Auth, client: FlaskClient, query: str
):
    mine = auth.login("alice")
    other = auth.login("alice")

    response = client.delete(f"{SESSIONS}?{query}", headers=auth.headers(mine))

    assert_problem(response, 400, "invalid_request")
    assert set(session_ids(client, mine)) == {mine["session_id"], other["session_id"]}
    assert revocations(list_events(client, mine)) == {}


# -- renaming ----------------------------------------------------------------------


def test_patch_sets_the_name_and_returns_the_session(auth: Auth, client: FlaskClient):
    mine = auth.login("alice")
    other = auth.login("alice")

    response = patch_name(client, mine, other["session_id"], json={"name": "Work laptop"})

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == SESSION_KEYS
    assert (body["id"], body["current"], body["name"]) == (
        other["session_id"],
        False,
        "Work laptop",
    )
    names = {s["id"]: s["name"] for s in list_sessions(client, mine)}
    assert names == {mine["session_id"]: None, other["session_id"]: "Work laptop"}


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("  Work laptop \t", "Work laptop"),
        ("x", "x"),
        ("B\u00fcro-Laptop \U0001f4bb", "B\u00fcro-Laptop \U0001f4bb"),
        ("n" * 64, "n" * 64),
        ("  " + "n" * 64 + "  ", "n" * 64),
    ],
    ids=["trimmed", "one-char", "unicode", "64-chars", "64-after-trim"],
)
def test_patch_name_is_trimmed_and_stored(auth: Auth, client: FlaskClient, sent: str, stored: str):
    tokens = auth.login("alice")
    sid = tokens["session_id"]
    response = patch_name(client, tokens, sid, json={"name": sent})
    assert response.status_code == 200
    assert response.get_json()["name"] == stored
    assert response.get_json()["current"] is True
    [session] = list_sessions(client, tokens)
    assert session["name"] == stored


def test_patch_null_clears_the_name(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    sid = tokens["session_id"]
    assert patch_name(client, tokens, sid, json={"name": "Phone"}).get_json()["name"] == "Phone"

    response = patch_name(client, tokens, sid, json={"name": None})

    assert response.status_code == 200
    assert response.get_json()["name"] is None
    assert list_sessions(client, tokens)[0]["name"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"name": "n" * 65},
        {"name": ""},
        {"name": "   "},
        {"name": "\t\n"},
        {"name": "tab\tinside"},
        {"name": "line\nbreak"},
        {"name": "nul\x00"},
        {"name": "bell\x07"},
        {"name": "rtl\u202eoverride"},
        {"name": 42},
        {"name": True},
        {"name": ["Work"]},
        {"name": {"text": "Work"}},
        {},
        {"label": "Work"},
    ],
    ids=[
        "65-chars",
        "empty",
        "spaces",
        "whitespace",
        "tab",
        "newline",
        "nul",
        "bell",
        "bidi-control",
        "int",
        "bool",
        "list",
        "object",
        "missing",
        "other-key",
    ],
)
def test_patch_rejects_a_bad_name_and_keeps_the_old_one(
    auth: Auth, client: FlaskClient, body: dict[str, Any]
):
    tokens = auth.login("alice")
    sid = tokens["session_id"]
    assert patch_name(client, tokens, sid, json={"name": "Original"}).status_code == 200

    assert_problem(patch_name(client, tokens, sid, json=body), 400, "invalid_request")

    assert list_sessions(client, tokens)[0]["name"] == "Original"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"not json", "application/json"),
        (b'{"name": "x"', "application/json"),
        (b"", "application/json"),
        (b'"Work"', "application/json"),
        (b'["Work"]', "application/json"),
        (b"null", "application/json"),
        (b'{"name": NaN}', "application/json"),
        (b'{"name": "a", "name": "b"}', "application/json"),
        (b'{"name": "\xff\xfe"}', "application/json"),
        (b'{"name": "x"}', "text/plain"),
        (b"name=x", "application/x-www-form-urlencoded"),
        (b'{"name": "x"}', None),
    ],
    ids=[
        "not-json",
        "truncated",
        "empty",
        "string",
        "array",
        "null",
        "nan",
        "duplicate-keys",
        "not-utf8",
        "text-plain",
        "form",
        "no-content-type",
    ],
)
def test_patch_rejects_a_body_that_is_not_a_json_object(
    auth: Auth, client: FlaskClient, data: bytes, content_type: str | None
):
    tokens = auth.login("alice")
    sid = tokens["session_id"]
    assert patch_name(client, tokens, sid, json={"name": "Original"}).status_code == 200

    response = patch_name(client, tokens, sid, data=data, content_type=content_type)

    assert_problem(response, 400, "invalid_request")
    assert list_sessions(client, tokens)[0]["name"] == "Original"


def test_patch_body_over_64_kib_is_413(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    sid = tokens["session_id"]
    assert patch_name(client, tokens, sid, json={"name": "Original"}).status_code == 200
    data = b'{"name": "x", "pad": "' + b"a" * (64 * 1024) + b'"}'

    response = patch_name(client, tokens, sid, data=data, content_type="application/json")

    assert_problem(response, 413, "payload_too_large")
    assert list_sessions(client, tokens)[0]["name"] == "Original"


# -- events ------------------------------------------------------------------------


def test_event_object_shape(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice", user_agent=CHROME, ip="198.51.100.4")
    [event] = list_events(client, tokens, environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert set(event) == EVENT_KEYS
    assert event["type"] == "session.created"
    assert event["session_id"] == tokens["session_id"]
    assert isinstance(event["id"], str) and event["id"]
    assert TIMESTAMP.fullmatch(event["at"])
    assert event["ip"] == "198.51.100.4"
    assert event["user_agent"] == CHROME
    assert isinstance(event["detail"], dict)


def test_events_are_newest_first_with_created_then_revoked_by_user(
    auth: Auth, client: FlaskClient, clock: Any
):
    start = int(time.time())
    mine = auth.login("alice")
    clock.shift(5)
    other = auth.login("alice")
    clock.shift(5)
    assert (
        client.delete(f"{SESSIONS}/{other['session_id']}", headers=auth.headers(mine)).status_code
        == 204
    )

    events = list_events(client, mine)

    assert [(e["type"], e["session_id"], e["at"]) for e in events] == [
        ("session.revoked", other["session_id"], iso(start + 10)),
        ("session.created", other["session_id"], iso(start + 5)),
        ("session.created", mine["session_id"], iso(start)),
    ]
    assert events[0]["detail"]["reason"] == "user"
    assert len({e["id"] for e in events}) == 3


def test_logout_by_id_and_by_auth_route_record_reason_logout(auth: Auth, client: FlaskClient):
    watcher = auth.login("alice")
    by_id = auth.login("alice")
    by_route = auth.login("alice")

    assert (
        client.delete(f"{SESSIONS}/{by_id['session_id']}", headers=auth.headers(by_id)).status_code
        == 204
    )
    assert client.post("/api/v1/auth/logout", headers=auth.headers(by_route)).status_code == 204

    assert revocations(list_events(client, watcher)) == {
        by_id["session_id"]: "logout",
        by_route["session_id"]: "logout",
    }


def test_delete_collection_records_reason_others(auth: Auth, client: FlaskClient):
    mine = auth.login("alice")
    others = [auth.login("alice") for _ in range(2)]
    assert client.delete(SESSIONS, headers=auth.headers(mine)).get_json() == {"revoked": 2}

    events = list_events(client, mine)

    assert revocations(events) == {t["session_id"]: "others" for t in others}
    assert [e["type"] for e in events] == ["session.revoked"] * 2 + ["session.created"] * 3


def test_include_current_records_logout_for_the_current_and_others_for_the_rest(
    auth: Auth, client: FlaskClient
):
    mine = auth.login("alice")
    others = [auth.login("alice") for _ in range(2)]
    response = client.delete(f"{SESSIONS}?include_current=true", headers=auth.headers(mine))
    assert response.get_json() == {"revoked": 3}

    watcher = auth.login("alice")
    events = list_events(client, watcher)

    assert revocations(events) == {
        mine["session_id"]: "logout",
        **{t["session_id"]: "others" for t in others},
    }


def test_events_limit_is_honoured(auth: Auth, client: FlaskClient):
    logins = [auth.login("alice") for _ in range(4)]
    newest_first = [t["session_id"] for t in reversed(logins)]

    assert [e["session_id"] for e in list_events(client, logins[0], "?limit=1")] == newest_first[:1]
    assert [e["session_id"] for e in list_events(client, logins[0], "?limit=3")] == newest_first[:3]
    assert [e["session_id"] for e in list_events(client, logins[0], "?limit=200")] == newest_first


def test_events_default_to_50_and_accept_up_to_200(app: Flask, auth: Auth, client: FlaskClient):
    # The user first: creating a user clears what a name without one left.
    auth.create_user("alice")
    with app.app_context():
        for _ in range(60):
            current_manager().open("alice", ip="192.0.2.1", user_agent=CHROME)
    tokens = auth.login("alice", create=False)

    events = list_events(client, tokens)
    assert len(events) == 50
    assert events[0]["session_id"] == tokens["session_id"]
    assert len(list_events(client, tokens, "?limit=200")) == 61
    assert len(list_events(client, tokens, "?limit=55")) == 55


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "", "1.5", "1e2", " 5", "\u0665"])
def test_events_bad_limit_is_400(auth: Auth, client: FlaskClient, limit: str):
    tokens = auth.login("alice")
    response = client.get(EVENTS, query_string={"limit": limit}, headers=auth.headers(tokens))
    assert_problem(response, 400, "invalid_request")


def test_events_are_per_user(auth: Auth, client: FlaskClient):
    alice = auth.login("alice")
    bob = auth.login("bob")
    assert [e["session_id"] for e in list_events(client, alice)] == [alice["session_id"]]
    assert [e["session_id"] for e in list_events(client, bob)] == [bob["session_id"]]


def test_events_need_an_access_token(client: FlaskClient):
    assert_problem(client.get(EVENTS), 401, "authorization_required")


# -- routing errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/v1/nope", "/api/v1/sessions/a/b", "/api/v1/sessions/events/x", "/api/v1/auth/nope"],
)
@pytest.mark.parametrize("with_token", [True, False])
def test_unknown_path_is_404_not_found(
    auth: Auth, client: FlaskClient, path: str, with_token: bool
):
    headers = {"Accept": "text/html"}
    if with_token:
        headers.update(auth.headers(auth.login("alice")))
    response = client.get(path, headers=headers)
    assert_problem(response, 404, "not_found")
    assert b"<html" not in response.get_data().lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", SESSIONS),
        ("PUT", SESSIONS),
        ("PATCH", SESSIONS),
        ("PUT", SESSIONS + "/AAAAAAAAAAAAAAAAAAAAAA"),
        ("POST", SESSIONS + "/AAAAAAAAAAAAAAAAAAAAAA"),
        ("POST", EVENTS),
        ("PUT", EVENTS),
        ("GET", "/api/v1/auth/login"),
        ("GET", "/api/v1/auth/logout"),
    ],
)
def test_wrong_method_is_405_problem(auth: Auth, client: FlaskClient, method: str, path: str):
    tokens = auth.login("alice")
    response = client.open(
        path, method=method, headers={"Accept": "text/html", **auth.headers(tokens)}
    )
    assert_problem(response, 405, "method_not_allowed")
    assert b"<html" not in response.get_data().lower()
    assert session_ids(client, tokens) == [tokens["session_id"]]


# -- user ids ------------------------------------------------------------------------

ODD_USERS = ["a:b", "{x}", "a}{b", "\u00fcn\u00ef c\u00f8d\u00e9", "a b", "a", "b", "x"]


def test_odd_user_ids_each_see_only_their_own_sessions(auth: Auth, client: FlaskClient):
    tokens = {user: auth.login(user) for user in ODD_USERS}

    for user, pair in tokens.items():
        [session] = list_sessions(client, pair)
        assert session["id"] == pair["session_id"], user
        assert [e["session_id"] for e in list_events(client, pair)] == [pair["session_id"]]

    response = client.delete(
        f"{SESSIONS}?include_current=true", headers=auth.headers(tokens["a:b"])
    )
    assert response.get_json() == {"revoked": 1}
    assert_revoked(client, tokens["a:b"])
    for user in ODD_USERS[1:]:
        assert session_ids(client, tokens[user]) == [tokens[user]["session_id"]], user


def test_odd_user_cannot_reach_a_lookalike_users_session(auth: Auth, client: FlaskClient):
    a_b = auth.login("a:b")
    a = auth.login("a")
    response = client.get(f"{SESSIONS}/{a['session_id']}", headers=auth.headers(a_b))
    assert_problem(response, 404, "session_not_found")
    response = client.delete(f"{SESSIONS}/{a_b['session_id']}", headers=auth.headers(a))
    assert_problem(response, 404, "session_not_found")


# -- the per-user cap ----------------------------------------------------------------


def test_cap_evicts_the_least_recently_active_session(make_app: Any, clock: Any):
    app = make_app(SESSIONSVC_MAX_SESSIONS_PER_USER=3)
    auth, client = Auth(app), app.test_client()
    first = auth.login("alice")
    clock.shift(10)
    second = auth.login("alice")
    clock.shift(10)
    third = auth.login("alice")
    clock.shift(100)
    # The oldest session is used: the second one is now the least recently active.
    assert client.get(SESSIONS, headers=auth.headers(first)).status_code == 200
    clock.shift(10)

    fourth = auth.login("alice")

    expected = {first["session_id"], third["session_id"], fourth["session_id"]}
    assert set(session_ids(client, fourth)) == expected
    assert_revoked(client, second)
    events = list_events(client, fourth)
    assert revocations(events) == {second["session_id"]: "evicted"}
    assert sorted(e["type"] for e in events) == ["session.created"] * 4 + ["session.revoked"]


def test_cap_keeps_exactly_the_maximum(make_app: Any):
    app = make_app(SESSIONSVC_MAX_SESSIONS_PER_USER=3)
    auth, client = Auth(app), app.test_client()
    logins = [auth.login("alice", ip=f"192.0.2.{n}") for n in range(4)]
    ids = session_ids(client, logins[-1])
    assert len(ids) == 3
    assert logins[-1]["session_id"] in ids
    evicted = [t for t in logins if t["session_id"] not in ids]
    assert len(evicted) == 1
    assert_revoked(client, evicted[0])
    assert revocations(list_events(client, logins[-1])) == {evicted[0]["session_id"]: "evicted"}


def test_concurrent_logins_respect_the_cap_exactly(make_app: Any, backend: Any):
    from concurrent.futures import ThreadPoolExecutor

    app = make_app(SESSIONSVC_MAX_SESSIONS_PER_USER=3)
    auth = Auth(app)
    auth.create_user("alice", "pw")

    def login(_: int) -> str:
        client = app.test_client()
        response = client.post("/api/v1/auth/login", json={"username": "alice", "password": "pw"})
        assert response.status_code == 200
        return str(response.get_json()["session_id"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        opened = list(pool.map(login, range(10)))
    assert len(set(opened)) == 10
    with app.app_context():
        from sessionsvc import current_manager

        live = current_manager().list_for("alice")
        events = current_manager().events_for("alice", limit=100)
    assert len(live) == 3
    assert {s.id for s in live} <= set(opened)
    evicted = [e.session_id for e in events if e.detail.get("reason") == "evicted"]
    assert len(evicted) == 7
    assert set(evicted) | {s.id for s in live} == set(opened)


# -- security monitoring: addresses, anomalies, risk, idle timeout, location -----------


def test_a_new_address_is_recorded_as_ip_changed(auth: Auth, client: FlaskClient, clock: Any):
    tokens = auth.login("alice", ip="198.51.100.4")
    sessions = list_sessions(client, tokens, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert sessions[0]["ip"] == "198.51.100.7"
    assert sessions[0]["created_ip"] == "198.51.100.4"
    # Within the touch interval a further change moves the session's address
    # but records nothing more: one ip_changed a minute per session at most.
    sessions = list_sessions(client, tokens, environ_base={"REMOTE_ADDR": "198.51.100.9"})
    assert sessions[0]["ip"] == "198.51.100.9"
    clock.shift(60)
    changed = [e for e in list_events(client, tokens) if e["type"] == "session.ip_changed"]
    # The last request came from the test client's own 127.0.0.1.
    assert [e["detail"] for e in reversed(changed)] == [
        {"from": "198.51.100.4", "to": "198.51.100.7"},
        {"from": "198.51.100.9", "to": "127.0.0.1"},
    ]
    assert all(e["session_id"] == tokens["session_id"] for e in changed)


def test_a_token_used_from_another_browser_is_an_anomaly_and_flagged(
    auth: Auth, client: FlaskClient
):
    tokens = auth.login("alice", user_agent=CHROME)
    stolen = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": FIREFOX_LINUX}
    response = client.get(SESSIONS, headers=stolen)
    assert response.status_code == 200
    [session] = response.get_json()["sessions"]
    assert session["risk"] == ["anomaly"]
    assert session["device"]["browser"] == "Chrome"  # still the device that signed in
    [anomaly] = [e for e in list_events(client, tokens) if e["type"] == "session.anomaly"]
    assert anomaly["session_id"] == tokens["session_id"]
    assert anomaly["user_agent"] == FIREFOX_LINUX
    assert anomaly["detail"] == {
        "browser": {"from": "Chrome", "to": "Firefox"},
        "os": {"from": "Windows", "to": "Linux"},
    }


def test_revoke_on_anomaly_signs_the_session_out_on_that_request(make_app: Any):
    app = make_app(SESSIONSVC_REVOKE_ON_ANOMALY=True)
    auth, client = Auth(app), app.test_client()
    tokens = auth.login("alice", user_agent=CHROME)
    watcher = auth.login("alice", user_agent=CHROME)
    stolen = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": IPHONE}
    assert_problem(client.get(SESSIONS, headers=stolen), 401, "session_revoked")
    assert_revoked(client, tokens)  # from its own browser too: it is gone
    response = client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))
    assert_problem(response, 401, "session_revoked")
    events = list_events(client, watcher)
    assert revocations(events) == {tokens["session_id"]: "anomaly"}
    assert [e["type"] for e in events[:2]] == ["session.revoked", "session.anomaly"]
    assert session_ids(client, watcher) == [watcher["session_id"]]


def test_risk_new_device_when_the_user_never_used_that_browser(auth: Auth, client: FlaskClient):
    first = auth.login("alice", user_agent=CHROME)
    phone = auth.login("alice", user_agent=IPHONE)
    again = auth.login("alice", user_agent=CHROME)
    risk = {s["id"]: s["risk"] for s in list_sessions(client, first)}
    assert risk == {
        first["session_id"]: [],
        phone["session_id"]: ["new_device"],
        again["session_id"]: [],
    }
    created = {e["session_id"]: e["detail"] for e in list_events(client, first)}
    assert created[phone["session_id"]] == {"risk": ["new_device"]}
    assert created[first["session_id"]] == {}


def test_idle_timeout_ends_an_unused_session_on_its_next_use(make_app: Any, clock: Any):
    app = make_app(SESSIONSVC_IDLE_TIMEOUT=600, SESSIONSVC_TOUCH_INTERVAL=60)
    auth, client = Auth(app), app.test_client()
    start = int(time.time())
    idle = auth.login("alice")
    active = auth.login("alice")
    [first, _] = list_sessions(client, active)
    assert epoch(first["idle_expires_at"]) == start + 600
    clock.shift(400)
    listed = {s["id"]: s for s in list_sessions(client, active)}
    assert epoch(listed[active["session_id"]]["idle_expires_at"]) == start + 400 + 600
    assert epoch(listed[idle["session_id"]]["idle_expires_at"]) == start + 600
    clock.shift(300)  # idle: 700 s unused; active: 300 s
    assert_problem(client.get(SESSIONS, headers=auth.headers(idle)), 401, "session_revoked")
    assert session_ids(client, active) == [active["session_id"]]
    assert revocations(list_events(client, active)) == {idle["session_id"]: "idle"}


def test_a_session_past_its_idle_timeout_cannot_be_read_or_renamed(make_app: Any, clock: Any):
    app = make_app(SESSIONSVC_IDLE_TIMEOUT=600, SESSIONSVC_TOUCH_INTERVAL=60)
    auth, client = Auth(app), app.test_client()
    idle = auth.login("alice")
    clock.shift(500)
    active = auth.login("alice")
    clock.shift(200)  # idle: 700 s unused
    path = f"{SESSIONS}/{idle['session_id']}"
    assert_problem(client.get(path, headers=auth.headers(active)), 404, "session_not_found")
    response = patch_name(client, active, idle["session_id"], json={"name": "x"})
    assert_problem(response, 404, "session_not_found")
    assert session_ids(client, active) == [active["session_id"]]


def test_without_idle_timeout_idle_expires_at_is_null(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice")
    assert list_sessions(client, tokens)[0]["idle_expires_at"] is None


def test_location_from_the_geoip_database(make_app: Any, geoip_db: Any):
    app = make_app(SESSIONSVC_GEOIP_DB=str(geoip_db))
    auth, client = Auth(app), app.test_client()
    berlin = auth.login("alice", ip=BERLIN_IP)
    private = auth.login("alice", ip="10.0.0.8")
    here = {"REMOTE_ADDR": BERLIN_IP}
    located = {s["id"]: s["location"] for s in list_sessions(client, berlin, environ_base=here)}
    assert located == {
        berlin["session_id"]: {
            "country": "DE",
            "city": "Berlin",
            "latitude": 52.52,
            "longitude": 13.405,
        },
        private["session_id"]: None,
    }


def test_a_country_jump_is_an_anomaly_and_the_location_follows(make_app: Any, geoip_db: Any):
    app = make_app(SESSIONSVC_GEOIP_DB=str(geoip_db))
    auth, client = Auth(app), app.test_client()
    tokens = auth.login("alice", ip=BERLIN_IP)
    sessions = list_sessions(client, tokens, environ_base={"REMOTE_ADDR": NEW_YORK_IP})
    assert sessions[0]["location"] == {
        "country": "US",
        "city": "New York",
        "latitude": 40.7128,
        "longitude": -74.006,
    }
    # Berlin to New York within a second: a change of country, and a trip
    # no plane makes (6,385 km).
    assert sessions[0]["risk"] == ["anomaly", "impossible_travel"]
    events = list_events(client, tokens, environ_base={"REMOTE_ADDR": NEW_YORK_IP})
    travel, change = [e for e in events if e["type"] == "session.anomaly"]  # newest first
    assert change["detail"] == {"country": {"from": "DE", "to": "US"}}
    assert travel["detail"]["kind"] == "impossible_travel"
    assert travel["detail"]["distance_km"] == 6385
    assert travel["detail"]["location"] == {
        "from": {"country": "DE", "city": "Berlin"},
        "to": {"country": "US", "city": "New York"},
    }
    assert change["ip"] == travel["ip"] == NEW_YORK_IP


def test_without_a_geoip_database_location_is_null(auth: Auth, client: FlaskClient):
    tokens = auth.login("alice", ip=BERLIN_IP)
    here = {"REMOTE_ADDR": BERLIN_IP}
    assert list_sessions(client, tokens, environ_base=here)[0]["location"] is None
