"""sessionsvc.passwords: the policy, argon2id hashes, older hashes upgraded at
login, the bound on hashes at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from sessionsvc import ConfigError, current_manager, passwords
from sessionsvc.errors import Busy, WeakPassword
from sessionsvc.models import User
from sessionsvc.settings import Settings, available_cpus
from sessionsvc.state import state_of
from tests.backends import AppFactory
from tests.clients import CHROME, Auth, assert_problem, fast_hash

OWASP = "$argon2id$v=19$m=19456,t=2,p=1$"
LOGIN, PASSWORD = "/api/v1/auth/login", "/api/v1/auth/password"


@pytest.mark.parametrize(
    ("username", "password", "rule"),
    [
        ("alice", "", "at least 8"),
        ("alice", "1234567", "at least 8"),
        ("alice", "x" * 1025, "at most 1024"),
        ("alice-smith", "alice-smith", "not be the username"),
    ],
)
def test_the_policy_says_which_rule_a_password_breaks(
    username: str, password: str, rule: str
) -> None:
    with pytest.raises(WeakPassword, match=rule) as raised:
        passwords.check_policy(username, password)
    assert (raised.value.status, raised.value.code) == (400, "weak_password")


@pytest.mark.parametrize(
    "password",
    ["73920461", " spaces at both ends ", "x" * 1024, "Alice-Smith", "correct horse"],
)
def test_the_policy_has_no_composition_rules(password: str) -> None:
    passwords.check_policy("alice-smith", password)  # no exception: allowed as it is


def test_new_hashes_are_argon2id_at_owasp_parameters_and_salted() -> None:
    first, second = passwords.hash_password("a password"), passwords.hash_password("a password")
    assert first.startswith(OWASP) and second.startswith(OWASP)
    assert first != second
    assert passwords.verify(first, "a password") == (True, None)
    assert passwords.verify(first, "a Password") == (False, None)


@pytest.mark.parametrize("method", ["scrypt", "pbkdf2:sha256:600000"])
def test_an_older_hash_verifies_and_comes_back_upgraded(method: str) -> None:
    stored = generate_password_hash("a password", method=method)
    matches, upgraded = passwords.verify(stored, "a password")
    assert matches
    assert upgraded is not None and upgraded.startswith(OWASP)
    assert passwords.verify(upgraded, "a password") == (True, None)
    assert passwords.verify(stored, "not it") == (False, None)


@pytest.mark.parametrize("stored", ["", "garbage", "$argon2id$broken", "pbkdf2:sha256:1$x$y"])
def test_a_stored_hash_that_is_not_one_matches_nothing(stored: str) -> None:
    assert passwords.verify(stored, "a password") == (False, None)


def stored_hash(app: Flask, user_id: str) -> str:
    with app.app_context():
        user = current_manager().store.get_user(user_id)
    assert user is not None
    return user.password_hash


def test_a_login_upgrades_an_older_hash_once(app: Flask, client: FlaskClient) -> None:
    scrypt = generate_password_hash("the old password")  # werkzeug's default, as before
    with app.app_context():
        current_manager().store.create_user(User("alice", scrypt))
    body = {"username": "alice", "password": "the old password"}
    headers = {"User-Agent": CHROME}
    wrong = client.post("/api/v1/auth/login", json={**body, "password": "nope"}, headers=headers)
    assert wrong.status_code == 401
    assert stored_hash(app, "alice") == scrypt  # a failed login changes nothing
    assert client.post("/api/v1/auth/login", json=body, headers=headers).status_code == 200
    upgraded = stored_hash(app, "alice")
    assert upgraded.startswith(OWASP)
    assert client.post("/api/v1/auth/login", json=body, headers=headers).status_code == 200
    assert stored_hash(app, "alice") == upgraded  # argon2id stays as it is


def test_a_password_change_goes_ahead_when_a_sign_in_upgraded_the_hash_meanwhile(
    app: Flask, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    scrypt = generate_password_hash("the old password")  # werkzeug's default, as before
    with app.app_context():
        current_manager().store.create_user(User("alice", scrypt))
    tokens = auth.login("alice", "the old password")
    # Upgraded by that sign-in; set back, as if it had been on another device
    # and were still to come.
    with app.app_context():
        current_manager().store.client.hset(current_manager().store.keys.user("alice"), "p", scrypt)
    hash_password = passwords.hash_password
    changer = threading.get_ident()

    def sign_in_elsewhere_first(password: str) -> str:
        if threading.get_ident() == changer and stored_hash(app, "alice") == scrypt:
            # Between the change's check of the current password and its
            # store: a sign-in of alice's upgrades the hash.
            with ThreadPoolExecutor(1) as pool:
                assert (
                    pool.submit(login, app, "alice", "the old password").result().status_code == 200
                )
            assert stored_hash(app, "alice").startswith(OWASP)
        return hash_password(password)

    monkeypatch.setattr(passwords, "hash_password", sign_in_elsewhere_first)
    body = {"current_password": "the old password", "new_password": "a new passphrase of alice"}
    changed = app.test_client().post(PASSWORD, json=body, headers=Auth.headers(tokens))
    assert changed.status_code == 200, changed.get_json()
    monkeypatch.undo()
    assert login(app, "alice", "a new passphrase of alice").status_code == 200
    assert login(app, "alice", "the old password").status_code == 401


def test_an_upgrade_never_overwrites_a_change_made_meanwhile(app: Flask) -> None:
    old, changed = fast_hash("old password"), fast_hash("new password")
    with app.app_context():
        store = current_manager().store
        store.create_user(User("alice", old))
        assert store.set_password_hash("alice", changed, expected=old)
        # An upgrade computed from the old hash comes too late: nothing changes.
        assert not store.set_password_hash("alice", fast_hash("x"), expected=old)
        assert not store.set_password_hash("nobody", changed, expected=old)
        assert store.get_user("nobody") is None
        user = store.get_user("alice")
    assert user is not None and user.password_hash == changed


def test_an_unknown_user_costs_one_argon2id_check() -> None:
    passwords.waste_time("anything")
    assert passwords._unknown_user_hash().startswith(OWASP)


# -- common passwords --------------------------------------------------------------------------

COMMON_RULE = "one of the 30,000 most common passwords"
CURRENT_RULE = "must not be the current password"


@pytest.mark.parametrize(
    "password", ["12345678", "qwerty123", "password1", "iloveyou1", "Password1", "QWERTY123"]
)
def test_a_common_password_is_refused_naming_the_rule(password: str) -> None:
    with pytest.raises(WeakPassword, match=COMMON_RULE):
        passwords.check_policy("alice", password)


@pytest.mark.parametrize(
    "password",
    [
        " password ",  # spaces around it (the password itself is not trimmed)
        "\tqwerty123\n",
        "".join(chr(ord(c) + 0xFEE0) for c in "password"),  # full width: NFKC undoes it
        "".join(chr(ord(c) + 0xFEE0) for c in "PASSWORD1"),
        "football7",  # a common password and a digit or a few (a year)
        "sunshine12",
        "superman007",
        "password2024",
        "Baseball1987 ",
        "shadow77",  # a common password shorter than 8, with digits added
        "master2000",
        "love2024",
        "12340917",  # 1234 and digits
    ],
)
def test_a_common_password_in_another_form_is_refused(password: str) -> None:
    # None of these is in the list as it is.
    assert password not in passwords.common_passwords()
    with pytest.raises(WeakPassword, match=COMMON_RULE):
        passwords.check_policy("alice", password)


@pytest.mark.parametrize(
    "password", ["football-7", "sunshine123456", "7football", "73920461", "superman 7"]
)
def test_only_digits_added_at_the_end_of_a_common_password_are_looked_through(
    password: str,
) -> None:
    passwords.check_policy("alice", password)  # no exception: not a common one


def test_the_blocklist_is_the_30000_most_common() -> None:
    common = passwords.common_passwords()
    # Every entry of zxcvbn's ranked 30,000, the short ones too (a short one
    # with digits added is refused); entries are lowercase, compared as such.
    assert len(common) == passwords.COMMON_PASSWORDS_RANKED == 30_000
    assert all(entry == entry.lower() for entry in common)
    assert {"12345678", "qwerty123", "password1", "iloveyou1", "baseball"} <= common
    assert {"dragon", "letmein", "tiger", "love"} <= common
    assert "correct horse battery staple" not in common


def test_a_strong_passphrase_passes_and_the_current_password_is_refused() -> None:
    passwords.check_policy("alice", "correct horse battery staple")
    passwords.check_policy("alice", "correct horse battery staple", current="old secret words")
    with pytest.raises(WeakPassword, match=CURRENT_RULE):
        passwords.check_policy("alice", "old secret words", current="old secret words")


@pytest.mark.parametrize(
    ("new", "rule"),
    [("qwerty123", COMMON_RULE), (" Football7 ", COMMON_RULE), ("alice-password", CURRENT_RULE)],
)
def test_a_password_change_refuses_a_common_or_the_current_password(
    client: FlaskClient, auth: Auth, new: str, rule: str
) -> None:
    tokens = auth.login("alice", "alice-password")
    body = {"current_password": "alice-password", "new_password": new}
    problem = assert_problem(
        client.post(PASSWORD, json=body, headers=Auth.headers(tokens)), 400, "weak_password"
    )
    assert rule in problem["detail"]
    ok = client.post(LOGIN, json={"username": "alice", "password": "alice-password"})
    assert ok.status_code == 200  # nothing changed
    body["new_password"] = "correct horse battery staple"
    assert client.post(PASSWORD, json=body, headers=Auth.headers(tokens)).status_code == 200


def cli(app: Flask, *args: str, password: str) -> Any:
    return app.test_cli_runner().invoke(
        args=["sessions", *args, "--password-stdin"], input=password + "\n"
    )


@pytest.mark.parametrize(
    "password", ["12345678", "qwerty123", "password1", "iloveyou1", " sunshine12 "]
)
def test_the_cli_refuses_a_common_password(app: Flask, auth: Auth, password: str) -> None:
    created = cli(app, "create-user", "bob", password=password)
    assert created.exit_code == 1
    assert COMMON_RULE in created.output
    auth.create_user("alice", "alice-password")
    changed = cli(app, "set-password", "alice", password=password)
    assert changed.exit_code == 1
    assert COMMON_RULE in changed.output
    with app.app_context():
        store = current_manager().store
        assert store.get_user("bob") is None
        alice = store.get_user("alice")
    assert alice is not None and passwords.verify(alice.password_hash, "alice-password")[0]


def test_the_cli_refuses_the_current_password(app: Flask) -> None:
    assert cli(app, "create-user", "alice", password="alice's own words").exit_code == 0
    again = cli(app, "set-password", "alice", password="alice's own words")
    assert again.exit_code == 1
    assert again.output.strip() == f"Error: {passwords.SAME_AS_CURRENT}"
    assert cli(app, "set-password", "alice", password="alice's new words").exit_code == 0


# -- hashes at once ----------------------------------------------------------------------------


def test_hash_slots_refuse_one_more_than_their_size() -> None:
    slots = passwords.HashSlots(2, wait=0.01)
    with slots.held(), slots.held(), pytest.raises(Busy) as raised, slots.held():
        pass
    assert (raised.value.status, raised.value.code) == (503, "busy")
    assert raised.value.headers == {"Retry-After": "1"}
    with slots.held(), slots.held():  # both given back
        pass


def waiting(slots: passwords.HashSlots, *, known: int = 0, others: int = 0) -> None:
    """Until that many hashes wait for a slot."""
    for _ in range(1000):
        with slots._lock:
            if (slots._known_waiting, slots._others_waiting) == (known, others):
                return
        threading.Event().wait(0.01)
    raise AssertionError("the hashes never came to wait")


def test_a_known_sign_in_takes_the_next_slot_before_the_others() -> None:
    slots = passwords.HashSlots(1, wait=10, known_wait=10)
    order: list[str] = []

    def hash_for(who: str) -> None:
        with slots.held(known=lambda: who == "known"):
            order.append(who)

    with ThreadPoolExecutor(2) as pool:
        with slots.held():
            other = pool.submit(hash_for, "other")
            waiting(slots, others=1)
            known = pool.submit(hash_for, "known")
            waiting(slots, known=1, others=1)
        known.result(10)
        other.result(10)
    assert order == ["known", "other"]


def test_at_most_size_others_wait_and_the_next_is_refused_at_once() -> None:
    slots = passwords.HashSlots(1, wait=10)
    with ThreadPoolExecutor(1) as pool:
        with slots.held():
            first = pool.submit(lambda: slots.held().__enter__())
            waiting(slots, others=1)
            with pytest.raises(Busy), slots.held():
                pass
        first.result(10)


def test_the_bound_defaults_to_the_cpus_and_is_validated() -> None:
    assert Settings.from_config({}).password_hashes == available_cpus() >= 1
    assert Settings.from_config({"SESSIONSVC_PASSWORD_HASHES": 3}).password_hashes == 3
    with pytest.raises(ConfigError, match="SESSIONSVC_PASSWORD_HASHES"):
        Settings.from_config({"SESSIONSVC_PASSWORD_HASHES": 0})


def login(app: Flask, username: str, password: str) -> Any:
    body = {"username": username, "password": password}
    return app.test_client().post(LOGIN, json=body, headers={"User-Agent": CHROME})


@contextmanager
def two_unknown_names_hashing(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Two sign-ins of unknown names, each holding a hash slot (of two) until
    the block ends; yields the pool they run on (with a spare thread)."""
    inside = threading.Semaphore(0)
    release = threading.Event()
    waste_time = passwords.waste_time

    def slow_waste_time(password: str) -> None:
        inside.release()
        assert release.wait(10)
        waste_time(password)

    monkeypatch.setattr(passwords, "waste_time", slow_waste_time)
    with ThreadPoolExecutor(3) as pool:
        flood = [pool.submit(login, app, f"nobody-{i}", "a guess") for i in range(2)]
        for _ in flood:
            assert inside.acquire(timeout=10)
        try:
            yield pool
        finally:
            release.set()
        assert [future.result().status_code for future in flood] == [401, 401]


def test_past_the_bound_a_sign_in_is_busy_and_works_once_a_slot_is_free(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(SESSIONSVC_PASSWORD_HASHES=2)
    Auth(app).create_user("alice", "alice-password")
    with two_unknown_names_hashing(app, monkeypatch):
        # Both slots are held: a third hash waits its short while, then is refused.
        busy = login(app, "alice", "alice-password")
    problem = assert_problem(busy, 503, "busy")
    assert busy.headers["Retry-After"] == "1"
    assert "try again" in problem["detail"]
    assert login(app, "alice", "alice-password").status_code == 200


def test_past_the_bound_a_user_signing_in_from_a_known_address_waits_its_turn(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(SESSIONSVC_PASSWORD_HASHES=2)
    Auth(app).login("alice", "alice-password")  # from 127.0.0.1: known there now
    with two_unknown_names_hashing(app, monkeypatch) as pool:
        alice = pool.submit(login, app, "alice", "alice-password")
        waiting(state_of(app).hash_slots, known=1)
        # A stranger is refused meanwhile; alice gets the first slot that frees.
        assert_problem(login(app, "nobody-else", "a guess"), 503, "busy")
    assert alice.result(10).status_code == 200


def test_past_the_bound_a_password_change_from_a_known_address_hashes_its_new_password_in_turn(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Alice, from an address she signed in from, checks her current password
    # in the one slot while a returning sign-in and a stranger's queue up:
    # her new password's hash must take its turn as her check did, not be
    # refused busy behind the stranger once her password was found right.
    app = make_app(SESSIONSVC_PASSWORD_HASHES=1)
    slots = state_of(app).hash_slots
    slots._wait = slots._known_wait = 10
    auth = Auth(app)
    tokens = auth.login("alice", "alice-password")
    auth.login("bob", "bob-password")  # both known at 127.0.0.1 now
    inside, release = threading.Event(), threading.Event()
    verify = passwords.verify

    def held_verify(stored: str, password: str) -> tuple[bool, str | None]:
        if password == "alice-password":
            inside.set()
            assert release.wait(10)
        return verify(stored, password)

    monkeypatch.setattr(passwords, "verify", held_verify)
    body = {"current_password": "alice-password", "new_password": "a brand new passphrase"}
    with ThreadPoolExecutor(3) as pool:
        change = pool.submit(
            lambda: app.test_client().post(PASSWORD, json=body, headers=Auth.headers(tokens))
        )
        assert inside.wait(10)
        bob = pool.submit(login, app, "bob", "bob-password")
        waiting(slots, known=1)
        stranger = pool.submit(login, app, "nobody", "a guess")
        waiting(slots, known=1, others=1)
        release.set()
        assert change.result(10).get_json() == {"revoked": 0}
        assert bob.result(10).status_code == 200
        assert stranger.result(10).status_code == 401
    assert login(app, "alice", "a brand new passphrase").status_code == 200


def test_past_the_bound_a_password_change_waits_as_a_returning_user_does(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(SESSIONSVC_PASSWORD_HASHES=2)
    tokens = Auth(app).login("alice", "alice-password")
    # From an address alice never signed in from: her token, not the
    # address, says she is no stranger.
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    body = {"current_password": "alice-password", "new_password": "alice's new passphrase"}

    def change() -> Any:
        return elsewhere.post(PASSWORD, json=body, headers=Auth.headers(tokens))

    with two_unknown_names_hashing(app, monkeypatch) as pool:
        changed = pool.submit(change)
        waiting(state_of(app).hash_slots, known=1)
    assert changed.result(10).status_code == 200


def test_the_openapi_document_says_busy_where_a_password_is_hashed(app: Flask) -> None:
    paths = app.test_client().get("/apispec.json").get_json()["paths"]
    for path in (LOGIN, PASSWORD):
        busy = paths[path]["post"]["responses"]["503"]
        assert "`busy`" in busy["description"] and "`store_unavailable`" in busy["description"]
        assert busy["headers"]["Retry-After"]["required"] is True
    weak = paths[PASSWORD]["post"]["responses"]["400"]["description"]
    assert "30,000 most common passwords" in weak and "current password" in weak
