"""Reviewing flagged sign-ins, "Was this you?" (docs/api.md, section 4).

On fakeredis, a real Redis server and the cluster (the ``backend`` fixture).
A user's first session has no risk flags; a sign-in with a browser/OS the
user never used is ``new_device``; a token used from another browser is an
``anomaly``: that is how the tests get flagged sessions.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from sessionsvc.signals import session_confirmed, session_revoked
from sessionsvc.state import current_state
from sessionsvc.store.codec import event_from_json
from sessionsvc.store.keys import stream_tag
from tests.backends import AppFactory, Backend
from tests.clients import CHROME, FIREFOX_LINUX, IPHONE, Auth, assert_problem
from tests.geodata import LOS_ANGELES_IP, NEW_YORK_IP

SESSIONS = "/api/v1/sessions"
EVENTS = "/api/v1/sessions/events?limit=200"
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
)
ROUNDS = 25


# -- helpers -------------------------------------------------------------------


def confirm(client: FlaskClient, caller: dict[str, Any], sid: str) -> Any:
    return client.post(f"{SESSIONS}/{sid}/confirm", headers=Auth.headers(caller))


def deny(client: FlaskClient, caller: dict[str, Any], sid: str) -> Any:
    return client.post(f"{SESSIONS}/{sid}/deny", headers=Auth.headers(caller))


def sessions_of(client: FlaskClient, tokens: dict[str, Any]) -> dict[str, dict[str, Any]]:
    response = client.get(SESSIONS, headers=Auth.headers(tokens))
    assert response.status_code == 200, response.get_data(as_text=True)
    return {s["id"]: s for s in response.get_json()["sessions"]}


def reviews(client: FlaskClient, tokens: dict[str, Any]) -> dict[str, str | None]:
    return {sid: s["review"] for sid, s in sessions_of(client, tokens).items()}


def events_of(client: FlaskClient, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get(EVENTS, headers=Auth.headers(tokens))
    assert response.status_code == 200, response.get_data(as_text=True)
    events: list[dict[str, Any]] = response.get_json()["events"]
    return events


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def revocations(events: list[dict[str, Any]]) -> dict[str, str]:
    return {e["session_id"]: e["detail"]["reason"] for e in of_type(events, "session.revoked")}


def confirmed_metric(client: FlaskClient) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == "sessionsvc_sessions_confirmed_total":
                return float(sample.value)
    return 0.0


class Account:
    """A user with a trusted session (the first: no flags) and flagged ones."""

    def __init__(self, auth: Auth, user: str = "alice") -> None:
        self.trusted = auth.login(user, user_agent=CHROME)
        self.phone = auth.login(user, user_agent=IPHONE)  # new_device
        self.linux = auth.login(user, user_agent=FIREFOX_LINUX)  # new_device
        self.laptop = auth.login(user, user_agent=CHROME)  # known device: no flags

    @property
    def pending(self) -> set[str]:
        return {self.phone["session_id"], self.linux["session_id"]}


@pytest.fixture
def received(app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    def confirmed(sender: Flask, **kwargs: Any) -> None:
        assert sender is app
        got.append(("confirmed", kwargs))

    def revoked(sender: Flask, **kwargs: Any) -> None:
        assert sender is app
        got.append(("revoked", kwargs))

    with (
        session_confirmed.connected_to(confirmed, app),
        session_revoked.connected_to(revoked, app),
    ):
        yield got


# -- the review field ------------------------------------------------------------


def test_review_is_null_pending_or_confirmed_in_list_and_get(auth: Auth, client: FlaskClient):
    alice = Account(auth)
    phone, linux = alice.phone["session_id"], alice.linux["session_id"]
    assert confirm(client, alice.trusted, phone).status_code == 200

    listed = sessions_of(client, alice.trusted)
    assert {sid: (s["risk"], s["review"]) for sid, s in listed.items()} == {
        alice.trusted["session_id"]: ([], None),
        phone: (["new_device"], "confirmed"),
        linux: (["new_device"], "pending"),
        alice.laptop["session_id"]: ([], None),
    }
    for sid, session in listed.items():
        response = client.get(f"{SESSIONS}/{sid}", headers=Auth.headers(alice.trusted))
        assert response.status_code == 200
        assert response.get_json() == session


# -- confirm ---------------------------------------------------------------------


def test_confirm_returns_the_session_confirmed_and_is_idempotent(
    auth: Auth, client: FlaskClient, received: list[Any]
):
    alice = Account(auth)
    phone = alice.phone["session_id"]
    before = confirmed_metric(client)
    received.clear()

    first = confirm(client, alice.trusted, phone)
    assert first.status_code == 200, first.get_data(as_text=True)
    body = first.get_json()
    assert body["id"] == phone
    assert body["current"] is False
    assert body["risk"] == ["new_device"]  # the flags stay: the record of what was seen
    assert body["review"] == "confirmed"
    got = client.get(f"{SESSIONS}/{phone}", headers=Auth.headers(alice.trusted)).get_json()
    assert got == body

    again = confirm(client, alice.trusted, phone)
    assert again.status_code == 200
    assert again.get_json() == body
    # From another trusted session too: the same answer, nothing new.
    assert confirm(client, alice.laptop, phone).get_json() == body

    [event] = of_type(events_of(client, alice.trusted), "session.confirmed")
    assert event["session_id"] == phone
    assert event["user_agent"] == CHROME  # the request that answered
    assert event["ip"] == "127.0.0.1"
    assert event["detail"] == {}
    assert received == [("confirmed", {"user_id": "alice", "session_id": phone})]
    assert confirmed_metric(client) == before + 1
    # Nothing else changed: every session is still there.
    assert set(sessions_of(client, alice.trusted)) == {
        alice.trusted["session_id"],
        phone,
        alice.linux["session_id"],
        alice.laptop["session_id"],
    }


def test_confirm_is_logged_as_one_json_line(
    auth: Auth, client: FlaskClient, caplog: pytest.LogCaptureFixture
):
    alice = Account(auth)
    phone = alice.phone["session_id"]
    with caplog.at_level("INFO", logger="sessionsvc.events"):
        confirm(client, alice.trusted, phone)
        confirm(client, alice.trusted, phone)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sessionsvc.events"]
    assert [(line["event"], line["session_id"]) for line in lines] == [("session.confirmed", phone)]
    assert lines[0]["user_id"] == "alice"


def test_a_confirmation_is_queued_for_webhooks(make_app: AppFactory, backend: Backend):
    app = make_app(
        SESSIONSVC_WEBHOOK_URLS="https://hooks.example.com/sessions",
        SESSIONSVC_WEBHOOK_SECRET="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    auth, client = Auth(app), app.test_client()
    alice = Account(auth)
    phone = alice.phone["session_id"]
    assert confirm(client, alice.trusted, phone).status_code == 200
    assert confirm(client, alice.trusted, phone).status_code == 200
    with app.app_context():
        cluster = current_state().store.cluster
    stream = f"{backend.prefix}:{{{stream_tag('alice', cluster=cluster)}}}:wh"
    entries = [fields["e"] for _, fields in backend.client().xrange(stream)]
    queued = [json.loads(e) for e in entries if event_from_json(e).type == "session.confirmed"]
    confirmations = queued
    assert [(e["s"], e["ua"]) for e in confirmations] == [(phone, CHROME)]
    [event] = of_type(events_of(client, alice.trusted), "session.confirmed")
    assert confirmations[0]["i"] == event["id"]


def test_confirm_of_a_session_without_flags_is_409(auth: Auth, client: FlaskClient):
    alice = Account(auth)
    laptop = alice.laptop["session_id"]
    assert_problem(confirm(client, alice.trusted, laptop), 409, "nothing_to_review")
    assert reviews(client, alice.trusted)[laptop] is None
    assert of_type(events_of(client, alice.trusted), "session.confirmed") == []


def test_an_anomaly_after_a_confirmation_makes_it_pending_again(
    auth: Auth, client: FlaskClient, clock: Any
):
    trusted = auth.login("alice", user_agent=CHROME)
    other = auth.login("alice", user_agent=CHROME)
    sid = other["session_id"]
    assert reviews(client, trusted)[sid] is None
    # Its token used from another browser: an anomaly, to review.
    stolen = {**Auth.headers(other), "User-Agent": FIREFOX_LINUX}
    assert client.get(SESSIONS, headers=stolen).status_code == 200
    assert reviews(client, trusted)[sid] == "pending"
    assert confirm(client, trusted, sid).get_json()["review"] == "confirmed"
    # The same change again, within the touch interval: nothing new recorded.
    assert client.get(SESSIONS, headers=stolen).status_code == 200
    assert reviews(client, trusted)[sid] == "confirmed"
    # Another change, recorded later: asked again.
    clock.shift(120)
    assert client.get(SESSIONS, headers={**stolen, "User-Agent": IPHONE}).status_code == 200
    session = sessions_of(client, trusted)[sid]
    assert (session["risk"], session["review"]) == (["anomaly"], "pending")
    assert confirm(client, trusted, sid).get_json()["review"] == "confirmed"
    assert len(of_type(events_of(client, trusted), "session.confirmed")) == 2


def test_impossible_travel_after_a_confirmation_makes_it_pending_again(
    make_app: AppFactory, geoip_db: Any
):
    app = make_app(SESSIONSVC_GEOIP_DB=str(geoip_db))
    auth, client = Auth(app), app.test_client()
    trusted = auth.login("alice", user_agent=CHROME, ip=NEW_YORK_IP)
    phone = auth.login("alice", user_agent=IPHONE, ip=NEW_YORK_IP)
    sid = phone["session_id"]
    assert confirm(client, trusted, sid).get_json()["review"] == "confirmed"
    # New York to Los Angeles within a second, the same country: travel only.
    far = client.get(
        SESSIONS, headers=Auth.headers(phone), environ_base={"REMOTE_ADDR": LOS_ANGELES_IP}
    )
    assert far.status_code == 200
    session = sessions_of(client, trusted)[sid]
    assert (session["risk"], session["review"]) == (["new_device", "impossible_travel"], "pending")


def test_a_session_past_the_idle_timeout_is_not_reviewed(make_app: AppFactory, clock: Any):
    app = make_app(SESSIONSVC_IDLE_TIMEOUT=600, SESSIONSVC_TOUCH_INTERVAL=60)
    auth, client = Auth(app), app.test_client()
    trusted = auth.login("alice", user_agent=CHROME)
    idle = auth.login("alice", user_agent=IPHONE)  # pending, then unused
    clock.shift(500)
    linux = auth.login("alice", user_agent=FIREFOX_LINUX)  # pending
    assert set(sessions_of(client, trusted)) == {
        trusted["session_id"],
        idle["session_id"],
        linux["session_id"],
    }
    clock.shift(200)  # idle: 700 s unused
    for answer in (confirm, deny):
        assert_problem(answer(client, trusted, idle["session_id"]), 404, "session_not_found")
    # Dead already: a deny does not count it (the listing revokes it as idle).
    assert deny(client, trusted, linux["session_id"]).get_json() == {"revoked": 1}
    assert set(sessions_of(client, trusted)) == {trusted["session_id"]}
    assert revocations(events_of(client, trusted)) == {
        linux["session_id"]: "denied",
        idle["session_id"]: "idle",
    }


# -- deny ------------------------------------------------------------------------


def test_deny_revokes_it_and_every_other_pending_session_never_the_callers(
    auth: Auth, client: FlaskClient, received: list[Any]
):
    alice = Account(auth)
    tablet = auth.login("alice", user_agent=ANDROID)  # new_device, confirmed below
    assert confirm(client, alice.trusted, tablet["session_id"]).status_code == 200
    bob = Account(auth, "bob")
    bob_before = sessions_of(client, bob.trusted)
    bob_events = events_of(client, bob.trusted)
    received.clear()

    response = deny(client, alice.trusted, alice.phone["session_id"])

    assert response.status_code == 200
    assert response.get_json() == {"revoked": 2}
    assert set(reviews(client, alice.trusted)) == {
        alice.trusted["session_id"],
        alice.laptop["session_id"],
        tablet["session_id"],
    }
    events = events_of(client, alice.trusted)
    assert revocations(events) == dict.fromkeys(alice.pending, "denied")
    # Recorded as from the request that answered, on the trusted device.
    assert {(e["user_agent"], e["ip"]) for e in of_type(events, "session.revoked")} == {
        (CHROME, "127.0.0.1")
    }
    assert sorted((k, p["session_id"], p["reason"]) for k, p in received) == sorted(
        ("revoked", sid, "denied") for sid in alice.pending
    )
    for tokens in (alice.phone, alice.linux):
        assert_problem(client.get(SESSIONS, headers=Auth.headers(tokens)), 401, "session_revoked")
    # Bob's sessions, pending ones included, and his events: untouched.
    assert sessions_of(client, bob.trusted) == bob_before
    assert events_of(client, bob.trusted) == bob_events


def test_deny_of_a_confirmed_or_unflagged_session_revokes_it_too(auth: Auth, client: FlaskClient):
    alice = Account(auth)
    phone, laptop = alice.phone["session_id"], alice.laptop["session_id"]
    assert confirm(client, alice.trusted, phone).status_code == 200
    response = deny(client, alice.trusted, phone)
    assert response.get_json() == {"revoked": 2}  # it, and the one still pending
    assert revocations(events_of(client, alice.trusted)) == {
        phone: "denied",
        alice.linux["session_id"]: "denied",
    }
    assert deny(client, alice.trusted, laptop).get_json() == {"revoked": 1}
    assert set(reviews(client, alice.trusted)) == {alice.trusted["session_id"]}


def test_a_confirmed_session_may_answer_for_others(auth: Auth, client: FlaskClient):
    alice = Account(auth)
    assert confirm(client, alice.trusted, alice.phone["session_id"]).status_code == 200
    response = deny(client, alice.phone, alice.linux["session_id"])
    assert response.get_json() == {"revoked": 1}
    assert set(reviews(client, alice.trusted)) == {
        alice.trusted["session_id"],
        alice.phone["session_id"],
        alice.laptop["session_id"],
    }


# -- who may answer ------------------------------------------------------------------


@pytest.mark.parametrize("answer", [confirm, deny])
def test_another_users_or_an_unknown_session_is_404_first(
    auth: Auth, client: FlaskClient, answer: Any
):
    alice = Account(auth)
    bob = Account(auth, "bob")
    revoked = auth.login("alice", user_agent=ANDROID)
    gone = client.delete(f"{SESSIONS}/{revoked['session_id']}", headers=Auth.headers(revoked))
    assert gone.status_code == 204
    before = {who: sessions_of(client, t) for who, t in (("a", alice.trusted), ("b", bob.trusted))}
    for caller in (alice.trusted, alice.phone):  # trusted, and pending (403 otherwise)
        for sid in (
            bob.phone["session_id"],  # another user's pending session
            bob.trusted["session_id"],
            revoked["session_id"],
            secrets.token_urlsafe(32),  # well formed, unknown
            "not-a-session-id",
        ):
            assert_problem(answer(client, caller, sid), 404, "session_not_found")
    after = {who: sessions_of(client, t) for who, t in (("a", alice.trusted), ("b", bob.trusted))}
    assert after == before


@pytest.mark.parametrize("answer", [confirm, deny])
def test_own_session_or_a_pending_caller_is_403(auth: Auth, client: FlaskClient, answer: Any):
    alice = Account(auth)
    phone, linux = alice.phone["session_id"], alice.linux["session_id"]
    cases = [
        (alice.trusted, alice.trusted["session_id"]),  # its own, unflagged: 403 before 409
        (alice.phone, phone),  # a flagged session cannot vouch for itself
        (alice.phone, linux),  # a pending session cannot answer for another
        (alice.phone, alice.trusted["session_id"]),  # nor throw the owner out
    ]
    before = sessions_of(client, alice.trusted)
    for caller, sid in cases:
        assert_problem(answer(client, caller, sid), 403, "review_not_allowed")
    assert sessions_of(client, alice.trusted) == before
    events = events_of(client, alice.trusted)
    assert of_type(events, "session.confirmed") == of_type(events, "session.revoked") == []


def test_reviews_need_an_access_token(auth: Auth, client: FlaskClient):
    alice = Account(auth)
    for action in ("confirm", "deny"):
        path = f"{SESSIONS}/{alice.phone['session_id']}/{action}"
        assert_problem(client.post(path), 401, "authorization_required")
        refresh = Auth.headers(alice.trusted, "refresh_token")
        assert_problem(client.post(path, headers=refresh), 401, "wrong_token_type")
        assert_problem(
            client.get(path, headers=Auth.headers(alice.trusted)), 405, "method_not_allowed"
        )
    assert reviews(client, alice.trusted)[alice.phone["session_id"]] == "pending"


# -- races -----------------------------------------------------------------------


def _race(apps: list[Flask], *calls: tuple[Any, dict[str, Any], str]) -> list[Any]:
    """The calls at once, each on its own app instance (worker) and thread."""
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> Any:
        answer, caller, sid = calls[index]
        client = apps[index % len(apps)].test_client()
        barrier.wait()
        return answer(client, caller, sid)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, range(len(calls))))


def test_a_confirm_racing_a_deny_of_the_same_session_never_leaves_it_alive(
    make_app: AppFactory,
):
    """Either order ends with the session revoked: a deny after the confirm
    still revokes it; a confirm after the deny finds nothing (404) and
    records nothing. The events say which came first."""
    apps = [make_app(), make_app()]
    auth, client = Auth(apps[0]), apps[0].test_client()
    seen = set()
    for n in range(ROUNDS):
        user = f"alice{n}"
        trusted = auth.login(user, user_agent=CHROME)
        laptop = auth.login(user, user_agent=CHROME)
        phone = auth.login(user, user_agent=IPHONE)
        sid = phone["session_id"]

        confirmed, denied = _race(apps, (confirm, trusted, sid), (deny, laptop, sid))

        assert denied.status_code == 200
        assert denied.get_json() == {"revoked": 1}
        assert set(reviews(client, trusted)) == {trusted["session_id"], laptop["session_id"]}
        events = events_of(client, trusted)
        assert revocations(events) == {sid: "denied"}
        kinds = [e["type"] for e in events if e["session_id"] == sid]  # newest first
        if confirmed.status_code == 200:
            assert confirmed.get_json()["review"] == "confirmed"
            assert kinds == ["session.revoked", "session.confirmed", "session.created"]
        else:
            assert_problem(confirmed, 404, "session_not_found")
            assert kinds == ["session.revoked", "session.created"]
        seen.add(confirmed.status_code)
    assert seen <= {200, 404}


def test_a_confirm_racing_a_deny_of_another_session_is_all_or_nothing(make_app: AppFactory):
    """A confirm of one pending session against a deny of another: if the
    confirm is first, its session is confirmed and survives the deny (1
    revoked); if the deny is first, it revokes both and the confirm is 404."""
    apps = [make_app(), make_app()]
    auth, client = Auth(apps[0]), apps[0].test_client()
    bob = Account(auth, "bob")
    bob_before = sessions_of(client, bob.trusted)
    for n in range(ROUNDS):
        user = f"alice{n}"
        trusted = auth.login(user, user_agent=CHROME)
        laptop = auth.login(user, user_agent=CHROME)
        phone = auth.login(user, user_agent=IPHONE)
        linux = auth.login(user, user_agent=FIREFOX_LINUX)

        confirmed, denied = _race(
            apps, (confirm, trusted, phone["session_id"]), (deny, laptop, linux["session_id"])
        )

        assert denied.status_code == 200
        left = reviews(client, trusted)
        events = events_of(client, trusted)
        if confirmed.status_code == 200:
            assert denied.get_json() == {"revoked": 1}
            assert left == {
                trusted["session_id"]: None,
                laptop["session_id"]: None,
                phone["session_id"]: "confirmed",
            }
            assert revocations(events) == {linux["session_id"]: "denied"}
            assert len(of_type(events, "session.confirmed")) == 1
        else:
            assert_problem(confirmed, 404, "session_not_found")
            assert denied.get_json() == {"revoked": 2}
            assert left == {trusted["session_id"]: None, laptop["session_id"]: None}
            assert revocations(events) == {
                linux["session_id"]: "denied",
                phone["session_id"]: "denied",
            }
            assert of_type(events, "session.confirmed") == []
    assert sessions_of(client, bob.trusted) == bob_before
