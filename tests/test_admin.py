"""The admin routes: any user's sessions, behind the ``admin`` role; the last admin."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import accounts, current_manager
from sessionsvc.errors import LastAdmin
from tests.clients import IPHONE, Auth, assert_problem

ADMIN = "/api/v1/admin/users"


def listed(client: FlaskClient, tokens: dict[str, Any], user: str) -> list[dict[str, Any]]:
    response = client.get(f"{ADMIN}/{user}/sessions", headers=Auth.headers(tokens))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"  # session data
    sessions: list[dict[str, Any]] = response.get_json()["sessions"]
    return sessions


def test_admin_lists_a_users_sessions_none_current(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    first = auth.login("alice")
    second = auth.login("alice", user_agent=IPHONE)
    sessions = listed(client, admin_tokens, "alice")
    assert {s["id"] for s in sessions} == {first["session_id"], second["session_id"]}
    assert len(sessions) == 2
    assert all(s["current"] is False for s in sessions)
    # Listing is read-only: alice's own view is unchanged.
    mine = client.get("/api/v1/sessions", headers=auth.headers(first)).get_json()["sessions"]
    assert {s["id"] for s in mine} == {first["session_id"], second["session_id"]}


def test_user_without_sessions_is_an_empty_list(
    client: FlaskClient, admin_tokens: dict[str, Any]
) -> None:
    assert listed(client, admin_tokens, "nobody") == []


def test_admin_revokes_all_of_a_users_sessions(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    tokens = [auth.login("alice") for _ in range(3)]
    bob = auth.login("bob")
    response = client.delete(f"{ADMIN}/alice/sessions", headers=auth.headers(admin_tokens))
    assert response.status_code == 200
    assert response.get_json() == {"revoked": 3}
    for pair in tokens:
        assert_problem(
            client.get("/api/v1/sessions", headers=auth.headers(pair)), 401, "session_revoked"
        )
    assert client.get("/api/v1/sessions", headers=auth.headers(bob)).status_code == 200
    assert client.get("/api/v1/sessions", headers=auth.headers(admin_tokens)).status_code == 200
    alice = auth.login("alice")
    history = client.get("/api/v1/sessions/events", headers=auth.headers(alice)).get_json()
    reasons = [
        e["detail"].get("reason") for e in history["events"] if e["type"] == "session.revoked"
    ]
    assert reasons == ["admin", "admin", "admin"]
    assert client.delete(
        f"{ADMIN}/nobody/sessions", headers=auth.headers(admin_tokens)
    ).get_json() == {"revoked": 0}


def test_admin_revokes_one_session(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    target = auth.login("alice")
    other = auth.login("alice")
    url = f"{ADMIN}/alice/sessions/{target['session_id']}"
    response = client.delete(url, headers=auth.headers(admin_tokens))
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_problem(
        client.get("/api/v1/sessions", headers=auth.headers(target)), 401, "session_revoked"
    )
    assert [s["id"] for s in listed(client, admin_tokens, "alice")] == [other["session_id"]]
    assert_problem(client.delete(url, headers=auth.headers(admin_tokens)), 404, "session_not_found")
    # The session id must belong to the user named in the path.
    wrong_user = f"{ADMIN}/bob/sessions/{other['session_id']}"
    assert_problem(
        client.delete(wrong_user, headers=auth.headers(admin_tokens)), 404, "session_not_found"
    )
    assert [s["id"] for s in listed(client, admin_tokens, "alice")] == [other["session_id"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/alice/sessions"),
        ("DELETE", "/alice/sessions"),
        ("DELETE", "/alice/sessions/AAAAAAAAAAAAAAAAAAAAAA"),
    ],
)
def test_non_admin_gets_403_and_nothing_changes(
    client: FlaskClient, auth: Auth, method: str, path: str
) -> None:
    alice = auth.login("alice")
    mallory = auth.login("mallory")
    response = client.open(ADMIN + path, method=method, headers=auth.headers(mallory))
    assert_problem(response, 403, "forbidden")
    assert client.get("/api/v1/sessions", headers=auth.headers(alice)).status_code == 200


def test_admin_routes_need_a_valid_token(client: FlaskClient) -> None:
    assert_problem(client.get(f"{ADMIN}/alice/sessions"), 401, "authorization_required")


def test_admin_role_survives_refresh(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    refreshed = client.post(
        "/api/v1/auth/refresh", headers=auth.headers(admin_tokens, "refresh_token")
    )
    assert refreshed.status_code == 200
    assert listed(client, refreshed.get_json(), "alice") == []


def test_odd_user_ids_in_the_path(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    from urllib.parse import quote

    for user in ("a:b", "{x}", "ünï cødé"):
        pair = auth.login(user)
        sessions = listed(client, admin_tokens, quote(user, safe=""))
        assert [s["id"] for s in sessions] == [pair["session_id"]]


# -- the last admin --------------------------------------------------------------------

USER = "/api/v1/admin/users/{}"
#: The changes that take a user out of the admins, as the admin routes make them.
REMOVALS = {
    "disable": ("PATCH", {"disabled": True}),
    "demote": ("PATCH", {"roles": ["auditor"]}),
    "delete": ("DELETE", None),
}


def remove(client: FlaskClient, tokens: dict[str, Any], user: str, removal: str) -> Any:
    method, body = REMOVALS[removal]
    return client.open(USER.format(user), method=method, json=body, headers=Auth.headers(tokens))


def admins(app: Flask) -> tuple[set[str], set[str]]:
    """The admins by the user records, and the registry's members."""
    with app.app_context():
        store = current_manager().store
        found = {u.id for u in accounts.all_users() if accounts.is_admin(u)}
        members = store.admins_members()
    return found, members


@pytest.mark.parametrize("removal", list(REMOVALS))
def test_the_last_admin_cannot_remove_itself(
    app: Flask, client: FlaskClient, admin_tokens: dict[str, Any], removal: str
) -> None:
    assert_problem(remove(client, admin_tokens, "root", removal), 409, "last_admin")
    # Nothing changed: still the admin, still signed in.
    assert admins(app) == ({"root"}, {"root"})
    assert listed(client, admin_tokens, "root") != []


@pytest.mark.parametrize("removal", list(REMOVALS))
def test_the_last_admin_cannot_be_removed_by_a_demoted_one(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], removal: str
) -> None:
    auth.create_user("ops", "pw", admin=True)
    ops = auth.login("ops", "pw")
    headers = auth.headers(ops)
    # ops removes root (another admin remains: ops)...
    assert remove(client, ops, "root", removal).status_code in (200, 204)
    assert admins(app) == ({"ops"}, {"ops"})
    # ...and then cannot remove itself, the last one.
    assert_problem(remove(client, ops, "ops", removal), 409, "last_admin")
    assert client.get(USER.format("ops"), headers=headers).status_code == 200


@pytest.mark.parametrize("removal", list(REMOVALS))
def test_an_admin_who_is_not_the_last_can_be_removed(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], removal: str
) -> None:
    auth.create_user("ops", "pw", admin=True)
    auth.create_user("off", "pw", admin=True)
    client.patch(USER.format("off"), json={"disabled": True}, headers=Auth.headers(admin_tokens))
    assert remove(client, admin_tokens, "ops", removal).status_code in (200, 204)
    assert admins(app) == ({"root"}, {"root"})
    # A disabled admin is none: root is the last one.
    assert_problem(remove(client, admin_tokens, "root", removal), 409, "last_admin")


def test_an_admin_may_remove_itself_while_another_remains(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    auth.create_user("ops", "pw", admin=True)
    response = remove(client, admin_tokens, "root", "demote")
    assert response.status_code == 200
    assert response.get_json()["roles"] == ["auditor"]
    assert admins(app) == ({"ops"}, {"ops"})


def test_other_changes_of_the_last_admin_are_allowed(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    headers = Auth.headers(admin_tokens)
    roles = {"roles": ["admin", "auditor"]}
    assert client.patch(USER.format("root"), json=roles, headers=headers).status_code == 200
    again = auth.login("root", "pw")  # the roles change ended root's sessions
    enable = {"disabled": False}
    assert (
        client.patch(USER.format("root"), json=enable, headers=auth.headers(again)).status_code
        == 200
    )
    assert_problem(remove(client, again, "root", "demote"), 409, "last_admin")
    assert admins(app) == ({"root"}, {"root"})


def test_a_promotion_and_an_enable_join_the_registry(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    auth.create_user("bob", "pw")
    auth.create_user("ops", "pw", admin=True)
    headers = Auth.headers(admin_tokens)
    assert (
        client.patch(USER.format("ops"), json={"disabled": True}, headers=headers).status_code
        == 200
    )
    assert admins(app) == ({"root"}, {"root"})
    assert (
        client.patch(USER.format("bob"), json={"roles": ["admin"]}, headers=headers).status_code
        == 200
    )
    assert (
        client.patch(USER.format("ops"), json={"disabled": False}, headers=headers).status_code
        == 200
    )
    assert admins(app) == ({"root", "bob", "ops"}, {"root", "bob", "ops"})


def test_a_missing_registry_is_built_from_the_user_records(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    auth.create_user("ops", "pw", admin=True)
    auth.create_user("bob", "pw")
    with app.app_context():
        store = current_manager().store
        # A deployment from before the registry has none.
        store.client.delete(store.keys.admins())
    assert remove(client, admin_tokens, "ops", "disable").status_code == 200
    assert admins(app) == ({"root"}, {"root"})
    with app.app_context():
        store.client.delete(store.keys.admins())
    assert_problem(remove(client, admin_tokens, "root", "delete"), 409, "last_admin")
    assert admins(app) == ({"root"}, {"root"})


def test_a_registry_that_lacks_an_admin_is_built_anew_before_refusing(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    assert_problem(remove(client, admin_tokens, "root", "demote"), 409, "last_admin")
    assert admins(app) == ({"root"}, {"root"})
    # An admin added behind the registry's back (SessionManager.add_user).
    auth.create_user("ops", "pw", admin=True)
    assert admins(app) == ({"root", "ops"}, {"root"})
    assert remove(client, admin_tokens, "root", "demote").status_code == 200
    assert admins(app) == ({"ops"}, {"ops"})


def scanning(app: Flask, monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> list[bool]:
    """Run ``meanwhile()`` right after the first ``SCAN`` of every user
    record found the admins; whether the lock of admin changes was held
    during each scan."""
    with app.app_context():
        store = current_manager().store
    scan = store.enabled_users_with_role
    locked: list[bool] = []

    def scan_then(role: str, *, among: Any = None) -> list[str]:
        if among is not None:
            return scan(role, among=among)
        found = scan(role)
        locked.append(bool(store.client.exists(store.keys.admins_lock())))
        if len(locked) == 1:
            meanwhile()
        return found

    monkeypatch.setattr(store, "enabled_users_with_role", scan_then)
    return locked


#: A change while the SCAN of a refusal reads the user records: the user,
#: created an admin or not, the change, the removal of root it races, and
#: what it answers.
WHILE_SCANNING = {
    # bob, made an admin meanwhile, joined the registry: root is not the last.
    "promotion": ("bob", False, {"roles": ["admin"]}, "demote", 200, {"bob"}),
    # ops, an admin behind the registry's back, is found by the scan, then
    # disabled before the registry is built: read again under the lock.
    "disable": ("ops", True, {"disabled": True}, "delete", 409, {"root"}),
}


@pytest.mark.parametrize("case", list(WHILE_SCANNING))
def test_the_scan_of_the_user_records_runs_with_the_lock_free(
    app: Flask,
    client: FlaskClient,
    auth: Auth,
    admin_tokens: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    # A SCAN of 10,000 users takes ~80 ms of real Redis, of 100,000 over a
    # second: held meanwhile, the lock stopped every change of a user.
    user, admin, change, removal, status, after = WHILE_SCANNING[case]
    auth.create_user(user, "pw", admin=admin)
    headers = Auth.headers(admin_tokens)

    def meanwhile() -> None:
        answer = client.patch(USER.format(user), json=change, headers=headers)
        assert answer.status_code == 200

    locked = scanning(app, monkeypatch, meanwhile)
    assert remove(client, admin_tokens, "root", removal).status_code == status
    assert locked and not any(locked)
    assert admins(app) == (after, after)


@pytest.fixture
def lock_of_a_dead_holder(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The lock of admin changes, taken by a process that died (free when its
    lease runs out), and a short wait for it; the store."""
    with app.app_context():
        store = current_manager().store
    assert store.lock_admins("died", seconds=accounts.ADMIN_LOCK_SECONDS)
    monkeypatch.setattr(accounts, "ADMIN_LOCK_WAIT", 0.05, raising=False)
    return store


def test_a_lock_left_by_a_process_that_died_answers_busy_after_a_short_wait(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], lock_of_a_dead_holder: Any
) -> None:
    auth.create_user("bob", "pw", admin=True)
    store = lock_of_a_dead_holder
    headers = Auth.headers(admin_tokens)
    for removal in REMOVALS:
        busy = remove(client, admin_tokens, "bob", removal)
        problem = assert_problem(busy, 503, "busy")
        assert "in progress" in problem["detail"]
        # When to try again: when the lease runs out, at the latest.
        assert 1 <= int(busy.headers["Retry-After"]) <= accounts.ADMIN_LOCK_SECONDS
    assert client.get(USER.format("bob"), headers=headers).get_json()["disabled"] is False
    store.client.delete(store.keys.admins_lock())
    assert remove(client, admin_tokens, "bob", "disable").status_code == 200


def test_a_change_of_a_user_who_is_no_admin_takes_no_lock(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], lock_of_a_dead_holder: Any
) -> None:
    auth.create_user("carol", "pw")
    auth.create_user("dave", "pw")
    store = lock_of_a_dead_holder
    headers = Auth.headers(admin_tokens)
    for removal in REMOVALS:
        assert remove(client, admin_tokens, "carol", removal).status_code in (200, 204)
    assert client.get(USER.format("carol"), headers=headers).status_code == 404
    # Made an admin needs it (the registry is joined).
    promote = client.patch(USER.format("dave"), json={"roles": ["admin"]}, headers=headers)
    assert_problem(promote, 503, "busy")
    assert store.client.get(store.keys.admins_lock()) == "died"
    spec = client.get("/apispec.json").get_json()["paths"]["/api/v1/admin/users/{user_id}"]
    for method in ("patch", "delete"):
        assert "`busy`" in spec[method]["responses"]["503"]["description"]


@pytest.mark.parametrize("removal", list(REMOVALS))
def test_an_admin_the_registry_lacks_is_not_let_go_when_it_is_the_last(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], removal: str
) -> None:
    with app.test_request_context():
        accounts.delete("root", force=True)  # the CLI's --force: no admin left
    assert admins(app) == (set(), set())
    # An admin made behind the registry's back (SessionManager.add_user).
    auth.create_user("ops", "pw", admin=True)
    ops = auth.login("ops", "pw")
    assert_problem(remove(client, ops, "ops", removal), 409, "last_admin")
    assert admins(app) == ({"ops"}, {"ops"})


@pytest.mark.parametrize("odd", ["a{b}:c", "é✓𝄞", "\udcff"])
def test_admins_of_any_user_id_count(
    app: Flask, client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], odd: str
) -> None:
    # A lone surrogate (from the CLI's arguments, say) cannot sign in, but
    # its record is an admin's: it counts, and the registry holds it.
    auth.create_user(odd, "pw", admin=True)
    assert remove(client, admin_tokens, "root", "demote").status_code == 200
    assert admins(app) == ({odd}, {odd})
    with app.test_request_context(), pytest.raises(LastAdmin):
        accounts.delete(odd)
    with app.test_request_context():
        accounts.update("root", roles=("admin",))
        accounts.delete(odd)
    assert admins(app) == ({"root"}, {"root"})


@pytest.mark.parametrize("removal", ["disable", "delete"])
def test_a_change_without_the_lock_landing_after_a_promotion_is_decided_under_it(
    app: Flask,
    client: FlaskClient,
    auth: Auth,
    admin_tokens: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    removal: str,
) -> None:
    # dave is no admin when the change reads him; a promotion lands before
    # the change is made: made as read, it would leave a disabled (or a
    # deleted) member in the registry, whom the last-admin rule would count.
    auth.create_user("dave", "pw")
    with app.app_context():
        store = current_manager().store
    headers = Auth.headers(admin_tokens)
    name = "update_user" if removal == "disable" else "delete_user"
    made = getattr(store, name)
    promoted: list[int] = []

    def promote_first(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("expected") is not None and not promoted:
            with app.test_client() as other:
                answer = other.patch(
                    USER.format("dave"), json={"roles": ["admin"]}, headers=headers
                )
            promoted.append(answer.status_code)
        return made(*args, **kwargs)

    monkeypatch.setattr(store, name, promote_first)
    assert remove(client, admin_tokens, "dave", removal).status_code in (200, 204)
    assert promoted == [200]
    assert admins(app) == ({"root"}, {"root"})
    assert_problem(remove(client, admin_tokens, "root", "demote"), 409, "last_admin")
