"""Attacks on "Was this you?" (docs/api.md, section 4.1) as a stranger with
the user's password or a stolen token would make them. Reuses the helpers
of tests/test_reviews.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc.state import current_state
from tests.backends import AppFactory
from tests.browsers import PASSWORD, cards, prompts, reload, sign_in, watch_console
from tests.clients import CHROME, IPHONE, Auth, assert_problem
from tests.test_reviews import (
    ANDROID,
    SESSIONS,
    Account,
    confirm,
    deny,
    events_of,
    of_type,
    reviews,
    revocations,
    sessions_of,
)

# -- a thief with the password: a second sign-in from the same new device ----------


def thief_signs_in_twice(auth: Auth) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The owner's session, then two of a thief's from one new device: the
    first is new_device (pending), the second has no flags (a known device)."""
    owner = auth.login("alice", user_agent=CHROME)
    return owner, auth.login("alice", user_agent=IPHONE), auth.login("alice", user_agent=IPHONE)


def test_a_second_sign_in_from_the_thiefs_device_cannot_vouch_for_the_first(
    auth: Auth, client: FlaskClient
):
    owner, first, second = thief_signs_in_twice(auth)
    sid = first["session_id"]
    assert reviews(client, owner)[sid] == "pending"
    # The second thief session is not pending, so it may answer for the first:
    # the owner's prompt disappears without the owner ever answering it.
    response = confirm(client, second, sid)
    assert_problem(response, 403, "review_not_allowed")
    assert reviews(client, owner)[sid] == "pending"


def test_deny_signs_out_the_thiefs_second_session_from_the_same_device(
    auth: Auth, client: FlaskClient
):
    owner, first, second = thief_signs_in_twice(auth)
    assert deny(client, owner, first["session_id"]).status_code == 200
    # The thief's second session, from the device the owner just said was not
    # theirs, still works.
    assert_problem(client.get(SESSIONS, headers=Auth.headers(second)), 401, "session_revoked")


@pytest.mark.parametrize("agent", [None, "", "Mozilla/5.0", "<x>"])
def test_a_sign_in_without_a_recognisable_device_is_reviewed(
    auth: Auth, client: FlaskClient, agent: str | None
):
    owner = auth.login("alice", user_agent=CHROME)
    phone = auth.login("alice", user_agent=IPHONE)  # pending
    thief = auth.login("alice", user_agent=agent)
    # Not flagged, so the owner is never asked, and it may answer for others.
    assert reviews(client, owner)[thief["session_id"]] == "pending"
    assert_problem(confirm(client, thief, phone["session_id"]), 403, "review_not_allowed")


# -- a thief's pending session changing its own state ---------------------------------


def test_refresh_and_rename_leave_a_pending_session_pending_and_refused(
    auth: Auth, client: FlaskClient
):
    alice = Account(auth)
    phone = alice.phone["session_id"]
    refreshed = client.post(
        "/api/v1/auth/refresh",
        headers={**Auth.headers(alice.phone, "refresh_token"), "User-Agent": IPHONE},
    )
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    tokens = refreshed.get_json()
    headers = {**Auth.headers(tokens), "User-Agent": IPHONE}
    renamed = client.patch(f"{SESSIONS}/{phone}", json={"name": "Alice's laptop"}, headers=headers)
    assert renamed.status_code == 200
    assert renamed.get_json()["review"] == "pending"
    for sid in (phone, alice.linux["session_id"], alice.trusted["session_id"]):
        for path in ("confirm", "deny"):
            response = client.post(f"{SESSIONS}/{sid}/{path}", headers=headers)
            assert_problem(response, 403, "review_not_allowed")
    assert reviews(client, alice.trusted) == {
        alice.trusted["session_id"]: None,
        phone: "pending",
        alice.linux["session_id"]: "pending",
        alice.laptop["session_id"]: None,
    }


def test_a_stolen_trusted_token_used_elsewhere_is_pending_and_may_not_answer(
    auth: Auth, client: FlaskClient
):
    alice = Account(auth)
    stolen = {**Auth.headers(alice.laptop), "User-Agent": ANDROID}
    # Its first request from the thief's browser records the anomaly first.
    assert client.get(SESSIONS, headers=stolen).status_code == 200
    for sid in (alice.laptop["session_id"], alice.phone["session_id"]):
        for path in ("confirm", "deny"):
            response = client.post(f"{SESSIONS}/{sid}/{path}", headers=stolen)
            assert_problem(response, 403, "review_not_allowed")
    assert reviews(client, alice.trusted)[alice.laptop["session_id"]] == "pending"


# -- foreign and odd ids ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["confirm", "deny"])
def test_odd_ids_are_404_problems(auth: Auth, client: FlaskClient, path: str):
    alice = Account(auth)
    sid = alice.phone["session_id"]
    odd = [
        sid + "x",
        sid[:-1],
        sid.upper() if sid.upper() != sid else sid.lower(),
        f"{sid}%00",
        "%7Balice%7D",
        "..",
        "*",
        "%2A",
        "é" * 43,
        "%3Cscript%3E",
        "x" * 5000,
        f"{sid}%20",
    ]
    before = sessions_of(client, alice.trusted)
    for value in odd:
        response = client.post(f"{SESSIONS}/{value}/{path}", headers=Auth.headers(alice.trusted))
        assert_problem(response, 404, "session_not_found")
    assert sessions_of(client, alice.trusted) == before


# -- deny at the cap ------------------------------------------------------------------------


def test_deny_of_a_hundred_sessions_is_one_script_and_spares_the_confirmed(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
):
    app = make_app(SESSIONSVC_MAX_SESSIONS_PER_USER=100)
    auth, client = Auth(app), app.test_client()
    trusted = auth.login("alice", user_agent=CHROME)
    first = auth.login("alice", user_agent=IPHONE)
    confirmed = auth.login("alice", user_agent=ANDROID)
    assert confirm(client, trusted, confirmed["session_id"]).status_code == 200
    # 97 more, each flagged: an anomaly (the token used from another browser).
    pending = {first["session_id"]}
    for _ in range(97):
        tokens = auth.login("alice", user_agent=CHROME)
        moved = {**Auth.headers(tokens), "User-Agent": IPHONE}
        assert client.get(f"{SESSIONS}/{tokens['session_id']}", headers=moved).status_code == 200
        pending.add(tokens["session_id"])
    assert len(reviews(client, trusted)) == 100
    with app.app_context():
        store = current_state().store
    ran: list[str] = []
    real = store._run

    def counted(name: str, keys: Any, args: Any) -> Any:
        ran.append(name)
        return real(name, keys, args)

    monkeypatch.setattr(store, "_run", counted)
    response = deny(client, trusted, first["session_id"])
    monkeypatch.undo()
    assert response.get_json() == {"revoked": 98}
    assert ran == ["deny"]
    assert reviews(client, trusted) == {
        trusted["session_id"]: None,
        confirmed["session_id"]: "confirmed",
    }
    assert revocations(events_of(client, trusted)) == dict.fromkeys(pending, "denied")


# -- the OpenAPI document ----------------------------------------------------------------------


def test_the_openapi_document_describes_both_answers_and_their_errors(app: Flask):
    spec = app.test_client().get("/apispec.json").get_json()
    for action in ("confirm", "deny"):
        operation = spec["paths"][f"/api/v1/sessions/{{session_id}}/{action}"]["post"]
        codes = set(operation["responses"])
        assert {"200", "401", "403", "404"} <= codes, (action, codes)
    confirm_codes = spec["paths"]["/api/v1/sessions/{session_id}/confirm"]["post"]["responses"]
    assert "409" in confirm_codes


# -- a confirm racing an anomaly --------------------------------------------------------------


def test_an_anomaly_recorded_with_a_confirm_is_never_lost(make_app: AppFactory):
    """A confirm from the owner's laptop and the session's first anomaly at
    once: either the anomaly came first (the confirm covers it) or after
    (pending again); never confirmed with an anomaly event after it."""
    from tests.test_reviews import _race

    apps = [make_app(), make_app()]
    auth, client = Auth(apps[0]), apps[0].test_client()

    def use_elsewhere(c: FlaskClient, tokens: dict[str, Any], sid: str) -> Any:
        return c.get(f"{SESSIONS}/{sid}", headers={**Auth.headers(tokens), "User-Agent": ANDROID})

    outcomes: set[bool] = set()
    for n in range(15):
        user = f"alice{n}"
        trusted = auth.login(user, user_agent=CHROME)
        phone = auth.login(user, user_agent=IPHONE)
        sid = phone["session_id"]
        answered, used = _race(apps, (confirm, trusted, sid), (use_elsewhere, phone, sid))
        assert answered.status_code == 200 and used.status_code == 200
        session = sessions_of(client, trusted)[sid]
        assert "anomaly" in session["risk"]
        # Confirmed only if the confirm saw the anomaly: one recorded after it asks again.
        seen = "anomaly" in answered.get_json()["risk"]
        assert session["review"] == ("confirmed" if seen else "pending")
        outcomes.add(seen)
        assert len(of_type(events_of(client, trusted), "session.confirmed")) == 1


# -- the account page: hostile text renders as text ----------------------------------------

HOSTILE = '<img src=x onerror=alert(1)></script><b>"x"\'&amp;'
HOSTILE_AGENT = f"{IPHONE} {HOSTILE}"


def test_hostile_agents_and_names_render_as_text(browser: Any, service: str) -> None:
    """A thief's sign-in whose user agent and session name are HTML: the
    laptop's prompt and cards show them as text, no element is injected,
    no script runs, nothing on the console."""
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sign_in(page, service)  # the laptop: the first sign-in, no flags
        hostile = requests.post(
            f"{service}/api/v1/auth/login",
            json={"username": "alice", "password": PASSWORD},
            headers={"User-Agent": HOSTILE_AGENT},
            timeout=10,
        ).json()
        renamed = requests.patch(
            f"{service}/api/v1/sessions/{hostile['session_id']}",
            json={"name": HOSTILE},
            headers={
                "Authorization": f"Bearer {hostile['access_token']}",
                "User-Agent": HOSTILE_AGENT,
            },
            timeout=10,
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["review"] == "pending"
        reload(page)
        found = prompts(page)
        assert set(found) == {hostile["session_id"]}
        question = found[hostile["session_id"]]["question"]
        assert question.startswith("New sign-in: ") and question.endswith(" — was this you?")
        labels = {c["id"]: c["label"] for c in cards(page)}
        assert labels[hostile["session_id"]] == HOSTILE
        assert page.locator("img").count() == 0
        assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
        assert dialogs == []
        assert problems == []
    finally:
        context.close()
