"""``GET /api/v1/admin/audit``: the audit trail through the admin API, on
SQLite and on a real PostgreSQL; its filters, pages, refusals and the 503
of a database that is gone."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import make_url, text

from sessionsvc.sql.migrate import engine, upgrade
from sessionsvc.sql.query import READ_DEADLINE, STATEMENT_TIMEOUT, encode_cursor
from tests.backends import AppFactory, Backend
from tests.clients import Auth, assert_problem
from tests.databases import create_database, drop_database, event, finishes_within, write
from tests.servers import FreezingProxy, PostgresProcess

AUDIT = "/api/v1/admin/audit"
T0 = datetime(2026, 12, 5, 6, 0, 0, tzinfo=UTC)


@pytest.fixture
def backend() -> Backend:
    """The trail is in SQL: one store (fakeredis) serves its sign-ins."""
    return Backend("fakeredis", f"t-{secrets.token_hex(4)}", server=fakeredis.FakeServer())


@pytest.fixture
def audit_app(make_app: AppFactory, audit_url: str) -> Flask:
    upgrade(audit_url)
    return make_app(SESSIONSVC_AUDIT_URL=audit_url)


@pytest.fixture
def root(audit_app: Flask) -> dict[str, str]:
    """The headers of an admin's token."""
    return admin_headers(audit_app)


def admin_headers(app: Flask) -> dict[str, str]:
    """The headers of the token of ``root``, an admin of ``app``."""
    auth = Auth(app)
    auth.create_user("root", "pw", admin=True)
    return auth.headers(auth.login("root", "pw"))


def row(event_id: str, seconds: int, **values: Any) -> dict[str, Any]:
    return event(event_id, type="session.created", at=T0 + timedelta(seconds=seconds)) | values


SAMPLE = [
    row("e-1", 0),
    row("e-2", 10, type="session.ip_changed", ip="198.51.100.1", session_id="s-2"),
    row("e-3", 20, user_id="bob", account="acc-2", session_id="s-3", ip="2001:db8::1"),
    row("e-4", 30, type="session.revoked", detail={"reason": "admin"}),
]


def get(client: FlaskClient, headers: dict[str, str], query: str = "") -> Any:
    response = client.get(f"{AUDIT}?{query}" if query else AUDIT, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def ids(client: FlaskClient, headers: dict[str, str], query: str = "") -> list[str]:
    page = get(client, headers, query)
    assert page["next_cursor"] is None
    return [found["id"] for found in page["events"]]


def test_the_trail_newest_first_with_user_and_account(
    audit_app: Flask, audit_url: str, root: dict[str, str]
) -> None:
    write(audit_url, *SAMPLE)
    page = get(audit_app.test_client(), root)
    assert [found["id"] for found in page["events"]] == ["e-4", "e-3", "e-2", "e-1"]
    assert page["next_cursor"] is None
    assert page["events"][0] == {
        "id": "e-4",
        "type": "session.revoked",
        "at": "2026-12-05T06:00:30Z",
        "session_id": "s-1",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
        "detail": {"reason": "admin"},
        "user_id": "alice",
        "account": "acc-1",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("user_id=bob", ["e-3"]),
        ("user_id=alice", ["e-4", "e-2", "e-1"]),
        ("session_id=s-1", ["e-4", "e-1"]),
        ("type=session.created", ["e-3", "e-1"]),
        ("ip=198.51.100.1", ["e-2"]),
        # As sessions record addresses: the IPv4-mapped form and another spelling.
        ("ip=::ffff:198.51.100.1", ["e-2"]),
        ("ip=2001:0db8:0:0::1", ["e-3"]),
        ("since=2026-12-05T06:00:10Z", ["e-4", "e-3", "e-2"]),
        ("until=2026-12-05T06:00:10Z", ["e-1"]),
        ("since=2026-12-05T07:00:10%2B01:00&until=2026-12-05T06:00:30Z", ["e-3", "e-2"]),
        ("since=2026-12-05T06:00:10Z&until=2026-12-05T06:00:10Z", []),
        ("user_id=alice&type=session.created&since=2026-12-05T06:00:00Z", ["e-1"]),
        ("user_id=nobody", []),
        ("limit=500&unknown=1", ["e-4", "e-3", "e-2", "e-1"]),
    ],
)
def test_filters(
    audit_app: Flask, audit_url: str, root: dict[str, str], query: str, expected: list[str]
) -> None:
    write(audit_url, *SAMPLE)
    assert ids(audit_app.test_client(), root, query) == expected


def test_pages_across_one_instant_miss_and_repeat_nothing(
    audit_app: Flask, audit_url: str, root: dict[str, str]
) -> None:
    write(audit_url, row("a", 0), *[row(f"t-{n:02d}", 5) for n in range(7)], row("z", 9))
    client = audit_app.test_client()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = get(client, root, query)
        seen += [found["id"] for found in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["z", *[f"t-{n:02d}" for n in reversed(range(7))], "a"]
    assert pages == 3
    # A cursor with a filter: the filter's rows past the cursor's place.
    first = get(client, root, "limit=2")
    assert ids(client, root, f"cursor={first['next_cursor']}&user_id=nobody") == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=ten",
        "limit=-1",
        "limit=1&limit=2",
        "user_id=a&user_id=b",
        "user_id=",
        "session_id=" + "x" * 1025,
        "user_id=a%00b",
        "type=login",
        "type=session.CREATED",
        "ip=not-an-ip",
        "ip=203.0.113.256",
        "since=yesterday",
        "since=2026-12-05T06:00:00",  # no zone
        "since=2026-12-05",  # a date: no zone either
        "until=2026-13-05T06:00:00Z",
        "since=0001-01-01T00:00:00%2B01:00",  # before year 1 in UTC
        "since=" + "2" * 65,
        "since=2026-12-06T00:00:00Z&until=2026-12-05T00:00:00Z",
        "cursor=",
        "cursor=nonsense",
        "cursor=" + encode_cursor((T0, "e-1")) + "A",
        # A position no row can have: text with NUL, which PostgreSQL
        # cannot even compare (a 503, as if the database were down).
        "cursor=" + encode_cursor((T0, "e-1\x00")),
        "user_id=%FF",
    ],
)
def test_bad_values_are_400_invalid_request(
    audit_app: Flask, root: dict[str, str], query: str
) -> None:
    response = audit_app.test_client().get(f"{AUDIT}?{query}", headers=root)
    assert_problem(response, 400, "invalid_request")
    assert response.headers["Cache-Control"] == "no-store"


def test_a_non_admin_gets_403_and_no_token_401(audit_app: Flask, audit_url: str) -> None:
    write(audit_url, *SAMPLE)
    auth = Auth(audit_app)
    client = audit_app.test_client()
    mallory = auth.headers(auth.login("mallory"))
    assert_problem(client.get(AUDIT, headers=mallory), 403, "forbidden")
    assert_problem(client.get(AUDIT), 401, "authorization_required")


def test_without_an_audit_url_the_route_is_not_mounted(
    app: Flask, root_of_app: dict[str, str]
) -> None:
    client = app.test_client()
    assert_problem(client.get(AUDIT, headers=root_of_app), 404, "not_found")
    assert_problem(client.get(AUDIT), 404, "not_found")
    document = client.get("/apispec.json").get_json()
    assert AUDIT not in document["paths"]


def test_with_an_audit_url_the_docs_describe_the_route(audit_app: Flask) -> None:
    document = audit_app.test_client().get("/apispec.json").get_json()
    assert document["paths"][AUDIT]["get"]["operationId"] == "admin_audit"


@pytest.fixture
def root_of_app(app: Flask) -> dict[str, str]:
    return admin_headers(app)


def reading(make_app: AppFactory, url: str) -> tuple[FlaskClient, dict[str, str]]:
    """The client and an admin's headers of an app reading the trail at
    ``url``, with one row ``e-1`` in it, read once (a connection is pooled)."""
    upgrade(url)
    write(url, row("e-1", 0))
    app = make_app(SESSIONSVC_AUDIT_URL=url)
    root, client = admin_headers(app), app.test_client()
    assert ids(client, root) == ["e-1"]
    return client, root


def test_a_sqlite_database_gone_is_503_and_comes_back(make_app: AppFactory, tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    url = f"sqlite:///{folder / 'audit.db'}"
    app = make_app(SESSIONSVC_AUDIT_URL=url)
    root, client = admin_headers(app), app.test_client()
    response = client.get(AUDIT, headers=root)
    body = assert_problem(response, 503, "audit_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert str(folder) not in body["detail"] and "\n" not in body["detail"]
    # The sessions keep working.
    assert client.get("/api/v1/sessions", headers=root).status_code == 200
    folder.mkdir()
    upgrade(url)
    write(url, row("e-1", 0))
    assert ids(client, root) == ["e-1"]


def test_a_sqlite_file_removed_is_503_and_not_made_again(
    make_app: AppFactory, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    client, root = reading(make_app, url)
    path.unlink()
    assert_problem(client.get(AUDIT, headers=root), 503, "audit_unavailable")
    assert not path.exists()  # not an empty trail where the operator's was
    upgrade(url)
    write(url, row("e-2", 0))
    assert ids(client, root) == ["e-2"]


def test_a_postgresql_database_dropped_is_503_and_comes_back(
    make_app: AppFactory, postgres_server: str
) -> None:
    name = f"sessionsvc_test_{secrets.token_hex(6)}"
    url = create_database(postgres_server, name)
    try:
        client, root = reading(make_app, url)
        drop_database(postgres_server, name)
        body = assert_problem(client.get(AUDIT, headers=root), 503, "audit_unavailable")
        assert body["detail"].startswith("the audit database is unavailable: ")
        assert client.get("/api/v1/sessions", headers=root).status_code == 200
        create_database(postgres_server, name)
        upgrade(url)
        write(url, row("e-2", 0))
        assert ids(client, root) == ["e-2"]
    finally:
        drop_database(postgres_server, name)


def test_a_postgresql_server_stopped_is_503_at_once_and_comes_back(
    make_app: AppFactory, own_postgres: PostgresProcess
) -> None:
    url = create_database(own_postgres.url, "audit")
    upgrade(url)
    write(url, row("e-1", 0))
    app = make_app(SESSIONSVC_AUDIT_URL=url)
    root, client = admin_headers(app), app.test_client()
    assert ids(client, root) == ["e-1"]  # a connection is in the pool now
    own_postgres.halt()
    started = time.monotonic()
    response = client.get(AUDIT, headers=root)
    assert time.monotonic() - started < 5  # refused, not waited for
    body = assert_problem(response, 503, "audit_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert body["detail"].startswith("the audit database is unavailable: ")
    assert "\n" not in body["detail"]
    assert client.get("/api/v1/sessions", headers=root).status_code == 200
    own_postgres.resume()
    assert ids(client, root) == ["e-1"]


#: A PostgreSQL database of the test's own (``audit_url``'s), for what only
#: PostgreSQL does.
ON_POSTGRESQL = pytest.mark.parametrize("audit_url", ["postgresql"], indirect=True)


@ON_POSTGRESQL
def test_a_postgresql_table_locked_is_503_in_time_not_a_worker_held(
    make_app: AppFactory, audit_url: str
) -> None:
    # An ALTER TABLE, a VACUUM FULL, a session left in a transaction: the
    # page waits for the lock only so long, then answers.
    locker = engine(audit_url)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locker.begin() as connection:
            connection.execute(text("LOCK TABLE sessionsvc_audit IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(STATEMENT_TIMEOUT + 20)

    holding = threading.Thread(target=hold)
    try:
        client, root = reading(make_app, audit_url)
        holding.start()
        assert locked.wait(10)
        started = time.monotonic()
        response = client.get(AUDIT, headers=root)
        waited = time.monotonic() - started
        release.set()
        holding.join()
        assert waited < STATEMENT_TIMEOUT + 3
        body = assert_problem(response, 503, "audit_unavailable")
        assert body["detail"] == (
            "the audit database is unavailable: canceling statement due to statement timeout"
        )
        assert ids(client, root) == ["e-1"]  # the lock gone, the same pool reads again
    finally:
        release.set()
        if holding.is_alive():
            holding.join()
        locker.dispose()


@ON_POSTGRESQL
def test_the_options_of_a_postgresql_url_are_kept_beside_the_timeout(
    make_app: AppFactory, audit_url: str
) -> None:
    # The operator's own server settings in the URL (here: the trail in a
    # schema of its own) still apply to the API's reads.
    db = engine(audit_url)
    with db.begin() as connection:
        connection.execute(text("CREATE SCHEMA trail"))
    db.dispose()
    url = make_url(audit_url).update_query_dict({"options": "-c search_path=trail"})
    client, root = reading(make_app, url.render_as_string(hide_password=False))
    assert ids(client, root) == ["e-1"]


@ON_POSTGRESQL
def test_a_postgresql_gone_silent_is_503_in_time_not_a_thread_held(
    make_app: AppFactory, audit_url: str
) -> None:
    # A server that stops answering on a pooled connection (paused, a
    # network that drops everything): no statement timeout of its own can
    # end the wait; a page gives up, or each held a server thread for ever.
    direct = make_url(audit_url)
    proxy = FreezingProxy((direct.host or "127.0.0.1", direct.port or 5432))
    url = direct.set(port=proxy.port).render_as_string(hide_password=False)
    try:
        client, root = reading(make_app, url)
        proxy.freeze()
        asking = partial(client.get, AUDIT, headers=root)
        answer, waited = finishes_within(asking, READ_DEADLINE + 10)
        assert READ_DEADLINE - 1 < waited < READ_DEADLINE + 3
        body = assert_problem(answer, 503, "audit_unavailable")
        assert body["detail"] == (
            f"the audit database is unavailable: no answer in {READ_DEADLINE} s"
        )
        proxy.thaw()
        assert ids(client, root) == ["e-1"]  # a new connection, at once
    finally:
        proxy.close()


def test_the_blueprints_import_without_sqlalchemy() -> None:
    # An install without the audit extra: importing SQLAlchemy fails.
    code = (
        "import sys; sys.modules['sqlalchemy'] = None; sys.modules['alembic'] = None\n"
        "import sessionsvc, sessionsvc.admin, sessionsvc.app, sessionsvc.console\n"
        "print(sorted(m for m in sys.modules if m.startswith('sessionsvc.sql')))"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]", ran.stderr
