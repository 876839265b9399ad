"""Reading the audit trail (sessionsvc.sql.query): the filters, newest-first
keyset pages, the cursor, the export and the reader, on SQLite and on a
real PostgreSQL."""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, make_url
from sqlalchemy import event as sqlalchemy_event

from sessionsvc.errors import AuditUnavailable, SessionsvcError
from sessionsvc.sql import migrate
from sessionsvc.sql.migrate import engine, upgrade
from sessionsvc.sql.query import (
    AuditFilter,
    AuditReader,
    decode_cursor,
    encode_cursor,
    export_lines,
    find_events,
    iter_events,
)
from tests.databases import create_database, drop_database, event, write

T0 = datetime(2026, 12, 5, 6, 0, 0, tzinfo=UTC)


def row(event_id: str, seconds: int = 0, **values: Any) -> dict[str, Any]:
    """A ``session.created`` event ``seconds`` after :data:`T0`."""
    return event(event_id, type="session.created", at=T0 + timedelta(seconds=seconds)) | values


#: Six events of two users, two sessions, two addresses, three types.
SAMPLE = [
    row("e-1", 0),
    row("e-2", 10, type="session.ip_changed", ip="198.51.100.1", detail={"to": "198.51.100.1"}),
    row("e-3", 20, user_id="bob", account="acc-2", session_id="s-2"),
    row("e-4", 30, type="session.revoked", detail={"reason": "user"}),
    row("e-5", 40, user_id="bob", account="acc-2", session_id="s-2", type="session.revoked"),
    row("e-6", 50, ip="198.51.100.1"),
]


@pytest.fixture
def db(audit_url: str) -> Any:
    upgrade(audit_url)
    made = engine(audit_url)
    yield made
    made.dispose()


def ids(connection: Connection, filters: AuditFilter, limit: int = 100) -> list[str]:
    found, after = find_events(connection, filters, limit=limit)
    assert after is None
    return [event.id for event in found]


def test_each_filter_and_their_combinations_newest_first(audit_url: str, db: Any) -> None:
    write(audit_url, *SAMPLE)
    with db.connect() as connection:
        assert ids(connection, AuditFilter()) == ["e-6", "e-5", "e-4", "e-3", "e-2", "e-1"]
        assert ids(connection, AuditFilter(user_id="bob")) == ["e-5", "e-3"]
        assert ids(connection, AuditFilter(session_id="s-1")) == ["e-6", "e-4", "e-2", "e-1"]
        assert ids(connection, AuditFilter(type="session.revoked")) == ["e-5", "e-4"]
        assert ids(connection, AuditFilter(ip="198.51.100.1")) == ["e-6", "e-2"]
        assert ids(connection, AuditFilter(user_id="alice", type="session.revoked")) == ["e-4"]
        assert ids(connection, AuditFilter(user_id="bob", ip="198.51.100.1")) == []
        assert ids(connection, AuditFilter(user_id="nobody")) == []


def test_since_is_inclusive_and_until_exclusive(audit_url: str, db: Any) -> None:
    write(audit_url, *SAMPLE)
    with db.connect() as connection:
        at = T0 + timedelta(seconds=20)
        assert ids(connection, AuditFilter(since=at)) == ["e-6", "e-5", "e-4", "e-3"]
        assert ids(connection, AuditFilter(until=at)) == ["e-2", "e-1"]
        window = AuditFilter(since=at, until=at + timedelta(seconds=20))
        assert ids(connection, window) == ["e-4", "e-3"]
        # Another zone names the same instant.
        paris = timezone(timedelta(hours=1))
        assert ids(connection, AuditFilter(since=at.astimezone(paris))) == ids(
            connection, AuditFilter(since=at)
        )
        assert ids(connection, AuditFilter(since=at, until=at)) == []


def test_pages_of_one_instant_are_ordered_by_id_none_skipped_or_repeated(
    audit_url: str, db: Any
) -> None:
    # Twelve events in the same microsecond, and three around them.
    same = [row(f"t-{n:02d}", 5) for n in range(12)]
    write(audit_url, row("a", 4), *same, row("z", 6), row("zz", 6))
    expected = ["zz", "z", *[f"t-{n:02d}" for n in reversed(range(12))], "a"]
    with db.connect() as connection:
        for limit in (1, 2, 5, 7, 15, 16):
            seen: list[str] = []
            before = None
            while True:
                found, before = find_events(connection, AuditFilter(), limit=limit, before=before)
                assert 1 <= len(found) <= limit
                seen += [event.id for event in found]
                if before is None:
                    break
                # The cursor names the last row of the page.
                assert before == (found[-1].at, found[-1].id)
            assert seen == expected, limit


def test_a_page_that_is_exactly_full_says_it_is_the_last(audit_url: str, db: Any) -> None:
    write(audit_url, *SAMPLE)
    with db.connect() as connection:
        found, after = find_events(connection, AuditFilter(user_id="bob"), limit=2)
        assert [event.id for event in found] == ["e-5", "e-3"] and after is None
        found, after = find_events(connection, AuditFilter(user_id="bob"), limit=1)
        assert [event.id for event in found] == ["e-5"] and after == (found[0].at, "e-5")
        with pytest.raises(ValueError, match="limit"):
            find_events(connection, AuditFilter(), limit=0)


def test_the_json_is_the_event_with_user_and_account(audit_url: str, db: Any) -> None:
    write(audit_url, SAMPLE[1], row("e-9", 1, session_id=None, ip=None, user_agent=None))
    with db.connect() as connection:
        found, _ = find_events(connection, AuditFilter(), limit=10)
    assert [event.to_json() for event in found] == [
        {
            "id": "e-2",
            "type": "session.ip_changed",
            "at": "2026-12-05T06:00:10Z",
            "session_id": "s-1",
            "ip": "198.51.100.1",
            "user_agent": "Mozilla/5.0",
            "detail": {"to": "198.51.100.1"},
            "user_id": "alice",
            "account": "acc-1",
        },
        {
            "id": "e-9",
            "type": "session.created",
            "at": "2026-12-05T06:00:01Z",
            "session_id": None,
            "ip": None,
            "user_agent": None,
            "detail": {},
            "user_id": "alice",
            "account": "acc-1",
        },
    ]


def test_a_time_with_microseconds_keeps_them(audit_url: str, db: Any) -> None:
    write(audit_url, row("e-1", 0, at=T0 + timedelta(microseconds=250)))
    with db.connect() as connection:
        [found], _ = find_events(connection, AuditFilter(), limit=1)
    assert found.to_json()["at"] == "2026-12-05T06:00:00.000250Z"


def test_the_account_tells_a_recreated_names_events_apart(audit_url: str, db: Any) -> None:
    write(audit_url, row("old", 0, account="acc-old"), row("new", 10, account="acc-new"))
    with db.connect() as connection:
        found, _ = find_events(connection, AuditFilter(user_id="alice"), limit=10)
    assert [(event.id, event.to_json()["account"]) for event in found] == [
        ("new", "acc-new"),
        ("old", "acc-old"),
    ]


def test_iter_events_reads_every_row_oldest_first_in_pages(audit_url: str, db: Any) -> None:
    write(audit_url, *SAMPLE, *[row(f"t-{n}", 20, user_id="carol") for n in range(5)])
    with db.connect() as connection:
        every = [event.id for event in iter_events(connection, AuditFilter(), page=2)]
        alice = [event.id for event in iter_events(connection, AuditFilter(user_id="alice"))]
    assert every == ["e-1", "e-2", "e-3", *[f"t-{n}" for n in range(5)], "e-4", "e-5", "e-6"]
    assert alice == ["e-1", "e-2", "e-4", "e-6"]


def test_export_lines_writes_one_json_event_per_line(audit_url: str, db: Any) -> None:
    write(audit_url, *SAMPLE, row("e-7", 60, user_agent="Navigateur — ünïcode"))
    out = io.StringIO()
    assert export_lines(audit_url, AuditFilter(since=T0 + timedelta(seconds=40)), out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["id"] for line in lines] == ["e-5", "e-6", "e-7"]
    assert lines[2]["user_agent"] == "Navigateur — ünïcode"
    assert set(lines[0]) == {
        *("id", "type", "at", "session_id", "ip", "user_agent", "detail", "user_id", "account")
    }
    assert export_lines(audit_url, AuditFilter(user_id="nobody"), io.StringIO()) == 0


def test_the_cursor_round_trips_and_is_opaque_base64url() -> None:
    position = (T0 + timedelta(microseconds=7), "évé/nt+1")
    cursor = encode_cursor(position)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor) == position
    micros = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) + 7
    assert json.loads(_b64(cursor)) == [micros, "évé/nt+1"]


def _b64(cursor: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def _cursor(value: Any) -> str:
    import base64

    raw = json.dumps(value).encode() if not isinstance(value, bytes) else value
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "a",
        "é",
        encode_cursor((T0, "e-1")) + "=",
        encode_cursor((T0, "e-1")) + "A",
        _cursor(b"\xff\xfe"),
        _cursor("not a list"),
        _cursor([1, 2]),
        _cursor([True, "e-1"]),
        _cursor([1.5, "e-1"]),
        _cursor([1, ""]),
        _cursor([1, "x" * 65]),
        _cursor([1, "e-1", 3]),
        _cursor([10**20, "e-1"]),
        _cursor([-(10**20), "e-1"]),
        # Valid JSON, not as encode_cursor spells it.
        _cursor([1, "e-1"]),
        "A" * 600,
    ],
)
def test_a_cursor_not_made_by_encode_cursor_is_a_value_error(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(cursor)


def test_audit_unavailable_is_one_class_for_the_api_and_the_commands() -> None:
    assert migrate.AuditUnavailable is AuditUnavailable
    assert issubclass(AuditUnavailable, SessionsvcError)
    assert (AuditUnavailable.status, AuditUnavailable.code) == (503, "audit_unavailable")
    assert AuditUnavailable.headers == {"Retry-After": "1"}


def test_the_reader_pages_with_cursors(audit_url: str, db: Any) -> None:
    write(audit_url, *SAMPLE)
    reader = AuditReader(audit_url)
    try:
        events, cursor = reader.page(AuditFilter(user_id="alice"), 3, None)
        assert [event["id"] for event in events] == ["e-6", "e-4", "e-2"]
        assert cursor is not None
        events, after = reader.page(AuditFilter(user_id="alice"), 3, cursor)
        assert [event["id"] for event in events] == ["e-1"] and after is None
        with pytest.raises(ValueError, match="not a cursor"):
            reader.page(AuditFilter(), 3, cursor + "x")
    finally:
        reader.close()


def test_the_reader_creates_no_engine_until_used(tmp_path: Path) -> None:
    reader = AuditReader(f"sqlite:///{tmp_path / 'none' / 'audit.db'}")
    assert reader._engine is None
    with pytest.raises(AuditUnavailable):
        reader.page(AuditFilter(), 1, None)
    assert reader._engine is not None
    reader.close()


def test_sqlite_down_is_unavailable_without_the_path_and_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    url = f"sqlite:///{folder / 'audit.db'}"
    reader = AuditReader(url)
    try:
        with pytest.raises(AuditUnavailable) as caught:
            reader.page(AuditFilter(), 10, None)
        assert "\n" not in caught.value.detail and str(folder) not in caught.value.detail
        folder.mkdir()
        # No file in the folder: unavailable, and none is made by reading.
        with pytest.raises(AuditUnavailable, match="unable to open database file"):
            reader.page(AuditFilter(), 10, None)
        assert list(folder.iterdir()) == []
        # A file with no table yet is unavailable too.
        (folder / "audit.db").touch()
        with pytest.raises(AuditUnavailable, match="no such table"):
            reader.page(AuditFilter(), 10, None)
        upgrade(url)
        write(url, row("e-1"))
        assert [event["id"] for event in reader.page(AuditFilter(), 10, None)[0]] == ["e-1"]
        (folder / "audit.db").unlink()
        folder.rmdir()
        with pytest.raises(AuditUnavailable):
            reader.page(AuditFilter(), 10, None)
    finally:
        reader.close()


def test_postgresql_down_is_unavailable_without_the_password_and_recovers(
    postgres_server: str,
) -> None:
    name = f"sessionsvc_test_{secrets.token_hex(6)}"
    url = create_database(postgres_server, name)
    # A password in the URL (the server trusts the user, and ignores it).
    secret = "s3cret-pw-" + secrets.token_hex(4)
    url = make_url(url).set(password=secret).render_as_string(hide_password=False)
    reader = AuditReader(url)
    try:
        upgrade(url)
        write(url, row("e-1"))
        assert [event["id"] for event in reader.page(AuditFilter(), 10, None)[0]] == ["e-1"]
        drop_database(postgres_server, name)
        with pytest.raises(AuditUnavailable) as caught:
            reader.page(AuditFilter(), 10, None)
        assert secret not in caught.value.detail and "\n" not in caught.value.detail
        assert caught.value.detail.startswith("the audit database is unavailable: ")
        create_database(postgres_server, name)
        # The database is back, without its table: still unavailable.
        with pytest.raises(AuditUnavailable):
            reader.page(AuditFilter(), 10, None)
        upgrade(url)
        write(url, row("e-2"))
        assert [event["id"] for event in reader.page(AuditFilter(), 10, None)[0]] == ["e-2"]
    finally:
        reader.close()
        drop_database(postgres_server, name)


def plan(connection: Connection, filters: AuditFilter) -> str:
    """The database's plan for the statement find_events runs, as it runs it."""
    ran: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        ran.append((args[2], args[3]))  # the statement and its parameters

    sqlalchemy_event.listen(connection, "before_cursor_execute", capture)
    try:
        find_events(connection, filters, limit=10, before=(T0, "e-1"))
    finally:
        sqlalchemy_event.remove(connection, "before_cursor_execute", capture)
    [(statement, parameters)] = ran
    if connection.dialect.name == "sqlite":
        found = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(line[-1]) for line in found)
    # An empty table is read whole by choice: ask for the plan that avoids it.
    connection.exec_driver_sql("SET enable_seqscan = off")
    found = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(line[0]) for line in found)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (AuditFilter(), "sessionsvc_audit_at"),
        (AuditFilter(since=T0, until=T0 + timedelta(days=1)), "sessionsvc_audit_at"),
        (AuditFilter(user_id="alice"), "sessionsvc_audit_user"),
        (AuditFilter(user_id="alice", since=T0), "sessionsvc_audit_user"),
        (AuditFilter(session_id="s-1"), "sessionsvc_audit_session"),
        (AuditFilter(type="session.created"), "sessionsvc_audit_type"),
        (AuditFilter(ip="203.0.113.7"), "sessionsvc_audit_ip"),
    ],
)
def test_each_query_reads_an_index_in_its_order(db: Any, filters: AuditFilter, index: str) -> None:
    with db.connect() as connection:
        found = plan(connection, filters)
    assert index in found, found
    # Read in the index's order: no sort of the rows found.
    assert "TEMP B-TREE" not in found and "Sort" not in found, found
    if db.dialect.name == "sqlite":
        # The keyset is a range of the index, not a filter of every entry.
        assert "(at,id)<(?,?)" in found or "at>?" in found, found


def test_a_pool_with_no_connection_free_in_time_is_unavailable(tmp_path: Path) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool

    db = create_engine(
        f"sqlite:///{tmp_path / 'a.db'}",
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.01,
    )
    unavailable = r"^the audit database is unavailable: QueuePool limit"
    held = db.connect()  # the pool's one connection
    try:
        with pytest.raises(AuditUnavailable, match=unavailable), migrate.database_errors():
            db.connect()
    finally:
        held.close()
        db.dispose()
