"""The models' JSON shapes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import sessionsvc
from sessionsvc import reviews
from sessionsvc.models import (
    REVOCATION_REASONS,
    Device,
    Location,
    SecurityEvent,
    Session,
    TokenPair,
    isotime,
)

CREATED = int(datetime(2026, 11, 26, 22, 15, 12, tzinfo=UTC).timestamp())
SEEN = int(datetime(2026, 11, 26, 22, 40, 3, tzinfo=UTC).timestamp())
EXPIRES = int(datetime(2026, 12, 26, 22, 15, 12, tzinfo=UTC).timestamp())


def test_isotime_is_utc_with_z_and_second_precision() -> None:
    assert isotime(0) == "1970-01-01T00:00:00Z"
    assert isotime(1_700_000_000) == "2023-11-14T22:13:20Z"
    assert isotime(CREATED) == "2026-11-26T22:15:12Z"
    assert isotime(None) is None


def make_session(**changes: object) -> Session:
    values: dict[str, object] = {
        "id": "s-1",
        "user_id": "alice",
        "created_at": CREATED,
        "last_seen_at": SEEN,
        "expires_at": EXPIRES,
        "ip": "203.0.113.7",
        "created_ip": "198.51.100.4",
        "user_agent": "Mozilla/5.0 (...) Chrome/120.0 Safari/537.36",
        "device": Device("desktop", "Chrome", "120.0", "Windows", "10"),
        "location": Location("DE", "Berlin", 52.52, 13.4),
        "name": "Work laptop",
        "refresh_jti": "secret-jti",
    }
    values.update(changes)
    return Session(**values)  # type: ignore[arg-type]


def test_session_to_json_matches_the_spec_example() -> None:
    assert make_session().to_json(current=True) == {
        "id": "s-1",
        "current": True,
        "created_at": "2026-11-26T22:15:12Z",
        "last_seen_at": "2026-11-26T22:40:03Z",
        "expires_at": "2026-12-26T22:15:12Z",
        "ip": "203.0.113.7",
        "created_ip": "198.51.100.4",
        "user_agent": "Mozilla/5.0 (...) Chrome/120.0 Safari/537.36",
        "device": {
            "type": "desktop",
            "browser": "Chrome",
            "browser_version": "120.0",
            "os": "Windows",
            "os_version": "10",
            "label": "Chrome 120 on Windows 10",
        },
        "location": {"country": "DE", "city": "Berlin", "latitude": 52.52, "longitude": 13.4},
        "name": "Work laptop",
        "idle_expires_at": None,
        "risk": [],
        "review": None,
        "dpop_bound": False,
    }


@pytest.mark.parametrize(
    ("risk", "confirmed_at", "review"),
    [
        ((), None, None),
        ((), SEEN, None),  # nothing flagged: nothing to review, whatever is stored
        (("new_device",), None, "pending"),
        (("new_country", "anomaly"), None, "pending"),
        (("new_device",), SEEN, "confirmed"),
    ],
)
def test_review_follows_the_risk_flags_and_the_confirmation(
    risk: tuple[str, ...], confirmed_at: int | None, review: str | None
) -> None:
    session = make_session(risk=risk, confirmed_at=confirmed_at)
    assert session.review == review
    body = session.to_json()
    assert (body["risk"], body["review"]) == (list(risk), review)
    # Right after the flags it is about (the order the OpenAPI document lists).
    keys = list(body)
    assert keys[keys.index("risk") : keys.index("risk") + 3] == ["risk", "review", "dpop_bound"]


def test_session_to_json_hides_internal_fields() -> None:
    body = make_session().to_json()
    assert body["current"] is False
    assert "refresh_jti" not in body
    assert "user_id" not in body
    assert "secret-jti" not in str(body)


def test_session_to_json_with_nothing_known() -> None:
    session = Session(
        id="s-2",
        user_id="bob",
        created_at=0,
        last_seen_at=0,
        expires_at=60,
        ip=None,
        created_ip=None,
        user_agent=None,
    )
    body = session.to_json()
    assert body["location"] is None
    assert body["name"] is None
    assert body["user_agent"] is None
    assert body["ip"] is None
    assert body["device"] == {
        "type": "other",
        "browser": None,
        "browser_version": None,
        "os": None,
        "os_version": None,
        "label": None,
    }


def test_idle_expiry_is_last_seen_plus_timeout() -> None:
    body = make_session().to_json(idle_timeout=1800)
    assert body["idle_expires_at"] == isotime(SEEN + 1800) == "2026-11-26T23:10:03Z"


def test_idle_expiry_never_passes_the_absolute_expiry() -> None:
    session = make_session(last_seen_at=EXPIRES - 100)
    assert session.to_json(idle_timeout=1800)["idle_expires_at"] == "2026-12-26T22:15:12Z"


def test_idle_expiry_is_null_without_idle_timeout() -> None:
    assert make_session().to_json(idle_timeout=None)["idle_expires_at"] is None


@pytest.mark.parametrize(
    ("device", "label"),
    [
        (Device("desktop", "Chrome", "120.0", "Windows", "10"), "Chrome 120 on Windows 10"),
        (Device("mobile", "Mobile Safari", "17.1", "iOS", "17.1"), "Mobile Safari 17 on iOS 17.1"),
        (Device("desktop", "Firefox", "121", "Linux", None), "Firefox 121 on Linux"),
        (Device("desktop", "Firefox", None, "Linux", None), "Firefox on Linux"),
        (Device("other", "curl", "8.4", None, None), "curl 8"),
        (Device("other", "curl", None, None, None), "curl"),
        (Device("other", None, None, "iOS", "17.1"), "iOS 17.1"),
        (Device("other", None, "120.0", "Windows", None), "Windows"),
        (Device("other", None, None, None, "10"), None),
        (Device(), None),
    ],
)
def test_device_label(device: Device, label: str | None) -> None:
    assert device.label == label
    assert device.to_json()["label"] == label


def test_security_event_to_json() -> None:
    event = SecurityEvent(
        id="1764195312000-0",
        type="session.revoked",
        at=CREATED,
        session_id="s-1",
        ip="203.0.113.7",
        user_agent="curl/8.4.0",
        detail={"reason": "logout"},
    )
    body = event.to_json()
    assert body == {
        "id": "1764195312000-0",
        "type": "session.revoked",
        "at": "2026-11-26T22:15:12Z",
        "session_id": "s-1",
        "ip": "203.0.113.7",
        "user_agent": "curl/8.4.0",
        "detail": {"reason": "logout"},
    }
    body["detail"]["reason"] = "changed"
    assert event.detail == {"reason": "logout"}


def test_security_event_without_detail() -> None:
    event = SecurityEvent("2-0", "session.created", 0, "s-1", None, None)
    body = event.to_json()
    assert body["detail"] == {}
    assert body["ip"] is None
    assert body["user_agent"] is None


def test_token_pair_to_json() -> None:
    pair = TokenPair(access_token="a.b.c", refresh_token="d.e.f", expires_in=900, session_id="s-1")
    assert pair.to_json() == {
        "access_token": "a.b.c",
        "refresh_token": "d.e.f",
        "token_type": "Bearer",
        "expires_in": 900,
        "session_id": "s-1",
    }


def test_every_revocation_reason_the_code_records_is_listed() -> None:
    package = Path(sessionsvc.__file__).parent
    recorded: set[str] = set()
    for script in (package / "store" / "scripts").glob("*.lua"):
        recorded |= set(re.findall(r"'session\.revoked', \w+, '([a-z_]+)'", script.read_text()))
        # revoke(status, reason) calls in the activity script
        recorded |= set(re.findall(r"revoke\(\d, '([a-z_]+)'\)", script.read_text()))
    for module in package.rglob("*.py"):
        recorded |= set(re.findall(r'reason="([a-z_]+)"', module.read_text()))
    assert {"evicted", "idle", "refresh_reuse", "anomaly", "logout", "others", "admin"} <= recorded
    assert recorded <= set(REVOCATION_REASONS)
    assert reviews.DENIED in REVOCATION_REASONS
