"""Accounts of the standalone service: password change, disable, roles, delete, a name
created again, roles on refresh. On fakeredis, a real Redis and the cluster."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import decode_token

from sessionsvc import current_manager
from sessionsvc.store import Actor
from tests.clients import IPHONE, Auth, assert_problem

USERS = "/api/v1/admin/users"
SESSIONS = "/api/v1/sessions"
EVENTS = "/api/v1/sessions/events"
PASSWORD = "/api/v1/auth/password"
REFRESH = "/api/v1/auth/refresh"
LOGIN = "/api/v1/auth/login"


@pytest.fixture
def admin(auth: Auth) -> dict[str, str]:
    auth.create_user("root", "root-password", admin=True)
    return Auth.headers(auth.login("root", "root-password"))


def listed(client: FlaskClient, tokens: dict[str, Any]) -> list[str]:
    response = client.get(SESSIONS, headers=Auth.headers(tokens))
    assert response.status_code == 200, response.get_json()
    return [s["id"] for s in response.get_json()["sessions"]]


def revoked(client: FlaskClient, tokens: dict[str, Any]) -> None:
    assert_problem(client.get(SESSIONS, headers=Auth.headers(tokens)), 401, "session_revoked")
    refresh = client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))
    assert_problem(refresh, 401, "session_revoked")


def reasons(app: Flask, user_id: str) -> list[str]:
    with app.app_context():
        events = current_manager().events_for(user_id, limit=200)
    return [e.detail["reason"] for e in events if e.type == "session.revoked"]


def login_as(client: FlaskClient, username: str, password: str) -> Any:
    return client.post(LOGIN, json={"username": username, "password": password})


# -- the User object ------------------------------------------------------------------


def test_an_admin_reads_a_user_without_its_password(
    client: FlaskClient, auth: Auth, admin: dict[str, str]
) -> None:
    auth.create_user("alice", "alice-password")
    response = client.get(f"{USERS}/alice", headers=admin)
    assert response.status_code == 200
    user = response.get_json()
    assert set(user) == {"id", "roles", "disabled", "created_at", "password_changed_at"}
    assert (user["id"], user["roles"], user["disabled"]) == ("alice", [], False)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
@pytest.mark.parametrize("user_id", ["nobody", "%F0%9F%98%80", "a:{b}"])
def test_an_unknown_user_is_user_not_found(
    client: FlaskClient, admin: dict[str, str], method: str, user_id: str
) -> None:
    body = {"json": {"disabled": True}} if method == "patch" else {}
    response = getattr(client, method)(f"{USERS}/{user_id}", headers=admin, **body)
    assert_problem(response, 404, "user_not_found")


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_user_routes_need_the_admin_role(client: FlaskClient, auth: Auth, method: str) -> None:
    alice = auth.login("alice", "alice-password")
    body = {"json": {"disabled": True}} if method == "patch" else {}
    response = getattr(client, method)(f"{USERS}/alice", headers=Auth.headers(alice), **body)
    assert_problem(response, 403, "forbidden")
    assert listed(client, alice)  # nothing happened


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"disabled": "yes"},
        {"disabled": 1},
        {"roles": "admin"},
        {"roles": ["a,b"]},
        {"roles": [""]},
        {"roles": [7]},
        {"roles": ["x"] * 33},
        {"name": "alice"},
    ],
)
def test_a_bad_change_is_400_and_changes_nothing(
    client: FlaskClient, auth: Auth, admin: dict[str, str], body: dict[str, Any]
) -> None:
    alice = auth.login("alice", "alice-password")
    response = client.patch(f"{USERS}/alice", headers=admin, json=body)
    assert_problem(response, 400, "invalid_request")
    assert listed(client, alice)


# -- disable, roles, delete -------------------------------------------------------------


def test_disabling_ends_every_session_and_refuses_sign_in(
    app: Flask, client: FlaskClient, auth: Auth, admin: dict[str, str]
) -> None:
    laptop = auth.login("alice", "alice-password")
    phone = auth.login("alice", "alice-password", user_agent=IPHONE)
    response = client.patch(f"{USERS}/alice", headers=admin, json={"disabled": True})
    assert response.status_code == 200
    assert response.get_json()["disabled"] is True
    revoked(client, laptop)
    revoked(client, phone)
    assert reasons(app, "alice")[:2] == ["user_disabled", "user_disabled"]
    assert_problem(login_as(client, "alice", "alice-password"), 403, "user_disabled")
    assert_problem(login_as(client, "alice", "wrong-password"), 401, "invalid_credentials")
    # Enabling lets the user in again; it revokes nothing.
    enabled = client.patch(f"{USERS}/alice", headers=admin, json={"disabled": False})
    assert enabled.get_json()["disabled"] is False
    assert login_as(client, "alice", "alice-password").status_code == 200


def test_new_roles_end_every_session_and_the_next_sign_in_carries_them(
    app: Flask, client: FlaskClient, auth: Auth, admin: dict[str, str]
) -> None:
    old = auth.login("alice", "alice-password")
    same = client.patch(f"{USERS}/alice", headers=admin, json={"roles": []})
    assert same.status_code == 200
    assert listed(client, old)  # the same roles: nothing changed
    response = client.patch(f"{USERS}/alice", headers=admin, json={"roles": ["admin", "ops"]})
    assert response.get_json()["roles"] == ["admin", "ops"]
    revoked(client, old)
    assert reasons(app, "alice")[0] == "roles_changed"
    tokens = login_as(client, "alice", "alice-password").get_json()
    with app.app_context():
        assert decode_token(tokens["access_token"])["roles"] == ["admin", "ops"]


def test_deleting_ends_every_session_and_a_new_user_of_the_name_inherits_nothing(
    app: Flask, client: FlaskClient, auth: Auth, admin: dict[str, str]
) -> None:
    old = auth.login("alice", "alice-password")
    # Activity of the old account too: an address change, in its own list.
    moved = {"REMOTE_ADDR": "198.51.100.9"}
    assert client.get(SESSIONS, headers=Auth.headers(old), environ_base=moved).status_code == 200
    kinds = [e["type"] for e in client.get(EVENTS, headers=Auth.headers(old)).get_json()["events"]]
    assert "session.ip_changed" in kinds
    assert client.delete(f"{USERS}/alice", headers=admin).status_code == 204
    revoked(client, old)
    assert_problem(client.get(f"{USERS}/alice", headers=admin), 404, "user_not_found")
    assert_problem(client.delete(f"{USERS}/alice", headers=admin), 404, "user_not_found")
    # The name again: another account, with none of the old one's sessions or events.
    auth.create_user("alice", "new-alice-password")
    new = auth.login("alice", "new-alice-password")
    revoked(client, old)
    assert listed(client, new) == [new["session_id"]]
    events = client.get(EVENTS, headers=Auth.headers(new)).get_json()["events"]
    assert {e["session_id"] for e in events} == {new["session_id"]}
    # The old tokens touch nothing of the new account's.
    response = client.delete(f"{SESSIONS}/{new['session_id']}", headers=Auth.headers(old))
    assert_problem(response, 401, "session_revoked")
    assert listed(client, new) == [new["session_id"]]


def test_a_record_deleted_by_hand_and_created_again_hands_on_nothing(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    old = auth.login("alice", "alice-password")
    with app.app_context():
        store = current_manager().store
        store.client.delete(store.user_key("alice"))  # an operator, in redis-cli
    # Until the name is taken again: the access token lives out its minutes, but
    # the refresh token cannot go on: the session's account is gone.
    assert_problem(
        client.post(REFRESH, headers=Auth.headers(old, "refresh_token")), 401, "session_revoked"
    )
    second = auth.login("bob", "bob-password")  # another user is untouched
    old_again = auth.login("alice", "alice-password")  # the name taken again
    revoked(client, old)
    assert listed(client, old_again) == [old_again["session_id"]]
    assert listed(client, second) == [second["session_id"]]


def test_refresh_hands_out_the_roles_as_stored_now(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    auth.create_user("alice", "alice-password", admin=True)
    tokens = auth.login("alice", "alice-password")
    with app.app_context():
        store = current_manager().store
        assert decode_token(tokens["access_token"])["roles"] == ["admin"]
        # Demoted without the admin route (which would end the sessions).
        store.client.hdel(store.user_key("alice"), "roles")
    response = client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))
    assert response.status_code == 200
    with app.app_context():
        assert "roles" not in decode_token(response.get_json()["access_token"])
    forbidden = client.get(f"{USERS}/alice", headers=Auth.headers(response.get_json()))
    assert_problem(forbidden, 403, "forbidden")


# -- the password ------------------------------------------------------------------------


def test_a_password_change_ends_the_other_sessions_only(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    laptop = auth.login("alice", "alice-password")
    phone = auth.login("alice", "alice-password", user_agent=IPHONE)
    body = {"current_password": "alice-password", "new_password": "a brand new one"}
    response = client.post(PASSWORD, headers=Auth.headers(laptop), json=body)
    assert response.status_code == 200
    assert response.get_json() == {"revoked": 1}
    assert response.headers["Cache-Control"] == "no-store"
    revoked(client, phone)
    assert listed(client, laptop) == [laptop["session_id"]]
    assert_problem(login_as(client, "alice", "alice-password"), 401, "invalid_credentials")
    assert login_as(client, "alice", "a brand new one").status_code == 200
    with app.app_context():
        events = current_manager().events_for("alice", limit=10)
        user = current_manager().find_user("alice")
    changed = [e for e in events if e.type == "password.changed"]
    assert [(e.session_id, e.detail) for e in changed] == [(laptop["session_id"], {"revoked": 1})]
    assert reasons(app, "alice")[0] == "password_changed"
    assert user is not None and user.password_changed_at is not None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"current_password": "wrong", "new_password": "a brand new one"},
            401,
            "invalid_credentials",
        ),
        ({"current_password": "alice-password", "new_password": "short"}, 400, "weak_password"),
        ({"current_password": "alice-password", "new_password": "alice"}, 400, "weak_password"),
        ({"current_password": "alice-password"}, 400, "invalid_request"),
        ({"current_password": 7, "new_password": "a brand new one"}, 400, "invalid_request"),
    ],
)
def test_a_failed_password_change_changes_nothing(
    client: FlaskClient, auth: Auth, body: dict[str, Any], status: int, code: str
) -> None:
    laptop = auth.login("alice", "alice-password")
    phone = auth.login("alice", "alice-password", user_agent=IPHONE)
    assert_problem(client.post(PASSWORD, headers=Auth.headers(laptop), json=body), status, code)
    assert sorted(listed(client, phone)) == sorted([laptop["session_id"], phone["session_id"]])
    assert login_as(client, "alice", "alice-password").status_code == 200


def test_of_two_password_changes_at_once_one_wins(app: Flask, auth: Auth) -> None:
    auth.create_user("alice", "alice-password")
    with app.app_context():
        store = current_manager().store
        user = store.get_user("alice")
        assert user is not None
        first = store.change_password(
            "alice", "h1", expected=user.password_hash, now=1, actor=Actor(), keep=None
        )
        second = store.change_password(
            "alice", "h2", expected=user.password_hash, now=1, actor=Actor(), keep=None
        )
        assert first == [] and second is None
        stored = store.get_user("alice")
    assert stored is not None and stored.password_hash == "h1"


def test_a_password_change_needs_an_access_token(client: FlaskClient, auth: Auth) -> None:
    tokens = auth.login("alice", "alice-password")
    body = {"current_password": "alice-password", "new_password": "a brand new one"}
    response = client.post(PASSWORD, headers=Auth.headers(tokens, "refresh_token"), json=body)
    assert_problem(response, 401, "wrong_token_type")
    assert_problem(client.post(PASSWORD, json=body), 401, "authorization_required")


ROUTES = [
    ("get", SESSIONS, "access_token"),
    ("get", SESSIONS + "/{sid}", "access_token"),
    ("patch", SESSIONS + "/{sid}", "access_token"),
    ("delete", SESSIONS + "/{sid}", "access_token"),
    ("delete", SESSIONS, "access_token"),
    ("get", EVENTS, "access_token"),
    ("post", "/api/v1/auth/logout", "access_token"),
    ("post", PASSWORD, "access_token"),
    ("post", REFRESH, "refresh_token"),
]


@pytest.mark.parametrize(("method", "path", "kind"), ROUTES)
def test_an_old_token_works_on_no_route_of_a_name_created_again(
    client: FlaskClient, auth: Auth, admin: dict[str, str], method: str, path: str, kind: str
) -> None:
    old = auth.login("alice", "alice-password")
    assert client.delete(f"{USERS}/alice", headers=admin).status_code == 204
    auth.create_user("alice", "new-alice-password")
    new = auth.login("alice", "new-alice-password")
    bodies = {"patch": {"name": "mine now"}, "post": {"current_password": "x", "new_password": "y"}}
    response = getattr(client, method)(
        path.format(sid=new["session_id"]),
        headers=Auth.headers(old, kind),
        json=bodies.get(method) if path != REFRESH else None,
    )
    assert_problem(response, 401, "session_revoked")
    assert listed(client, new) == [new["session_id"]]


def test_a_user_disabled_by_hand_cannot_refresh(
    app: Flask, client: FlaskClient, auth: Auth
) -> None:
    tokens = auth.login("alice", "alice-password")
    with app.app_context():
        store = current_manager().store
        store.client.hset(store.user_key("alice"), "d", "1")
    refresh = client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))
    assert_problem(refresh, 401, "session_revoked")
    assert reasons(app, "alice")[0] == "user_disabled"
    assert_problem(client.get(SESSIONS, headers=Auth.headers(tokens)), 401, "session_revoked")
