"""Attacks on the admins' user listing and a user's events for admins (issue 24):
tokens that outlive a role, mounted apps, hostile query values, a store that
fails, what a page shows, and changes racing a listing or a reindex."""

from __future__ import annotations

import secrets
import threading
from typing import Any
from urllib.parse import unquote_to_bytes

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import SessionManager, accounts, current_manager
from sessionsvc.models import User
from sessionsvc.payloads import page_cursor
from sessionsvc.store import SessionStore
from tests.clients import Auth, assert_problem, fast_hash
from tests.test_admin_users import USERS, add_users, names, page

#: The User object (docs/api.md, section 11), and nothing else.
USER_FIELDS = {"id", "roles", "disabled", "created_at", "password_changed_at"}


def listing(client: FlaskClient, tokens: dict[str, Any], query: str = "") -> Any:
    """The listing's answer to a raw query string (bytes as latin-1, as WSGI has them)."""
    return client.get(
        USERS, environ_overrides={"QUERY_STRING": query}, headers=Auth.headers(tokens)
    )


# -- who may list ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "/alice/events"])
def test_a_token_does_not_outlive_its_admin(
    app: Flask, client: FlaskClient, auth: Auth, path: str
) -> None:
    auth.create_user("root", "pw", admin=True)
    auth.create_user("boss", "pw", admin=True)
    boss = auth.login("boss")
    demoted, deleted = auth.login("root"), auth.login("boss")
    headers = auth.headers(demoted)
    assert client.get(USERS + path, headers=headers).status_code == 200
    refresh = client.get(USERS + path, headers=auth.headers(demoted, "refresh_token"))
    assert_problem(refresh, 401, "wrong_token_type")
    with app.app_context():
        accounts.update("root", roles=())
    assert_problem(client.get(USERS + path, headers=headers), 401, "session_revoked")
    # Promoted again: the old token stays dead, a new sign-in is an admin.
    with app.app_context():
        accounts.update("root", roles=("admin",))
    assert_problem(client.get(USERS + path, headers=headers), 401, "session_revoked")
    assert client.get(USERS + path, headers=auth.headers(auth.login("root"))).status_code == 200
    # Deleted, and created again (an admin once more): its tokens stay dead.
    with app.app_context():
        accounts.delete("boss")
    auth.create_user("boss", "pw", admin=True)
    for tokens in (boss, deleted):
        assert_problem(
            client.get(USERS + path, headers=auth.headers(tokens)), 401, "session_revoked"
        )
    # Disabled: the same.
    disabled = auth.login("root")
    with app.app_context():
        accounts.update("root", disabled=True)
    assert_problem(client.get(USERS + path, headers=auth.headers(disabled)), 401, "session_revoked")


def host_app(*, auth_routes: bool, loader: Any) -> tuple[Flask, SessionManager]:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=secrets.token_hex(32), SESSIONSVC_KEY_PREFIX="host")
    sessions = SessionManager(
        app,
        redis_client=fakeredis.FakeRedis(decode_responses=True),
        admin_routes=True,
        auth_routes=auth_routes,
    )
    if loader is not None:
        sessions.admin_loader(loader)
    return app, sessions


def test_a_host_apps_loader_decides_the_events_route() -> None:
    seen: list[tuple[str, list[str] | None]] = []

    def loader(user_id: str, claims: dict[str, Any]) -> bool:
        seen.append((user_id, claims.get("roles")))
        return claims.get("staff") is True

    app, sessions = host_app(auth_routes=False, loader=loader)
    with app.test_request_context():
        # The standalone service's admin claim means nothing to this host.
        roles_only = sessions.open("eve", claims={"roles": ["admin"]})
        staff = sessions.open("sam", claims={"staff": True})
        sessions.open("alice")
    client = app.test_client()

    def events(token: str) -> Any:
        return client.get(f"{USERS}/alice/events", headers={"Authorization": f"Bearer {token}"})

    assert_problem(events(roles_only.access_token), 403, "forbidden")
    assert [e["type"] for e in events(staff.access_token).get_json()["events"]] == [
        "session.created"
    ]
    assert seen == [("eve", ["admin"]), ("sam", None)]
    assert_problem(
        client.get(USERS, headers={"Authorization": f"Bearer {staff.access_token}"}),
        404,
        "not_found",
    )


def test_a_host_app_without_a_loader_or_admin_routes_lists_nothing() -> None:
    app, sessions = host_app(auth_routes=False, loader=None)
    with app.test_request_context():
        token = sessions.open("root", claims={"roles": ["admin"]}).access_token
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert_problem(client.get(f"{USERS}/alice/events", headers=headers), 403, "forbidden")
    off = Flask("off")
    off.config.update(JWT_SECRET_KEY=secrets.token_hex(32), SESSIONSVC_KEY_PREFIX="off")
    SessionManager(off, redis_client=fakeredis.FakeRedis(decode_responses=True), admin_routes=False)
    for path in (USERS, f"{USERS}/alice/events"):
        assert off.test_client().get(path, headers=headers).status_code == 404


def test_a_host_app_with_the_user_store_lists_by_its_own_loader() -> None:
    app, sessions = host_app(auth_routes=True, loader=lambda uid, claims: uid == "sam")
    with app.app_context():
        current_manager().store.create_user(User(id="alice", password_hash=fast_hash("pw")))
    with app.test_request_context():
        sam = sessions.open("sam").access_token
        eve = sessions.open("eve", claims={"roles": ["admin"]}).access_token
    client = app.test_client()
    assert_problem(client.get(USERS, headers={"Authorization": f"Bearer {eve}"}), 403, "forbidden")
    body = client.get(USERS, headers={"Authorization": f"Bearer {sam}"}).get_json()
    assert [u["id"] for u in body["users"]] == ["alice"]


# -- hostile query values -----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "prefix=%FF",  # not UTF-8
        "prefix=a%C3",  # a sequence cut short
        "prefix=%ED%A0%80",  # a lone surrogate, UTF-8 encoded
        "prefix=%C0%80",  # an overlong NUL
        "cursor=%FF",
        "limit=%FF",
        "prefix=\xff",  # a raw byte
        "cursor=\xff",
        "prefix=" + "a" * 100_000,
        "cursor=" + "Q" * 100_000,
        "limit=" + "9" * 100_000,
        "limit=1&limit=1",
        "cursor=AA&cursor=AA",
        "prefix=a&prefix=a",
        "limit=%2B1",
        "limit=1.0",
        "limit=-1",
        "limit=",
        "limit",
        "limit=0000001",
        "limit=%EF%BC%91",  # a fullwidth digit one
        "cursor",
        "cursor=YQ%3D%3D",  # padded
        "cursor=YQ%0A",
        "cursor=%20YQ",
        "cursor=YR",  # not canonical: the same bytes as YQ
        "cursor=YQ.",
    ],
)
def test_hostile_queries_are_400_problems(
    client: FlaskClient, admin_tokens: dict[str, Any], query: str
) -> None:
    assert_problem(listing(client, admin_tokens, query), 400, "invalid_request")


def test_a_nul_in_the_prefix_and_the_smallest_cursor_are_ordinary(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "a", "a\x00b", "\x00")
    assert page(client, admin_tokens, prefix="a\x00") == (["a\x00b"], None)
    assert page(client, admin_tokens, prefix="\x00") == (["\x00"], None)
    # The cursor of the id "\x00": every other id is after it.
    assert page(client, admin_tokens, cursor="AA") == (["a", "a\x00b", "root"], None)
    assert page(client, admin_tokens, limit="000002") == (["\x00", "a"], page_cursor("a"))


def test_a_cursor_from_another_prefix_or_a_deleted_user(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "a1", "a2", "b1", "b2", "c1")
    # After the prefix's range: nothing, and the last page.
    assert page(client, admin_tokens, prefix="a", cursor=page_cursor("b1")) == ([], None)
    # Inside it though it came from another prefix: it is only a place.
    assert page(client, admin_tokens, prefix="b", cursor=page_cursor("b1x")) == (["b2"], None)
    store.delete_user("b2")
    assert page(client, admin_tokens, prefix="b", cursor=page_cursor("b2")) == ([], None)
    assert page(client, admin_tokens, cursor=page_cursor("b2")) == (["c1", "root"], None)


def test_limit_edges(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, *(f"u{i:03d}" for i in range(500)))
    first, cursor = page(client, admin_tokens, limit=500)
    assert first == ["root", *(f"u{i:03d}" for i in range(499))]
    assert cursor == page_cursor("u498")
    assert page(client, admin_tokens, limit=500, cursor=cursor) == (["u499"], None)
    assert page(client, admin_tokens, limit=1) == (["root"], page_cursor("root"))
    assert len(page(client, admin_tokens)[0]) == 100


def test_a_lone_surrogate_id_is_listed_as_json_and_its_cursor_goes_on(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "\ud800", "a\udfff")
    response = listing(client, admin_tokens, "limit=1")
    assert response.get_data() == (
        b'{"next_cursor":"Ye2_vw","users":[{"created_at":null,"disabled":false,'
        b'"id":"a\\udfff","password_changed_at":null,"roles":[]}]}\n'
    )
    assert page_cursor("a\udfff") == "Ye2_vw"
    assert page(client, admin_tokens, cursor="Ye2_vw") == (["root", "\ud800"], None)


# -- what a page shows ---------------------------------------------------------------


def test_a_page_shows_the_user_object_and_no_secret(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    store.create_user(User(id="alice", password_hash=fast_hash("s3cret-pw"), account="acct-9f"))
    auth.login("alice", "s3cret-pw", create=False)
    body = listing(client, admin_tokens).get_json()
    assert [set(user) for user in body["users"]] == [USER_FIELDS, USER_FIELDS]
    alice = store.get_user("alice")
    assert alice is not None
    text = listing(client, admin_tokens).get_data(as_text=True)
    assert alice.account == "acct-9f" and alice.password_hash
    for secret in (alice.password_hash, alice.account, "s3cret-pw", "$argon2", "$2b$"):
        assert secret not in text
    events = client.get(f"{USERS}/alice/events", headers=auth.headers(admin_tokens))
    for secret in (alice.password_hash, alice.account):
        assert secret not in events.get_data(as_text=True)


# -- a store that fails ----------------------------------------------------------------


def test_a_store_that_fails_a_page_is_503_then_the_listing_recovers(
    client: FlaskClient,
    admin_tokens: dict[str, Any],
    store: SessionStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_users(store, "a")
    store.client.delete(store.keys.names(), store.keys.names_built())

    def down(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("gone")

    # The build mark's read fails: 503, and the next page still builds the index.
    monkeypatch.setattr(store.client, "exists", down)
    response = listing(client, admin_tokens)
    assert_problem(response, 503, "store_unavailable")
    assert response.headers["Retry-After"] == "1"
    monkeypatch.undo()
    assert page(client, admin_tokens) == (["a", "root"], None)
    # The records' read fails.
    monkeypatch.setattr(store.client, "pipeline", down)
    assert_problem(listing(client, admin_tokens), 503, "store_unavailable")
    monkeypatch.undo()
    assert page(client, admin_tokens) == (["a", "root"], None)
    assert names(store) == [b"a", b"root"]


# -- races -----------------------------------------------------------------------------


def test_a_name_deleted_and_created_again_while_listings_run(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "a", "c")
    stop = threading.Event()
    pages: list[tuple[list[str], str | None]] = []

    def churn() -> None:
        for _ in range(60):
            store.delete_user("b") if store.get_user("b") else add_users(store, "b")
        stop.set()

    worker = threading.Thread(target=churn)
    worker.start()
    while not stop.is_set():
        pages.append(page(client, admin_tokens))
    worker.join()
    # Whatever a page met of b, those that existed throughout are always there.
    assert all(ids in (["a", "c", "root"], ["a", "b", "c", "root"]) for ids, _ in pages)
    assert all(cursor is None for _, cursor in pages)
    # 60 changes from none: b is gone at the end, and so is its name.
    assert store.get_user("b") is None
    assert page(client, admin_tokens) == (["a", "c", "root"], None)
    assert names(store) == [b"a", b"c", b"root"]


def test_creates_and_deletes_racing_a_reindex_leave_the_index_right(
    store: SessionStore,
) -> None:
    add_users(store, *(f"k{i:03d}" for i in range(50)))

    def churn() -> None:
        for i in range(50):
            store.delete_user(f"k{i:03d}")
            add_users(store, f"n{i:03d}")

    worker = threading.Thread(target=churn)
    worker.start()
    while worker.is_alive():
        store.reindex_names()
    worker.join()
    # Whatever the reindex dropped or added, a user has its name once the change returned.
    expected = sorted(f"n{i:03d}".encode() for i in range(50))
    assert [n for n in names(store) if store.get_user(n.decode()) is not None] == expected
    store.reindex_names()
    assert names(store) == expected


def test_every_cursor_a_page_gives_is_taken_and_the_cli_makes_no_longer_id(
    app: Flask, client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    runner = app.test_cli_runner()

    def create(username: str) -> Any:
        args = ["sessions", "create-user", username, "--password-stdin"]
        return runner.invoke(args=args, input="correct horse battery\n")

    # A username no sign-in takes (over 256 characters) would end a page with
    # a cursor the next page refuses: the listing would be stuck there.
    result = create("a" * 257)
    assert result.exit_code == 1
    assert result.output == "Error: USERNAME must be at most 256 characters\n"
    assert store.get_user("a" * 257) is None
    longest = "a" + "\U0001f600" * 255
    assert create(longest).exit_code == 0
    assert page(client, admin_tokens, limit=1) == ([longest], page_cursor(longest))
    assert page(client, admin_tokens, cursor=page_cursor(longest)) == (["root"], None)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/Ren%E9"),  # Latin-1: not the user Ren\ufffd
        ("get", "/Ren%E9"),
        ("patch", "/Ren%E9"),
        ("get", "/Ren%E9/events"),
        ("get", "/Ren%E9/sessions"),
        ("delete", "/Ren%E9/sessions"),
        ("get", "/%ED%A0%80/events"),  # an encoded lone surrogate
        ("get", "/Ren%C3/events"),  # a sequence cut short
    ],
)
def test_a_user_id_in_the_path_that_is_not_utf8_names_no_user(
    client: FlaskClient,
    auth: Auth,
    admin_tokens: dict[str, Any],
    store: SessionStore,
    method: str,
    path: str,
) -> None:
    # werkzeug reads a %-escape that is not UTF-8 as U+FFFD: every such name
    # would act on this one user.
    target = auth.login("Ren\ufffd")
    # The path as a WSGI server gives it: its bytes unescaped, as Latin-1
    # (the test client would put U+FFFD there itself).
    raw = unquote_to_bytes(USERS + path).decode("latin-1")
    response = getattr(client, method)(
        USERS,
        json={"disabled": True},
        headers=auth.headers(admin_tokens),
        environ_overrides={"PATH_INFO": raw},
    )
    assert_problem(response, 400, "invalid_request")
    assert store.get_user("Ren\ufffd") is not None
    assert client.get("/api/v1/sessions", headers=auth.headers(target)).status_code == 200


def test_a_user_id_in_the_path_that_is_utf8_still_names_its_user(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    auth.login("Ren\ufffd")
    auth.login("René")
    for name in ("Ren\ufffd", "René"):
        raw = (USERS + "/" + name).encode("utf-8").decode("latin-1")
        response = client.get(
            USERS, headers=auth.headers(admin_tokens), environ_overrides={"PATH_INFO": raw}
        )
        assert response.get_json()["id"] == name
        assert client.get(f"{USERS}/{name}", headers=auth.headers(admin_tokens)).status_code == 200


def test_an_over_long_id_already_stored_does_not_stop_the_paging(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "a" * 300)
    ids, cursor = page(client, admin_tokens, limit=1)
    assert (ids, cursor) == (["a" * 300], page_cursor("a" * 300))
    assert page(client, admin_tokens, cursor=cursor) == (["root"], None)
