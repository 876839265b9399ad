"""Impossible travel and a history floods cannot wipe (store/scripts/travel.lua,
activity.lua, open.lua, events.lua), through the API, on every backend.

The GeoIP database is the tests' own (tests/geodata.py): real public ranges
placed in Berlin, Potsdam, New York, Tokyo, Sydney and São Paulo, with
coordinates. Time is frozen and moved by hand (the ``clock`` fixture), so speeds are exact.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.clients import CHROME, FIREFOX_LINUX, IPHONE, Auth, assert_problem
from tests.geodata import (
    BERLIN_IP,
    LOS_ANGELES_IP,
    NEW_YORK_IP,
    POTSDAM_IP,
    SAO_PAULO_IP,
    SYDNEY_IP,
    TOKYO_IP,
)

SESSIONS, EVENTS = "/api/v1/sessions", "/api/v1/sessions/events"
HOUR = 3600

#: The database's coordinates of the cities the tests travel between.
BERLIN_AT, SYDNEY_AT, SAO_PAULO_AT = (52.52, 13.405), (-33.8688, 151.2093), (-23.5505, -46.6333)


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The test's own haversine (mean Earth radius 6,371.0088 km)."""
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, point)) for point in (a, b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


#: Access tokens that outlive the trips the tests make.
LONG_LIVED = {"JWT_ACCESS_TOKEN_EXPIRES": timedelta(days=2)}


@pytest.fixture
def located(make_app: Any, geoip_db: Path) -> Flask:
    app: Flask = make_app(SESSIONSVC_GEOIP_DB=str(geoip_db), **LONG_LIVED)
    return app


def use(client: FlaskClient, tokens: dict[str, Any], ip: str, agent: str = CHROME) -> Any:
    """One request of the session's device from ``ip``: its session list."""
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": agent}
    return client.get(SESSIONS, headers=headers, environ_base={"REMOTE_ADDR": ip})


def events(client: FlaskClient, tokens: dict[str, Any], limit: int = 200) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": CHROME}
    response = client.get(EVENTS, query_string={"limit": limit}, headers=headers)
    assert response.status_code == 200, response.get_json()
    found: list[dict[str, Any]] = response.get_json()["events"]
    return found


def travels(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e["detail"]
        for e in found
        if e["type"] == "session.anomaly" and e["detail"].get("kind") == "impossible_travel"
    ]


def risk_of(client: FlaskClient, tokens: dict[str, Any], ip: str) -> list[str]:
    [session] = [
        s for s in use(client, tokens, ip).get_json()["sessions"] if s["current"]
    ]  # fmt: skip
    risk: list[str] = session["risk"]
    return risk


def test_a_session_used_too_far_too_soon_is_an_anomaly(located: Flask, clock: Any) -> None:
    auth, client = Auth(located), located.test_client()
    tokens = auth.login("alice", ip=BERLIN_IP)
    clock.shift(HOUR)
    assert use(client, tokens, SYDNEY_IP).status_code == 200  # 16,000 km in an hour
    [travel] = travels(events(client, tokens))
    distance = great_circle_km(BERLIN_AT, SYDNEY_AT)  # 16,094.5 km
    assert travel == {
        "kind": "impossible_travel",
        "distance_km": round(distance),
        "speed_kmh": round(distance),  # in one hour
        "location": {
            "from": {"country": "DE", "city": "Berlin"},
            "to": {"country": "AU", "city": "Sydney"},
        },
    }
    assert "impossible_travel" in risk_of(client, tokens, SYDNEY_IP)


@pytest.mark.parametrize(
    ("there", "after", "why"),
    [
        (POTSDAM_IP, 1, "27 km: not over 500 km, however fast"),
        (TOKYO_IP, 12 * HOUR, "8,916 km in 12 h is 743 km/h: a plane"),
        (NEW_YORK_IP, 7 * HOUR, "6,385 km in 7 h is 912 km/h: a plane"),
    ],
)
def test_a_trip_that_can_be_made_is_no_anomaly(
    located: Flask, clock: Any, there: str, after: int, why: str
) -> None:
    auth, client = Auth(located), located.test_client()
    tokens = auth.login("alice", ip=BERLIN_IP)
    clock.shift(after)
    assert use(client, tokens, there).status_code == 200
    assert travels(events(client, tokens)) == [], why
    assert "impossible_travel" not in risk_of(client, tokens, there)


def test_a_sign_in_from_too_far_is_flagged_and_recorded(located: Flask, clock: Any) -> None:
    auth, client = Auth(located), located.test_client()
    laptop = auth.login("alice", ip=BERLIN_IP)
    clock.shift(2 * HOUR)
    phone = auth.login("alice", ip=SAO_PAULO_IP, user_agent=IPHONE)
    found = events(client, laptop)
    [travel] = travels(found)
    distance = great_circle_km(BERLIN_AT, SAO_PAULO_AT)  # 10,252.9 km
    assert travel["distance_km"] == round(distance)
    assert travel["speed_kmh"] == round(distance / 2)
    anomaly = next(e for e in found if e["type"] == "session.anomaly")
    created = next(e for e in found if e["type"] == "session.created")
    assert anomaly["session_id"] == created["session_id"] == phone["session_id"]
    assert found.index(anomaly) < found.index(created)  # newest first
    assert "impossible_travel" in created["detail"]["risk"]
    sessions = use(client, phone, SAO_PAULO_IP, IPHONE).get_json()["sessions"]
    risk = {s["id"]: s["risk"] for s in sessions}
    assert "impossible_travel" in risk[phone["session_id"]]
    assert "impossible_travel" not in risk[laptop["session_id"]]


def test_the_last_located_activity_is_the_users_across_sessions(located: Flask, clock: Any) -> None:
    auth, client = Auth(located), located.test_client()
    laptop = auth.login("alice", ip=BERLIN_IP)
    clock.shift(10 * HOUR)
    phone = auth.login("alice", ip=TOKYO_IP, user_agent=IPHONE)  # 893 km/h: fine
    clock.shift(HOUR)
    # The laptop in Berlin an hour after the phone was in Tokyo: one of the
    # two is not where the user is.
    assert use(client, laptop, NEW_YORK_IP).status_code == 200
    [travel] = travels(events(client, phone))
    assert travel["location"]["from"] == {"country": "JP", "city": "Tokyo"}
    assert travel["location"]["to"] == {"country": "US", "city": "New York"}


def test_revoke_on_anomaly_applies_to_impossible_travel(
    make_app: Any, geoip_db: Path, clock: Any
) -> None:
    app = make_app(
        SESSIONSVC_GEOIP_DB=str(geoip_db), SESSIONSVC_REVOKE_ON_ANOMALY=True, **LONG_LIVED
    )
    auth, client = Auth(app), app.test_client()
    tokens = auth.login("alice", ip=NEW_YORK_IP)
    watcher = auth.login("alice", ip=NEW_YORK_IP)
    clock.shift(60)
    # Coast to coast in a minute; the same country, the same browser: the
    # trip is the only anomaly.
    assert_problem(use(client, tokens, LOS_ANGELES_IP), 401, "session_revoked")
    found = [e for e in events(client, watcher) if e["session_id"] == tokens["session_id"]]
    assert [e["type"] for e in found[:2]] == ["session.revoked", "session.anomaly"]
    assert found[0]["detail"] == {"reason": "anomaly"}
    assert found[1]["detail"]["kind"] == "impossible_travel"


def test_travel_anomalies_are_recorded_once_per_touch_interval(located: Flask, clock: Any) -> None:
    auth, client = Auth(located), located.test_client()
    tokens = auth.login("alice", ip=BERLIN_IP)
    clock.shift(HOUR)
    for _ in range(10):  # a thief in Sydney and the user in Berlin, in turn
        use(client, tokens, SYDNEY_IP)
        use(client, tokens, BERLIN_IP)
    assert len(travels(events(client, tokens))) == 1
    clock.shift(60)
    use(client, tokens, SYDNEY_IP)
    assert len(travels(events(client, tokens))) == 2


def test_a_flood_of_anomalies_cannot_push_the_sign_in_out(located: Flask, clock: Any) -> None:
    """Sign in on a phone, then use one stolen token from two desktop browsers
    and two addresses in turn, 1,100 times: the sign-in stays, newest first
    behind one anomaly and one address change a minute."""
    auth, client = Auth(located), located.test_client()
    phone = auth.login("alice", ip=BERLIN_IP, user_agent=IPHONE)
    stolen = auth.login("alice", ip=BERLIN_IP, user_agent=CHROME)
    for i in range(1100):
        if i % 100 == 99:
            clock.shift(60)  # the flood takes its time: 11 touch intervals
        agent, ip = (CHROME, BERLIN_IP) if i % 2 else (FIREFOX_LINUX, POTSDAM_IP)
        assert use(client, stolen, ip, agent).status_code == 200
    found = events(client, phone, limit=50)
    kinds = [e["type"] for e in found if e["session_id"] == stolen["session_id"]]
    assert 1 <= kinds.count("session.anomaly") <= 12
    assert 1 <= kinds.count("session.ip_changed") <= 12
    created = [e["session_id"] for e in found if e["type"] == "session.created"]
    assert created == [stolen["session_id"], phone["session_id"]]
    assert found[-1]["type"] == "session.created"


def test_with_a_small_cap_activity_events_push_out_only_their_own_kind(
    make_app: Any, clock: Any
) -> None:
    """With room for 5 events per list, 30 minutes of a token used from two
    addresses fill the activity list, and the sign-ins and the sign-out stay."""
    app = make_app(SESSIONSVC_EVENTS_MAX=5, **LONG_LIVED)
    auth, client = Auth(app), app.test_client()
    phone = auth.login("alice", ip="85.214.1.1", user_agent=IPHONE)
    stolen = auth.login("alice", ip="85.214.1.1")
    gone = auth.login("alice", ip="85.214.1.1")
    headers = {"Authorization": f"Bearer {phone['access_token']}", "User-Agent": IPHONE}
    here = {"REMOTE_ADDR": "85.214.1.1"}
    path = f"{SESSIONS}/{gone['session_id']}"
    assert client.delete(path, headers=headers, environ_base=here).status_code == 204
    for minute in range(30):
        clock.shift(60)
        use(client, stolen, f"85.214.2.{minute % 2 + 1}", FIREFOX_LINUX if minute % 2 else CHROME)
    response = client.get(EVENTS, headers=headers, environ_base=here)
    found = [(e["type"], e["session_id"]) for e in response.get_json()["events"]]
    kept = [(kind, sid) for kind, sid in found if kind in ("session.created", "session.revoked")]
    assert kept == [
        ("session.revoked", gone["session_id"]),
        ("session.created", gone["session_id"]),
        ("session.created", stolen["session_id"]),
        ("session.created", phone["session_id"]),
    ]
    activity = [kind for kind, _ in found if kind not in ("session.created", "session.revoked")]
    assert len(activity) == 5  # the newest of the capped activity list
