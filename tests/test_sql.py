"""The audit trail's SQL package (sessionsvc.sql): the schema its migrations
create, the writes, and the ``flask sessions audit`` commands, on SQLite and
on a real PostgreSQL."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import column, inspect, make_url, select, table

from sessionsvc import create_app
from sessionsvc.settings import ConfigError, Settings
from sessionsvc.sql.events import AuditDatabase, RowsRefused, insert_events
from sessionsvc.sql.migrate import (
    CONNECT_TIMEOUT,
    AuditUnavailable,
    SchemaOutdated,
    engine,
    head,
    require_current,
    schema_state,
    upgrade,
)
from sessionsvc.sql.tables import INDEXES, VERSION_TABLE, metadata
from tests.clients import JWT_KEY
from tests.databases import audit_rows, event, finishes_within, write
from tests.servers import FreezingProxy, free_port


def test_upgrade_creates_the_table_and_the_indexes_of_the_queries(audit_url: str) -> None:
    upgrade(audit_url)
    db = engine(audit_url)
    try:
        seen = inspect(db)
        assert set(seen.get_table_names()) == {"sessionsvc_audit", VERSION_TABLE}
        columns = {column["name"] for column in seen.get_columns("sessionsvc_audit")}
        assert columns == {
            *("id", "type", "at", "user_id", "account"),
            *("session_id", "ip", "user_agent", "detail"),
        }
        assert seen.get_pk_constraint("sessionsvc_audit")["constrained_columns"] == ["id"]
        indexes = {
            index["name"]: index["column_names"] for index in seen.get_indexes("sessionsvc_audit")
        }
    finally:
        db.dispose()
    assert indexes == {
        "sessionsvc_audit_at": ["at", "id"],
        "sessionsvc_audit_user": ["user_id", "at", "id"],
        "sessionsvc_audit_session": ["session_id", "at", "id"],
        "sessionsvc_audit_type": ["type", "at", "id"],
        "sessionsvc_audit_ip": ["ip", "at", "id"],
    }
    # The table the code describes is the one the migration made.
    assert set(indexes) == INDEXES


def test_schema_state_before_and_after_and_a_second_upgrade_changes_nothing(
    audit_url: str,
) -> None:
    assert head() == "0001"
    assert schema_state(audit_url) == (None, "0001")
    upgrade(audit_url)
    assert schema_state(audit_url) == ("0001", "0001")
    write(audit_url, event("e-1"))
    upgrade(audit_url)
    assert schema_state(audit_url) == ("0001", "0001")
    assert [row["id"] for row in audit_rows(audit_url)] == ["e-1"]


def test_the_migrations_make_the_table_the_code_describes(audit_url: str) -> None:
    upgrade(audit_url)
    db = engine(audit_url)
    try:
        with db.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, metadata)
    finally:
        db.dispose()
    # The version table is Alembic's, not the code's.
    assert [d for d in differences if d[0] != "remove_table"] == []
    assert [d[1].name for d in differences] == [VERSION_TABLE]


def test_only_a_current_schema_is_written_to(audit_url: str) -> None:
    with pytest.raises(SchemaOutdated) as missing:
        require_current(audit_url)
    assert str(missing.value) == (
        "the audit schema does not exist yet: run flask sessions audit upgrade"
    )
    upgrade(audit_url)
    require_current(audit_url)
    set_revision(audit_url, "0000")
    with pytest.raises(SchemaOutdated) as outdated:
        require_current(audit_url)
    assert str(outdated.value) == (
        "the audit schema is at revision 0000, this version needs 0001: "
        "run flask sessions audit upgrade"
    )


def set_revision(url: str, revision: str) -> None:
    """Record another revision, as an older version of the package would have left it."""
    version = table(VERSION_TABLE, column("version_num"))
    db = engine(url)
    try:
        with db.begin() as connection:
            connection.execute(version.update().values(version_num=revision))
    finally:
        db.dispose()


def test_the_revision_is_kept_in_a_version_table_of_its_own(audit_url: str) -> None:
    upgrade(audit_url)
    db = engine(audit_url)
    try:
        with db.connect() as connection:
            # A host's own Alembic (alembic_version) is left alone.
            assert "alembic_version" not in inspect(connection).get_table_names()
            version = table(VERSION_TABLE, column("version_num"))
            found = connection.execute(select(version.c.version_num)).all()
    finally:
        db.dispose()
    assert found == [("0001",)]


def test_a_redelivered_event_is_stored_once(audit_url: str) -> None:
    upgrade(audit_url)
    assert write(audit_url, event("e-1"), event("e-2", type="logout")) == 2
    assert write(audit_url, event("e-2", type="logout"), event("e-3")) == 1
    assert write(audit_url) == 0
    assert [(row["id"], row["type"]) for row in audit_rows(audit_url)] == [
        ("e-1", "login"),
        ("e-2", "logout"),
        ("e-3", "login"),
    ]


def test_sqlite_reads_while_a_write_is_open(tmp_path: Path) -> None:
    # Write-ahead-log mode: the API's query does not wait for (or fail on)
    # a writer's transaction in progress, and sees what was committed.
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    write(url, event("e-1"))
    db = engine(url)
    try:
        with db.begin() as writing:
            insert_events(writing, [event("e-2")])
            assert [row["id"] for row in audit_rows(url)] == ["e-1"]
        assert [row["id"] for row in audit_rows(url)] == ["e-1", "e-2"]
        with db.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    finally:
        db.dispose()
    assert mode == "wal"


def test_the_detail_round_trips_with_non_ascii_text(audit_url: str) -> None:
    upgrade(audit_url)
    detail = {"city": "Zürich", "name": "Łukasz 李", "new": True, "n": [1, 2.5, None]}
    write(audit_url, event("e-1", detail=detail, user_agent="Navigateur — ünïcode"))
    [row] = audit_rows(audit_url)
    assert row["detail"] == detail
    assert row["user_agent"] == "Navigateur — ünïcode"


def test_long_ids_of_a_host_app_are_stored_whole(audit_url: str) -> None:
    upgrade(audit_url)
    user_id = "user:" + "é" * 600
    write(audit_url, event("e-1", user_id=user_id, account="a" * 300, user_agent="U" * 512))
    [row] = audit_rows(audit_url)
    assert (row["user_id"], row["account"], row["user_agent"]) == (
        user_id,
        "a" * 300,
        "U" * 512,
    )


def test_times_come_back_timezone_aware_in_utc(audit_url: str) -> None:
    upgrade(audit_url)
    paris = timezone(timedelta(hours=1))
    write(audit_url, event("e-1", at=datetime(2026, 12, 5, 7, 0, 1, 250000, tzinfo=paris)))
    [row] = audit_rows(audit_url)
    assert row["at"] == datetime(2026, 12, 5, 6, 0, 1, 250000, tzinfo=UTC)
    assert row["at"].utcoffset() == timedelta(0)
    assert row["at"].tzinfo is UTC


def test_a_naive_time_is_refused(audit_url: str) -> None:
    upgrade(audit_url)
    with pytest.raises(Exception, match="timezone-aware"):
        write(audit_url, event("e-1", at=datetime(2026, 12, 5, 6, 0)))
    assert audit_rows(audit_url) == []


def test_the_database_writes_counts_and_prunes_in_chunks(audit_url: str) -> None:
    upgrade(audit_url)
    database = AuditDatabase(audit_url)
    try:
        assert database.count() == 0
        old = datetime(2025, 1, 1, tzinfo=UTC)
        new = datetime(2026, 12, 1, tzinfo=UTC)
        written = database.write(
            [event(f"old-{n}", at=old + timedelta(minutes=n)) for n in range(5)]
            + [event(f"new-{n}", at=new) for n in range(3)]
        )
        assert written == 8
        assert database.write([event("new-0", at=new), event("new-3", at=new)]) == 1
        assert database.count() == 9
        # Two rows a statement: three chunks, the last one short.
        assert database.prune(datetime(2025, 1, 1, 0, 4, tzinfo=UTC), chunk=2) == 4
        assert [row["id"] for row in audit_rows(audit_url)] == [
            "old-4",
            *("new-0", "new-1", "new-2", "new-3"),
        ]
        assert database.prune(new, chunk=2) == 1
        assert database.prune(new, chunk=2) == 0
        assert database.count() == 4
    finally:
        database.close()


#: Text that does not compress: 6,000 characters of random hex.
LONG_TEXT = random.Random(7).randbytes(3000).hex()


@pytest.mark.parametrize(
    ("values", "sqlite_keeps_it"),
    [
        ({"user_agent": "a\x00b"}, True),
        ({"detail": {"k": "a\x00"}}, True),
        ({"detail": {"k": "lone \udc80"}}, True),
        ({"user_agent": "lone \ud800"}, False),
        ({"type": None}, False),
        # Past PostgreSQL's largest index entry (2704 bytes): the row, not a
        # database down that would hold every later event behind it.
        ({"user_id": LONG_TEXT}, True),
        ({"session_id": LONG_TEXT}, True),
    ],
    ids=["nul", "nul-in-json", "surrogate-in-json", "surrogate", "null", "user-id", "session-id"],
)
def test_rows_the_database_cannot_store_are_refused_as_rows(
    audit_url: str, values: dict[str, Any], sqlite_keeps_it: bool
) -> None:
    upgrade(audit_url)
    database = AuditDatabase(audit_url)
    try:
        if sqlite_keeps_it and audit_url.startswith("sqlite"):
            assert database.write([event("e-0"), event("e-1", **values)]) == 2
            return
        with pytest.raises(RowsRefused):
            database.write([event("e-0"), event("e-1", **values)])
        # One transaction: the good row went with the bad one.
        assert database.count() == 0
    finally:
        database.close()


def test_a_database_that_is_gone_is_unavailable(tmp_path: Path) -> None:
    database = AuditDatabase(f"sqlite:///{tmp_path / 'no-such-dir' / 'audit.db'}")
    with pytest.raises(AuditUnavailable) as gone:
        database.write([event("e-1")])
    assert str(gone.value) == "the audit database is unavailable: unable to open database file"
    with pytest.raises(AuditUnavailable):
        database.count()
    database.close()


def test_a_sqlite_file_removed_is_unavailable_until_one_is_there_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    database = AuditDatabase(url)
    try:
        assert database.write([event("e-1")]) == 1
        path.unlink()
        # Not written into the removed file through the pooled connection
        # (the writer would acknowledge events no one can read), nor into
        # an empty file made again.
        with pytest.raises(AuditUnavailable) as gone:
            database.write([event("e-2")])
        assert str(gone.value) == "the audit database is unavailable: unable to open database file"
        with pytest.raises(AuditUnavailable):
            database.count()
        assert not path.exists()
        assert schema_state(url) == (None, "0001")
        assert not path.exists()
        upgrade(url)  # made again (or a copy put back): written to at once
        assert database.write([event("e-2")]) == 1
        assert [row["id"] for row in audit_rows(url)] == ["e-2"]
    finally:
        database.close()


def cli_app(url: str | None) -> Flask:
    config: dict[str, Any] = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY}
    if url is not None:
        config["SESSIONSVC_AUDIT_URL"] = url
    return create_app(config)


def audit_cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["sessions", "audit", *args])


def test_the_commands_upgrade_and_report_the_schema(audit_url: str) -> None:
    app = cli_app(audit_url)
    # No event waits (nothing happened yet); no table to count before the upgrade.
    idle = "pending: 0 (taken by a writer, not yet stored)\nunread: 0\nlag: 0.0 s\n"
    before = audit_cli(app, "status")
    assert before.exit_code == 0, before.output
    assert before.output == (
        "audit schema: none (run flask sessions audit upgrade to create 0001)\nrows: -\n" + idle
    )
    done = audit_cli(app, "upgrade")
    assert done.exit_code == 0, done.output
    assert done.output == "audit schema at revision 0001\n"
    assert schema_state(audit_url) == ("0001", "0001")
    after = audit_cli(app, "status")
    assert after.exit_code == 0, after.output
    assert after.output == "audit schema: 0001 (current)\nrows: 0\n" + idle
    set_revision(audit_url, "0000")
    outdated = audit_cli(app, "status")
    assert outdated.exit_code == 0, outdated.output
    assert outdated.output == (
        "audit schema: 0000, outdated (run flask sessions audit upgrade for 0001)\nrows: 0\n" + idle
    )


@pytest.mark.parametrize("command", ["upgrade", "status"])
def test_a_database_that_cannot_be_opened_is_one_line(command: str, tmp_path: Path) -> None:
    app = cli_app(f"sqlite:///{tmp_path / 'no-such-dir' / 'audit.db'}")
    done = audit_cli(app, command)
    assert done.exit_code == 1
    assert done.output == (
        "Error: the audit database is unavailable: unable to open database file\n"
    )


def test_an_unreachable_postgresql_is_one_line() -> None:
    app = cli_app(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/audit")
    done = audit_cli(app, "status")
    assert done.exit_code == 1
    assert done.output.startswith("Error: the audit database is unavailable: connection ")
    assert done.output.count("\n") == 1


@pytest.mark.parametrize(
    ("query", "timeout"), [("", CONNECT_TIMEOUT), ("?connect_timeout=2", 2)], ids=["ours", "url"]
)
def test_a_postgresql_that_accepts_and_never_answers_is_unavailable_in_time(
    query: str, timeout: int
) -> None:
    # A server (or a proxy, a firewall) that takes the connection and never
    # answers: the writer and the commands give up, as the reader does,
    # after the URL's connect_timeout if it has one.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://audit:s3cret-pw@127.0.0.1:{port}/audit{query}"
        database = AuditDatabase(url)
        caught, waited = finishes_within(database.count, CONNECT_TIMEOUT + 10)
    database.close()
    assert timeout - 1 < waited < timeout + 3
    assert isinstance(caught, AuditUnavailable)
    assert str(caught).startswith("the audit database is unavailable: ")
    assert "s3cret-pw" not in str(caught)


@pytest.mark.parametrize("audit_url", ["postgresql"], indirect=True)
def test_a_postgresql_gone_silent_is_unavailable_to_the_writer_in_time(audit_url: str) -> None:
    # Silent on the writer's pooled connection (paused, a network dropping
    # everything): the write gives up, and the writer holds its batch and
    # tries again, rather than wait for ever while the stream trims events.
    direct = make_url(audit_url)
    proxy = FreezingProxy((direct.host or "127.0.0.1", direct.port or 5432))
    url = direct.set(port=proxy.port).render_as_string(hide_password=False)
    database = AuditDatabase(url, deadline=2)
    try:
        upgrade(url)
        assert database.write([event("e-1")]) == 1
        proxy.freeze()
        caught, waited = finishes_within(lambda: database.write([event("e-2")]), 15)
        assert 1 < waited < 5
        assert isinstance(caught, AuditUnavailable)
        assert str(caught) == "the audit database is unavailable: no answer in 2 s"
        proxy.thaw()
        assert database.write([event("e-2")]) == 1
        assert [row["id"] for row in audit_rows(url)] == ["e-1", "e-2"]
    finally:
        database.close()
        proxy.close()


@pytest.mark.parametrize("command", ["upgrade", "status"])
def test_the_commands_need_the_url(command: str) -> None:
    done = audit_cli(cli_app(None), command)
    assert done.exit_code == 1
    assert done.output == "Error: the audit trail is off: set SESSIONSVC_AUDIT_URL\n"


def test_the_settings_read_the_url_and_the_retention() -> None:
    settings = Settings.from_config({"SESSIONSVC_AUDIT_URL": "sqlite:///audit.db"})
    assert settings.audit_url == "sqlite:///audit.db"
    assert settings.audit_retention_days == 400
    assert Settings.from_config({}).audit_url is None
    assert Settings.from_config({"SESSIONSVC_AUDIT_RETENTION_DAYS": 30}).audit_retention_days == 30


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SESSIONSVC_AUDIT_RETENTION_DAYS": 0}, "SESSIONSVC_AUDIT_RETENTION_DAYS must be"),
        ({"SESSIONSVC_AUDIT_RETENTION_DAYS": "30"}, "SESSIONSVC_AUDIT_RETENTION_DAYS must be"),
        ({"SESSIONSVC_AUDIT_URL": "mysql://db/audit"}, "sqlite:/// or postgresql\\+psycopg://"),
        ({"SESSIONSVC_AUDIT_URL": "postgresql://db/audit"}, "got postgresql://"),
    ],
)
def test_bad_audit_settings_are_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_config(config)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://audit:s3cret-pw@db:port/audit", "not a URL SQLAlchemy reads"),
        ("postgresql+psycopg://audit:s3cret-pw@[::1/audit", "not a URL SQLAlchemy reads"),
        ("postgresql+psycopg:/audit:s3cret-pw@db/audit", "not a URL SQLAlchemy reads"),
        ("postgresql+psycopg://audit:s3cret-pw@db:99999/audit", "port 99999 is not 1..65535"),
        ("sqlite://audit:s3cret-pw@db/audit.db", "names no host, user or password"),
        ("sqlite://", "an in-memory SQLite database"),
        ("sqlite:///:memory:", "an in-memory SQLite database"),
    ],
)
def test_an_audit_url_that_cannot_be_used_is_refused_without_its_password(
    url: str, message: str
) -> None:
    # Refused at start-up, not a 500 at the first page, a writer's
    # traceback, or a URL with its password in an error.
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_config({"SESSIONSVC_AUDIT_URL": url})
    assert str(refused.value).startswith("SESSIONSVC_AUDIT_URL ")
    assert "s3cret-pw" not in str(refused.value)


def test_without_the_extra_the_url_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def missing(name: str, *args: Any) -> Any:
        return None if name in ("sqlalchemy", "psycopg") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(ConfigError, match=r"pip install 'sessionsvc\[audit\]'"):
        Settings.from_config({"SESSIONSVC_AUDIT_URL": "sqlite:///audit.db"})
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'sessionsvc\[postgres\]'"):
        Settings.from_config({"SESSIONSVC_AUDIT_URL": "postgresql+psycopg://db/audit"})
