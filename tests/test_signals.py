"""Signals and the security-event log: each fires once per event, with the right payload."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import session_opened, session_revoked
from tests.support import Auth


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
