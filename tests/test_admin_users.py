"""The admins' listing of the user store's users, and a user's events for admins."""

from __future__ import annotations

import logging
import secrets
from typing import Any, cast

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import SessionManager, current_manager
from sessionsvc.models import User
from sessionsvc.payloads import page_cursor
from sessionsvc.store import SessionStore
from sessionsvc.store.keys import NAMES_TAG, user_of_tag, user_tag
from tests.clients import Auth, assert_problem, fast_hash

USERS = "/api/v1/admin/users"


@pytest.fixture
def admin_tokens(auth: Auth) -> dict[str, Any]:
    auth.create_user("root", "pw", admin=True)
    return auth.login("root", "pw")


@pytest.fixture
def store(app: Flask) -> SessionStore:
    with app.app_context():
        return current_manager().store


def add_users(store: SessionStore, *names: str) -> None:
    for name in names:
        account = secrets.token_urlsafe(6)
        assert store.create_user(User(id=name, password_hash=fast_hash("pw"), account=account))


def page(client: FlaskClient, tokens: dict[str, Any], **query: Any) -> tuple[list[str], str | None]:
    response = client.get(USERS, query_string=query, headers=Auth.headers(tokens))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"users", "next_cursor"}
    return [user["id"] for user in body["users"]], body["next_cursor"]


def every_page(client: FlaskClient, tokens: dict[str, Any], **query: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        ids, cursor = page(client, tokens, **query, **({"cursor": cursor} if cursor else {}))
        pages.append(ids)
        if cursor is None:
            return pages


def names(store: SessionStore) -> list[bytes]:
    """The name index as it is in the store."""
    key = store.keys.names()
    assert key == f"{store.keys.prefix}:{{{NAMES_TAG}}}:names"
    return list(cast(Any, store.client).execute_command("ZRANGE", key, 0, -1, NEVER_DECODE=True))


def add_stale(store: SessionStore, *members: bytes) -> None:
    """Names in the index without a record, as a crash between the steps leaves them."""
    store.client.zadd(store.keys.names(), cast(Any, dict.fromkeys(members, 0)))


def test_no_user_key_has_the_name_index_tag() -> None:
    # Unpadded base64 is never 1 more than a multiple of 4 characters long.
    assert len(NAMES_TAG) % 4 == 1
    assert user_of_tag(NAMES_TAG) is None
    assert all(len(user_tag("x" * n)) % 4 != 1 for n in range(64))


def test_users_by_id_in_utf8_byte_order_as_the_user_route_shows_them(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    # Code-point order and UTF-8 byte order differ between U+FFFD and an
    # astral character: bytes ef bf bd < f0 9f 98 80.
    add_users(store, "\U0001f600", "\ufffd", "bob", "Bob", "alice")
    ids, cursor = page(client, admin_tokens)
    assert ids == ["Bob", "alice", "bob", "root", "\ufffd", "\U0001f600"]
    assert cursor is None
    response = client.get(USERS, headers=Auth.headers(admin_tokens)).get_json()
    one = client.get(f"{USERS}/alice", headers=Auth.headers(admin_tokens)).get_json()
    assert response["users"][1] == one


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ["a:b", "ab", "abc", "a{b}", "b", "root", "é", "éa", "😀x"]),
        ("a", ["a:b", "ab", "abc", "a{b}"]),
        ("a:", ["a:b"]),
        ("a{", ["a{b}"]),
        ("a{b}", ["a{b}"]),
        ("ab", ["ab", "abc"]),
        ("A", []),
        ("é", ["é", "éa"]),
        ("😀", ["😀x"]),
        ("zzz", []),
    ],
)
def test_prefix(
    client: FlaskClient,
    admin_tokens: dict[str, Any],
    store: SessionStore,
    prefix: str,
    expected: list[str],
) -> None:
    add_users(store, "abc", "ab", "a:b", "a{b}", "b", "é", "éa", "😀x")
    assert page(client, admin_tokens, prefix=prefix) == (expected, None)


def test_a_lone_surrogate_in_ids_and_prefixes(store: SessionStore) -> None:
    lone = "\ud800"
    add_users(store, lone, lone + "x", "a" + lone, "a")
    users, after = store.list_users(prefix=lone, after=None, limit=10)
    assert ([u.id for u in users], after) == ([lone, lone + "x"], None)
    users, after = store.list_users(prefix="", after=None, limit=2)
    assert ([u.id for u in users], after) == (["a", "a" + lone], "a" + lone)
    users, after = store.list_users(prefix="", after=after, limit=2)
    # ed a0 80 (the surrogate) sorts after every other id here.
    assert ([u.id for u in users], after) == ([lone, lone + "x"], None)


def test_250_users_in_3_pages_of_100(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    created = [f"user{i:03d}" for i in range(249)]
    add_users(store, *created)
    pages = every_page(client, admin_tokens, limit=100)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [user for ids in pages for user in ids] == ["root", *created]
    # The same walk, by prefix and a page size that divides it exactly.
    assert [len(p) for p in every_page(client, admin_tokens, prefix="user", limit=83)] == [
        83,
        83,
        83,
    ]


def test_a_cursor_is_the_last_id_and_the_next_page_starts_after_it(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "a", "b", "c")
    assert page(client, admin_tokens, limit=2) == (["a", "b"], page_cursor("b"))
    # Deleting the cursor's user does not lose the place.
    store.delete_user("b")
    assert page(client, admin_tokens, limit=2, cursor=page_cursor("b")) == (["c", "root"], None)
    # A cursor before the prefix starts at the prefix.
    assert page(client, admin_tokens, prefix="r", cursor=page_cursor("a")) == (["root"], None)


def test_a_deleted_user_goes_and_a_new_account_of_the_name_is_listed_once(
    client: FlaskClient, admin_tokens: dict[str, Any], store: SessionStore
) -> None:
    add_users(store, "alice")
    before = store.get_user("alice")
    assert before is not None
    assert store.delete_user("alice") == []
    assert page(client, admin_tokens) == (["root"], None)
    add_users(store, "alice")
    response = client.get(USERS, headers=Auth.headers(admin_tokens)).get_json()
    assert [u["id"] for u in response["users"]] == ["alice", "root"]
    after = store.get_user("alice")
    assert after is not None and after.account != before.account
    assert response["users"][0] == after.to_json()


def test_a_name_without_a_record_is_skipped_and_repaired(
    client: FlaskClient,
    admin_tokens: dict[str, Any],
    store: SessionStore,
) -> None:
    add_users(store, "a", "c", "e")
    stale = [b"b", b"b1", b"b2", b"d"]
    add_stale(store, *stale)
    # The page reads on past the stale names and is still full.
    assert page(client, admin_tokens, limit=3) == (["a", "c", "e"], page_cursor("e"))
    assert names(store) == [b"a", b"c", b"e", b"root"]


def test_a_page_reads_a_bounded_number_of_rounds_and_the_next_goes_on(
    client: FlaskClient,
    admin_tokens: dict[str, Any],
    store: SessionStore,
) -> None:
    add_users(store, "a", "c")
    add_stale(store, *(f"b{i}".encode() for i in range(9)))
    # a and b0, then one stale name a round: PAGE_ROUNDS (4) rounds end at b3,
    # and the page is short although more users follow.
    assert page(client, admin_tokens, limit=1) == (["a"], page_cursor("b3"))
    assert names(store) == [b"a", *(f"b{i}".encode() for i in range(4, 9)), b"c", b"root"]
    # Two stale names a round (b4 to b8), then c and root: a whole page.
    after_b3 = page(client, admin_tokens, limit=1, cursor=page_cursor("b3"))
    assert after_b3 == (["c"], page_cursor("c"))
    assert names(store) == [b"a", b"c", b"root"]
    # Repaired as they were read: the same walk now skips nothing.
    assert every_page(client, admin_tokens, limit=1) == [["a"], ["c"], ["root"]]


def test_a_stale_name_whose_user_is_created_meanwhile_is_kept(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_users(store, "a")
    add_stale(store, b"b")
    read = store._records

    def create_after_reading(user_ids: list[str]) -> list[User | None]:
        records = read(user_ids)
        add_users(store, "b")  # between the listing's read and its repair
        return records

    monkeypatch.setattr(store, "_records", create_after_reading)
    assert [u.id for u in store.list_users(prefix="", after=None, limit=5)[0]] == ["a"]
    monkeypatch.undo()
    assert [u.id for u in store.list_users(prefix="", after=None, limit=5)[0]] == ["a", "b"]


def test_a_store_that_fails_after_the_script_does_not_fail_the_change(
    client: FlaskClient,
    admin_tokens: dict[str, Any],
    store: SessionStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_users(store, "a")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("the index's node is gone")

    with caplog.at_level(logging.WARNING, logger="sessionsvc"):
        # The record is deleted; its name stays, for a listing to repair.
        monkeypatch.setattr(store.client, "zrem", down)
        assert store.delete_user("a") == []
        monkeypatch.undo()
        assert store.get_user("a") is None
        assert page(client, admin_tokens) == (["root"], None)
        assert names(store) == [b"root"]
        # The user is created; its name is there from before the script.
        zadd = store.client.zadd

        def then_down(*args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(store.client, "zadd", down)
            return zadd(*args, **kwargs)

        monkeypatch.setattr(store.client, "zadd", then_down)
        add_users(store, "b")
        monkeypatch.undo()
        assert page(client, admin_tokens) == (["b", "root"], None)
    missed = [r.getMessage() for r in caplog.records if "missed a change" in r.getMessage()]
    assert missed == [
        f"the user store's name index missed a change of user {user!r} "
        "(flask sessions reindex-users repairs it)"
        for user in ("a", "b")
    ]


def test_the_index_is_built_from_the_records_on_first_listing(
    client: FlaskClient,
    admin_tokens: dict[str, Any],
    store: SessionStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_users(store, "b", "a")
    # As a store of an older version left it: records, no index, no mark.
    store.client.delete(store.keys.names(), store.keys.names_built())
    with caplog.at_level(logging.INFO, logger="sessionsvc"):
        assert page(client, admin_tokens) == (["a", "b", "root"], None)
        assert page(client, admin_tokens) == (["a", "b", "root"], None)
    built = [r.getMessage() for r in caplog.records if "name index" in r.getMessage()]
    assert built == ["built the user store's name index: 3 users added"]
    assert store.client.get(store.keys.names_built()) == "1"
    assert names(store) == [b"a", b"b", b"root"]


def test_reindex_adds_the_missing_and_drops_the_stale(store: SessionStore) -> None:
    add_users(store, "a", "b")
    store.client.zrem(store.keys.names(), b"a")
    add_stale(store, b"gone")
    assert store.reindex_names() == (1, 1)
    assert names(store) == [b"a", b"b"]
    assert store.reindex_names() == (0, 0)


def test_the_reindex_command_prints_its_counts(app: Flask, store: SessionStore) -> None:
    add_users(store, "a", "b")
    store.client.delete(store.keys.names(), store.keys.names_built())
    add_stale(store, b"gone", b"b")
    result = app.test_cli_runner().invoke(args=["sessions", "reindex-users"])
    assert result.exit_code == 0, result.output
    assert result.output == "name index rebuilt: 1 users added, 1 stale names dropped\n"
    assert names(store) == [b"a", b"b"]
    assert store.client.get(store.keys.names_built()) == "1"


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"limit": ["1", "2"]},
        {"cursor": "!"},
        {"cursor": ""},
        {"cursor": "YQ="},  # padded: not one this API makes
        {"cursor": "_w"},  # 0xff: not UTF-8
        {"cursor": page_cursor("x" * 257)},
        {"prefix": "x" * 257},
        {"prefix": ["a", "b"]},
    ],
)
def test_bad_queries_are_400(
    client: FlaskClient, admin_tokens: dict[str, Any], query: dict[str, Any]
) -> None:
    response = client.get(USERS, query_string=query, headers=Auth.headers(admin_tokens))
    assert_problem(response, 400, "invalid_request")


def test_the_longest_prefix_and_cursor_are_accepted(
    client: FlaskClient, admin_tokens: dict[str, Any]
) -> None:
    longest = "é" * 256
    assert page(client, admin_tokens, prefix=longest) == ([], None)
    assert page(client, admin_tokens, cursor=page_cursor(longest)) == ([], None)


@pytest.mark.parametrize("path", ["", "/alice/events"])
def test_non_admins_get_403_and_no_token_401(client: FlaskClient, auth: Auth, path: str) -> None:
    mallory = auth.login("mallory")
    assert_problem(client.get(USERS + path, headers=auth.headers(mallory)), 403, "forbidden")
    assert_problem(client.get(USERS + path), 401, "authorization_required")


def test_an_admin_sees_a_users_events_as_the_user_does(
    client: FlaskClient, auth: Auth, admin_tokens: dict[str, Any]
) -> None:
    alice = auth.login("alice")
    auth.login("alice")
    own = client.get("/api/v1/sessions/events?limit=1", headers=auth.headers(alice))
    seen = client.get(f"{USERS}/alice/events?limit=1", headers=auth.headers(admin_tokens))
    assert seen.status_code == 200
    assert seen.get_json() == own.get_json()
    assert len(seen.get_json()["events"]) == 1
    every = client.get(f"{USERS}/alice/events", headers=auth.headers(admin_tokens)).get_json()
    assert [e["type"] for e in every["events"]] == ["session.created", "session.created"]
    nobody = client.get(f"{USERS}/nobody/events", headers=auth.headers(admin_tokens))
    assert nobody.get_json() == {"events": []}
    bad = client.get(f"{USERS}/alice/events?limit=201", headers=auth.headers(admin_tokens))
    assert_problem(bad, 400, "invalid_request")


def test_a_host_app_has_the_events_route_and_no_users_listing() -> None:
    app = Flask("host")
    app.config.update(JWT_SECRET_KEY=secrets.token_hex(32), SESSIONSVC_KEY_PREFIX="host")
    sessions = SessionManager(
        app, redis_client=fakeredis.FakeRedis(decode_responses=True), admin_routes=True
    )
    sessions.admin_loader(lambda user_id, claims: user_id == "root")
    with app.test_request_context():
        root = sessions.open("root")
        sessions.open("alice")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {root.access_token}"}
    events = client.get(f"{USERS}/alice/events", headers=headers)
    assert [e["type"] for e in events.get_json()["events"]] == ["session.created"]
    assert_problem(client.get(USERS, headers=headers), 404, "not_found")
