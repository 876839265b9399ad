"""sessionsvc.passwords: the policy, argon2id hashes, older hashes upgraded at login."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from sessionsvc import current_manager, passwords
from sessionsvc.errors import WeakPassword
from sessionsvc.models import User
from tests.clients import CHROME, fast_hash

OWASP = "$argon2id$v=19$m=19456,t=2,p=1$"


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
    ["12345678", " spaces at both ends ", "x" * 1024, "Alice-Smith", "correct horse"],
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
