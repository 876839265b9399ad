"""Races: revocation under load across app instances, concurrent refreshes, concurrent
logins, sign-ins racing a change of their user, admins removing each other.

Each runs on fakeredis and on a real Redis server (the ``backend`` fixture).
Two app instances on one store stand for two gunicorn workers or two hosts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import accounts, current_manager, passwords
from sessionsvc.errors import LastAdmin
from sessionsvc.models import User
from sessionsvc.state import state_of
from tests.clients import Auth, assert_problem

SESSIONS = "/api/v1/sessions"
REFRESH = "/api/v1/auth/refresh"
THREADS = 20


@dataclass(frozen=True)
class Outcome:
    started: float
    status: int
    code: str | None


def hammer(
    apps: list[Flask], headers: dict[str, str], stop: threading.Event, results: list[Outcome]
) -> None:
    """One client thread: requests with the same token until told to stop."""
    clients = [app.test_client() for app in apps]
    turn = 0
    while not stop.is_set():
        client = clients[turn % len(clients)]
        turn += 1
        started = time.monotonic()
        response = client.get(SESSIONS, headers=headers)
        body = response.get_json(silent=True) or {}
        results.append(Outcome(started, response.status_code, body.get("code")))


def test_after_a_revoke_returns_no_request_with_its_token_succeeds(make_app: Any) -> None:
    first, second = make_app(), make_app()  # two instances, one store
    auth = Auth(first)
    victim = auth.login("alice")
    revoker = auth.login("alice")
    headers = auth.headers(victim)
    stop = threading.Event()
    results: list[Outcome] = []
    threads = [
        threading.Thread(target=hammer, args=([first, second], headers, stop, results))
        for _ in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        while sum(o.status == 200 for o in results) < 2 * THREADS:
            time.sleep(0.005)  # every thread is in full swing
        response = second.test_client().delete(
            f"{SESSIONS}/{victim['session_id']}", headers=auth.headers(revoker)
        )
        revoked_at = time.monotonic()
        assert response.status_code == 204
        deadline = revoked_at + 0.5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    after = [o for o in results if o.started >= revoked_at]
    before = [o for o in results if o.started < revoked_at]
    print(f"revoke under load: {len(before)} requests before, {len(after)} after, "
          f"{sum(o.status == 200 for o in after)} of them let through")  # fmt: skip
    assert len(after) >= THREADS  # the threads kept going after the revoke
    assert [o for o in after if o.status != 401] == []
    assert {o.code for o in after} == {"session_revoked"}
    # Requests in flight during the revoke may have been answered either way,
    # but nothing else: no 5xx, no other error.
    assert {o.status for o in before} <= {200, 401}
    assert sum(o.status == 200 for o in before) >= 2 * THREADS


def test_two_refreshes_with_one_token_one_wins_then_the_session_is_revoked(
    make_app: Any,
) -> None:
    first, second = make_app(), make_app()
    auth = Auth(first)
    for round_ in range(10):
        tokens = auth.login("alice")
        headers = auth.headers(tokens, "refresh_token")
        barrier = threading.Barrier(2)

        def refresh(app: Flask, headers: dict[str, str] = headers, barrier: Any = barrier) -> Any:
            client = app.test_client()
            barrier.wait()
            return client.post(REFRESH, headers=headers)

        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(refresh, [first, second]))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 401], round_
        [winner] = [r for r in answers if r.status_code == 200]
        [loser] = [r for r in answers if r.status_code == 401]
        assert_problem(loser, 401, "refresh_token_reused")
        # Reuse revokes the whole session: the winner's new tokens die too.
        new = winner.get_json()
        assert_problem(
            first.test_client().get(SESSIONS, headers=auth.headers(new)), 401, ("session_revoked")
        )
        with first.app_context():
            events = current_manager().events_for("alice", limit=100)
        revoked = [e for e in events if e.session_id == tokens["session_id"]]
        # Recorded once, as reuse: the losing refresh is the one that revoked it.
        assert [(e.type, e.detail) for e in revoked if e.type == "session.revoked"] == [
            ("session.revoked", {"reason": "refresh_reuse"})
        ]


def test_concurrent_logins_of_one_user_across_instances_respect_the_cap(make_app: Any) -> None:
    # A slot per sign-in: this is about the cap on sessions, not the one on
    # password hashes, which answers busy past the CPUs (tests/test_passwords.py).
    config = {"SESSIONSVC_MAX_SESSIONS_PER_USER": 3, "SESSIONSVC_PASSWORD_HASHES": THREADS}
    apps = [make_app(**config) for _ in range(2)]
    Auth(apps[0]).create_user("alice", "pw")
    barrier = threading.Barrier(THREADS)

    def login(n: int) -> str:
        client = apps[n % 2].test_client()
        barrier.wait()
        response = client.post("/api/v1/auth/login", json={"username": "alice", "password": "pw"})
        assert response.status_code == 200
        return str(response.get_json()["session_id"])

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        opened = list(pool.map(login, range(THREADS)))
    with apps[1].app_context():
        live = {s.id for s in current_manager().list_for("alice")}
        events = current_manager().events_for("alice", limit=100)
    assert len(set(opened)) == THREADS
    assert len(live) == 3
    evicted = {e.session_id for e in events if e.detail.get("reason") == "evicted"}
    assert len(evicted) == THREADS - 3
    assert evicted | live == set(opened)


# -- a sign-in racing a change of its user ------------------------------------------

LOGIN = "/api/v1/auth/login"
USERS = "/api/v1/admin/users"
PASSWORD = "/api/v1/auth/password"
#: A password the policy takes; checked with the service's own argon2id
#: parameters (~30 ms), the window a change can land in.
OLD_PASSWORD = "old password of the account"
NEW_PASSWORD = "new password of the account"
#: The changes that revoke a user's sessions, as an admin (or the user) makes them.
CHANGES = ("password", "demoted", "disabled", "deleted")
#: What a sign-in with the old password gets once the change is in.
AFTER_CHANGE = {
    "password": (401, "invalid_credentials"),
    "demoted": (200, None),
    "disabled": (403, "user_disabled"),
    "deleted": (401, "invalid_credentials"),
}


def add_admin(app: Flask, name: str, password: str = OLD_PASSWORD) -> None:
    """An admin of the user store whose password is hashed as the service hashes."""
    with app.app_context():
        user = User(name, passwords.hash_password(password), roles=("admin",), account=name)
        assert current_manager().store.create_user(user)


def sign_in(client: FlaskClient, name: str) -> Any:
    return client.post(LOGIN, json={"username": name, "password": OLD_PASSWORD})


def make_change(app: Flask, change: str, name: str, admin: dict[str, str], own: Any) -> None:
    """``change`` to user ``name``, through the API, as an admin or (a new
    password) as the user with its session ``own``."""
    client = app.test_client()
    if change == "password":
        body = {"current_password": OLD_PASSWORD, "new_password": NEW_PASSWORD}
        response = client.post(PASSWORD, json=body, headers=Auth.headers(own))
    elif change == "deleted":
        response = client.delete(f"{USERS}/{name}", headers=admin)
    else:
        body = {"roles": []} if change == "demoted" else {"disabled": True}
        response = client.patch(f"{USERS}/{name}", json=body, headers=admin)
    assert response.status_code in (200, 204), response.get_json()


def survivors(app: Flask, name: str, roles: dict[str, list[str]], keep: str | None) -> list[str]:
    """The sessions of ``name`` opened with the state before the change that
    still live: with the admin role, or any at all after a new password
    (but the changer's own, ``keep``), a disable or a delete."""
    with app.app_context():
        live = [s.id for s in current_manager().list_for(name)]
    return [sid for sid in live if sid != keep and "admin" in roles.get(sid, ["admin"])]


def roles_of(body: dict[str, Any]) -> list[str]:
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    return list(claims.get("roles", []))


def root_and_alice(make_app: Any) -> tuple[Flask, FlaskClient, dict[str, str], Any]:
    """An app with two admins, root and alice: a client, root's headers, alice's tokens."""
    app = make_app()
    client = app.test_client()
    add_admin(app, "root")
    add_admin(app, "alice")
    admin = Auth.headers(sign_in(client, "root").get_json())
    return app, client, admin, sign_in(client, "alice").get_json()


#: The password hashes a sign-in makes when each change lands in its window:
#: the first check, and a second only against a new password's hash.
HASHES_OF_A_RACED_SIGN_IN = {"password": 2, "demoted": 1, "disabled": 1, "deleted": 1}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_between_a_sign_ins_check_and_its_session_leaves_no_session(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    app, client, admin, own = root_and_alice(make_app)
    verify = passwords.verify
    landed: list[bool] = []
    slots = state_of(app).hash_slots
    held = slots.held
    hashes: list[int] = []

    @contextlib.contextmanager
    def counted(**kwargs: Any) -> Iterator[None]:
        if threading.get_ident() == signer:
            hashes.append(1)
        with held(**kwargs):
            yield

    def check_then_change(stored: str, password: str) -> tuple[bool, str | None]:
        # The change lands after the sign-in read and checked the record,
        # before its session opens: exactly the window of the race.
        checked = verify(stored, password)
        if not landed:
            landed.append(True)
            worker = threading.Thread(target=make_change, args=(app, change, "alice", admin, own))
            worker.start()
            worker.join()
        return checked

    monkeypatch.setattr(passwords, "verify", check_then_change)
    monkeypatch.setattr(slots, "held", counted)
    signer = threading.get_ident()
    response = sign_in(client, "alice")
    assert landed
    # Checked again without a second hash of the password it matched: no
    # second ~30 ms, no second wait for a slot (it could not be told busy).
    assert len(hashes) == HASHES_OF_A_RACED_SIGN_IN[change]
    status, code = AFTER_CHANGE[change]
    if code is not None:
        assert_problem(response, status, code)
    else:
        # Signed in again with the record as it is now: the new roles.
        assert response.status_code == 200
        assert roles_of(response.get_json()) == []
        assert client.get(SESSIONS, headers=Auth.headers(response.get_json())).status_code == 200
    keep = own["session_id"] if change == "password" else None
    roles = {own["session_id"]: ["admin"]}
    if response.status_code == 200:
        roles[response.get_json()["session_id"]] = roles_of(response.get_json())
    assert survivors(app, "alice", roles, keep) == []


#: The password hashes a sign-in makes when each change lands in its window:
#: the first check, and a second only against a new password's hash.
HASHES_OF_A_RACED_SIGN_IN = {"password": 2, "demoted": 1, "disabled": 1, "deleted": 1}


ROUNDS = 3
SIGNERS = 3


@pytest.mark.parametrize("change", CHANGES)
def test_sign_ins_while_a_change_runs_leave_no_session_of_the_old_state(
    make_app: Any, change: str
) -> None:
    app = make_app()
    client = app.test_client()
    add_admin(app, "root")
    admin = Auth.headers(sign_in(client, "root").get_json())
    for round_ in range(ROUNDS):
        name = f"alice{round_}"
        add_admin(app, name)
        own = sign_in(client, name).get_json()
        stop = threading.Event()
        answers: list[tuple[float, int, dict[str, Any]]] = []

        def signer(
            name: str = name, stop: threading.Event = stop, answers: list[Any] = answers
        ) -> None:
            mine = app.test_client()
            while not stop.is_set():
                started = time.monotonic()
                response = sign_in(mine, name)
                answers.append((started, response.status_code, response.get_json()))

        threads = [threading.Thread(target=signer) for _ in range(SIGNERS)]
        for thread in threads:
            thread.start()
        try:
            while len(answers) < SIGNERS:
                time.sleep(0.005)  # every signer is in full swing
            make_change(app, change, name, admin, own)
            changed_at = time.monotonic()
            while sum(started > changed_at for started, _, _ in answers) < 2 * SIGNERS:
                time.sleep(0.005)  # and signs in after the change too
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert {status for _, status, _ in answers} <= {200, 401, 403}, round_
        after = {
            (status, body.get("code")) for started, status, body in answers if started > changed_at
        }
        assert after == {AFTER_CHANGE[change]}, round_
        roles = {own["session_id"]: ["admin"]}
        for _, status, body in answers:
            if status == 200:
                roles[body["session_id"]] = roles_of(body)
        keep = own["session_id"] if change == "password" else None
        assert survivors(app, name, roles, keep) == [], round_
        # Nor a token of one: every pair signed in with the old state fails now.
        for _, status, body in answers:
            if status == 200 and "admin" in roles_of(body):
                answer = client.get(SESSIONS, headers=Auth.headers(body))
                assert_problem(answer, 401, "session_revoked")


def test_a_demotion_right_after_a_refresh_leaves_its_new_tokens_dead(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refresh reads the roles in the same script as the rotation; a
    # change after it revokes the session, with the tokens it hands out.
    app, client, admin, tokens = root_and_alice(make_app)
    with app.app_context():
        store = current_manager().store
    check = store.check_refresh

    def check_then_demote(*args: Any, **kwargs: Any) -> Any:
        result = check(*args, **kwargs)
        make_change(app, "demoted", "alice", admin, None)
        return result

    monkeypatch.setattr(store, "check_refresh", check_then_demote)
    response = client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))
    monkeypatch.undo()
    assert response.status_code == 200
    new = response.get_json()
    assert roles_of(new) == ["admin"]  # read before the demotion...
    assert_problem(client.get(SESSIONS, headers=Auth.headers(new)), 401, "session_revoked")
    refresh = client.post(REFRESH, headers=Auth.headers(new, "refresh_token"))
    assert_problem(refresh, 401, "session_revoked")  # ...and dead with its session


# -- two admins removing each other at once ---------------------------------------------

#: How an admin takes another out of the admins.
REMOVALS = {
    "disable": ("PATCH", {"disabled": True}),
    "demote": ("PATCH", {"roles": []}),
    "delete": ("DELETE", None),
}


@pytest.mark.parametrize("removal", list(REMOVALS))
def test_two_admins_removing_each_other_at_once_leave_exactly_one(
    make_app: Any, removal: str
) -> None:
    first, second = make_app(), make_app()
    auth = Auth(first)
    method, body = REMOVALS[removal]
    survivor = "admin0"
    auth.create_user(survivor, "pw", admin=True)
    outcomes: set[tuple[int, str | None]] = set()
    for round_ in range(1, 9):
        rival = f"admin{round_}"
        auth.create_user(rival, "pw", admin=True)
        pair = [(survivor, rival), (rival, survivor)]
        tokens = {name: auth.login(name, "pw") for name in (survivor, rival)}
        barrier = threading.Barrier(2)

        def take_out(n: int, pair: Any = pair, tokens: Any = tokens, barrier: Any = barrier) -> Any:
            actor, target = pair[n]
            client = (first, second)[n].test_client()
            barrier.wait()
            return client.open(
                f"{USERS}/{target}", method=method, json=body, headers=Auth.headers(tokens[actor])
            )

        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(take_out, range(2)))
        with first.app_context():
            left = [u.id for u in accounts.all_users() if accounts.is_admin(u)]
        assert len(left) == 1, (round_, [a.get_json() for a in answers])
        won = [a for a in answers if a.status_code in (200, 204)]
        assert len(won) == 1, round_
        [lost] = [a for a in answers if a not in won]
        # Refused, or too late: the winner's change ended the loser's session.
        code = (lost.get_json() or {}).get("code")
        assert (lost.status_code, code) in {(409, "last_admin"), (401, "session_revoked")}
        outcomes.add((lost.status_code, code))
        survivor = left[0]
    print(f"{removal}: the losers got {sorted(outcomes)}")


def test_a_demotion_landing_inside_a_promotion_of_the_same_user_never_counts_a_non_admin(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demotion comes between the promotion's change and its registry
    # update. Without the lock of admin changes it would find bob not yet
    # registered, demote him, and the promotion would then register a
    # non-admin: root could remove itself, the real last admin.
    app = make_app()
    Auth(app).create_user("root", "pw", admin=True)
    Auth(app).create_user("bob", "pw")
    with app.test_request_context():
        store = current_manager().store
        with pytest.raises(LastAdmin):
            accounts.update("root", disabled=True)  # (builds the registry)
    join = store.admins_join
    demotion: list[threading.Thread] = []

    def demote() -> None:
        with app.test_request_context():
            accounts.update("bob", roles=())

    def join_after_a_demotion(user_ids: Any, **kwargs: Any) -> bool:
        if list(user_ids) == ["bob"] and not demotion:
            demotion.append(threading.Thread(target=demote))
            demotion[0].start()
            demotion[0].join(0.5)  # done at once, unless it waits for the lock
        return join(user_ids, **kwargs)

    monkeypatch.setattr(store, "admins_join", join_after_a_demotion)
    with app.test_request_context():
        accounts.update("bob", roles=("admin",))
    demotion[0].join(10)
    with app.test_request_context():
        assert not accounts.is_admin(accounts.get("bob"))
        assert set(store.client.smembers(store.keys.admins())) == {"", "root"}
        with pytest.raises(LastAdmin):
            accounts.update("root", disabled=True)
