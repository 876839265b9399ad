"""Signals and the security-event log: each fires once per event, with the right payload."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import session_anomaly, session_opened, session_revoked
from tests.clients import CHROME, FIREFOX_LINUX, IPHONE, Auth


@pytest.fixture
def received(app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    def opened(sender: Flask, **kwargs: Any) -> None:
        assert sender is app
        got.append(("opened", kwargs))

    def revoked(sender: Flask, **kwargs: Any) -> None:
        assert sender is app
        got.append(("revoked", kwargs))

    with session_opened.connected_to(opened, app), session_revoked.connected_to(revoked, app):
        yield got


def test_login_sends_session_opened_once(auth: Auth, received: list[Any]) -> None:
    tokens = auth.login("alice")
    assert len(received) == 1
    kind, payload = received[0]
    assert kind == "opened"
    assert payload["user_id"] == "alice"
    assert payload["session"].id == tokens["session_id"]
    assert payload["session"].device.browser == "Chrome"


@pytest.mark.parametrize(
    ("how", "reason"),
    [("by_id", "user"), ("others", "others"), ("own", "logout"), ("logout", "logout")],
)
def test_each_revocation_sends_session_revoked_once_with_its_reason(
    auth: Auth, client: FlaskClient, received: list[Any], how: str, reason: str
) -> None:
    mine = auth.login("alice")
    other = auth.login("alice")
    received.clear()
    headers = auth.headers(mine)
    target = other["session_id"]
    if how == "by_id":
        client.delete(f"/api/v1/sessions/{target}", headers=headers)
    elif how == "others":
        client.delete("/api/v1/sessions", headers=headers)
    elif how == "own":
        target = mine["session_id"]
        client.delete(f"/api/v1/sessions/{target}", headers=headers)
    else:
        target = mine["session_id"]
        client.post("/api/v1/auth/logout", headers=headers)
    assert received == [("revoked", {"user_id": "alice", "session_id": target, "reason": reason})]


def test_refresh_reuse_and_eviction_are_reported(make_app: Any) -> None:
    app = make_app(SESSIONSVC_MAX_SESSIONS_PER_USER=1)
    auth, client = Auth(app), app.test_client()
    got: list[dict[str, Any]] = []

    def revoked(sender: Flask, **kwargs: Any) -> None:
        got.append(kwargs)

    with session_revoked.connected_to(revoked, app):
        first = auth.login("alice")
        second = auth.login("alice")  # evicts the first
        client.post("/api/v1/auth/refresh", headers=auth.headers(second, "refresh_token"))
        client.post("/api/v1/auth/refresh", headers=auth.headers(second, "refresh_token"))
    assert got == [
        {"user_id": "alice", "session_id": first["session_id"], "reason": "evicted"},
        {"user_id": "alice", "session_id": second["session_id"], "reason": "refresh_reuse"},
    ]


def test_one_json_log_line_per_event_without_secrets(
    auth: Auth, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sessionsvc.events"):
        tokens = auth.login("alice", password="hunter2-secret")
        client.post("/api/v1/auth/logout", headers=auth.headers(tokens))
    lines = [r.getMessage() for r in caplog.records if r.name == "sessionsvc.events"]
    assert [json.loads(line) for line in lines] == [
        {
            "event": "session.created",
            "user_id": "alice",
            "session_id": tokens["session_id"],
            "ip": "127.0.0.1",
        },
        {
            "event": "session.revoked",
            "user_id": "alice",
            "session_id": tokens["session_id"],
            "reason": "logout",
            "ip": "127.0.0.1",
        },
    ]
    everything = caplog.text
    for secret in ("hunter2-secret", tokens["access_token"], tokens["refresh_token"]):
        assert secret not in everything


@pytest.mark.parametrize("revoke", [False, True])
def test_an_anomaly_sends_session_anomaly_once(make_app: Any, revoke: bool) -> None:
    app = make_app(SESSIONSVC_REVOKE_ON_ANOMALY=revoke)
    auth, client = Auth(app), app.test_client()
    got: list[tuple[str, dict[str, Any]]] = []

    def anomaly(sender: Flask, **kwargs: Any) -> None:
        assert sender is app
        got.append(("anomaly", kwargs))

    def revoked(sender: Flask, **kwargs: Any) -> None:
        got.append(("revoked", kwargs))

    tokens = auth.login("alice", user_agent=CHROME)
    stolen = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": FIREFOX_LINUX}
    with session_anomaly.connected_to(anomaly, app), session_revoked.connected_to(revoked, app):
        first = client.get("/api/v1/sessions", headers=stolen)
        client.get("/api/v1/sessions", headers=stolen)  # the same change: not again
    sid = tokens["session_id"]
    detail = {
        "browser": {"from": "Chrome", "to": "Firefox"},
        "os": {"from": "Windows", "to": "Linux"},
    }
    expected = [
        ("anomaly", {"user_id": "alice", "session_id": sid, "detail": detail, "revoked": revoke})
    ]
    if revoke:
        expected.append(("revoked", {"user_id": "alice", "session_id": sid, "reason": "anomaly"}))
    assert got == expected
    assert first.status_code == (401 if revoke else 200)


def test_idle_revocation_is_signalled_and_logged(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(SESSIONSVC_IDLE_TIMEOUT=120, SESSIONSVC_TOUCH_INTERVAL=60)
    auth, client = Auth(app), app.test_client()
    got: list[dict[str, Any]] = []
    with time_machine.travel(int(time.time()) + 3600, tick=False) as clock:
        tokens = auth.login("alice")
        clock.shift(121)
        with (
            session_revoked.connected_to(lambda _, **kwargs: got.append(kwargs), app),
            caplog.at_level(logging.INFO, logger="sessionsvc.events"),
        ):
            assert client.get("/api/v1/sessions", headers=auth.headers(tokens)).status_code == 401
    assert got == [{"user_id": "alice", "session_id": tokens["session_id"], "reason": "idle"}]
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sessionsvc.events"]
    assert line == {
        "event": "session.revoked",
        "user_id": "alice",
        "session_id": tokens["session_id"],
        "reason": "idle",
        "ip": "127.0.0.1",
    }


def test_address_changes_and_anomalies_are_logged_with_what_changed(
    auth: Auth, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = auth.login("alice", ip="198.51.100.4")
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": IPHONE}
    with caplog.at_level(logging.INFO, logger="sessionsvc.events"):
        client.get(
            "/api/v1/sessions", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.9"}
        )
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sessionsvc.events"]
    base = {"user_id": "alice", "session_id": tokens["session_id"], "ip": "198.51.100.9"}
    assert lines == [
        {
            **base,
            "event": "session.anomaly",
            "detail": {
                "browser": {"from": "Chrome", "to": "Mobile Safari"},
                "os": {"from": "Windows", "to": "iOS"},
            },
        },
        {
            **base,
            "event": "session.ip_changed",
            "detail": {"from": "198.51.100.4", "to": "198.51.100.9"},
        },
    ]
    assert tokens["access_token"] not in caplog.text
