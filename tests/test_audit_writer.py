"""The audit writer (sessionsvc/audit_writer.py): events recorded by the
store's real operations reach the audit table once each, whatever dies or
stops answering on the way; on SQLite and PostgreSQL (``audit_url``), over
fakeredis and a real Redis (``backend``)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from prometheus_client import REGISTRY

from sessionsvc import accounts
from sessionsvc.audit_writer import Writer, escape_text
from sessionsvc.sql.events import AuditDatabase
from sessionsvc.sql.migrate import SchemaOutdated, upgrade
from sessionsvc.state import current_manager, current_state, state_of
from sessionsvc.store.keys import user_tag
from tests.backends import AppFactory, served
from tests.clients import Auth, http
from tests.databases import audit_rows
from tests.servers import PostgresProcess, RedisProcess, helper_pids, wait_until


class Killed(BaseException):
    """A writer process dying on the spot (not an error it would handle)."""


@pytest.fixture
def audit_app(make_app: AppFactory, audit_url: str) -> Flask:
    """The standalone service with the audit trail on, its schema made."""
    upgrade(audit_url)
    return make_app(SESSIONSVC_AUDIT_URL=audit_url, SESSIONSVC_AUDIT_RETENTION_DAYS=30)


#: The writers a test made, whose engines it closes after.
_WRITERS: list[Writer] = []


@pytest.fixture(autouse=True)
def _close_writers() -> Iterator[None]:
    yield
    while _WRITERS:
        _WRITERS.pop().database.close()


def writer_of(app: Flask, **options: Any) -> Writer:
    with app.app_context():
        state = current_state()
        writer = Writer(state.store, state.settings, **options)
    _WRITERS.append(writer)
    return writer


def drain(writer: Writer, limit: int = 100) -> int:
    """Step until there is nothing left to write; how many entries."""
    total = 0
    for _ in range(limit):
        done = writer.step()
        assert writer.retry_in == 0, "a dependency is down"
        if not done:
            return total
        total += done
    raise AssertionError("the writer never ran out of work")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def new_user(app: Flask, name: str) -> str:
    """Create ``name`` in the user store, with an account of its own; the account."""
    with app.app_context():
        user = accounts.new_user(name, "correct horse battery staple")
        assert accounts.create(user)
        return user.account


def sign_in(app: Flask, name: str, **options: Any) -> dict[str, Any]:
    return Auth(app).login(name, "correct horse battery staple", create=False, **options)


def recorded(app: Flask, name: str) -> list[dict[str, Any]]:
    """The user's events as the store recorded them (its hot view)."""
    with app.app_context():
        return [event.to_json() for event in current_manager().events_for(name, limit=1000)]


def test_events_of_real_operations_reach_the_table(audit_app: Flask, audit_url: str) -> None:
    account = new_user(audit_app, "alice")
    laptop = sign_in(audit_app, "alice", ip="203.0.113.7")
    sign_in(audit_app, "alice", ip="198.51.100.2")
    client = audit_app.test_client()
    gone = client.delete(f"/api/v1/sessions/{laptop['session_id']}", headers=Auth.headers(laptop))
    assert gone.status_code == 204
    written = metric("sessionsvc_audit_rows_written_total")
    writer = writer_of(audit_app)
    expected = sorted(recorded(audit_app, "alice"), key=lambda event: event["id"])
    assert drain(writer) == len(expected)
    rows = audit_rows(audit_url)
    # Exactly what the store recorded, field by field, plus the user and the account.
    got = sorted(rows, key=lambda row: row["id"])
    assert [row["id"] for row in got] == [event["id"] for event in expected]
    for row, event in zip(got, expected, strict=True):
        assert row["type"] == event["type"]
        assert row["at"].strftime("%Y-%m-%dT%H:%M:%SZ") == event["at"]
        assert row["at"].tzinfo is UTC
        assert (row["session_id"], row["ip"], row["user_agent"]) == (
            event["session_id"],
            event["ip"],
            event["user_agent"],
        )
        assert row["detail"] == event["detail"]
        assert (row["user_id"], row["account"]) == ("alice", account)
    types = [row["type"] for row in rows]
    assert types.count("session.created") == 2
    assert types.count("session.revoked") == 1
    assert metric("sessionsvc_audit_rows_written_total") - written == len(expected)
    # Nothing is left for anyone.
    status = writer.status()
    assert (status.rows, status.pending, status.unread, status.lag_seconds) == (
        len(expected),
        0,
        0,
        0.0,
    )


def test_the_lag_is_the_age_of_the_oldest_event_taken(audit_app: Flask) -> None:
    new_user(audit_app, "alice")
    sign_in(audit_app, "alice")
    time.sleep(1.2)
    sign_in(audit_app, "alice")
    writer = writer_of(audit_app)
    assert writer.status().lag_seconds >= 1.2
    assert writer.step() == 2
    assert 1.2 <= metric("sessionsvc_audit_lag_seconds") < 5
    assert writer.step() == 0
    assert metric("sessionsvc_audit_lag_seconds") == 0.0


def test_a_name_created_again_is_two_accounts(audit_app: Flask, audit_url: str) -> None:
    first = new_user(audit_app, "alice")
    sign_in(audit_app, "alice")
    with audit_app.app_context():
        accounts.delete("alice", force=True)
    second = new_user(audit_app, "alice")
    sign_in(audit_app, "alice")
    drain(writer_of(audit_app))
    seen = [(row["type"], row["account"]) for row in audit_rows(audit_url)]
    assert first != second
    assert ("session.created", first) in seen
    assert ("session.created", second) in seen
    assert ("session.revoked", first) in seen  # user_deleted ended the first one's session
    assert {account for _, account in seen} == {first, second}


def test_a_writer_killed_between_insert_and_ack_loses_and_doubles_nothing(
    audit_app: Flask, audit_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_user(audit_app, "alice")
    for _ in range(5):
        sign_in(audit_app, "alice")
    store = state_of(audit_app).store

    def die(stream: str, entry_ids: Any) -> None:
        raise Killed

    monkeypatch.setattr(store, "audit_ack", die)
    first = writer_of(audit_app, name="w1", batch=3)
    with pytest.raises(Killed):
        first.step()
    monkeypatch.undo()
    assert len(audit_rows(audit_url)) == 3  # inserted, never acknowledged
    written = metric("sessionsvc_audit_rows_written_total")
    # Another writer (a restarted one) takes the dead one's batch over.
    second = writer_of(audit_app, name="w2", batch=3, takeover_after=0.05)
    time.sleep(0.1)
    assert drain(second) == 5
    rows = audit_rows(audit_url)
    assert len(rows) == len({row["id"] for row in rows}) == 5
    assert {row["id"] for row in rows} == {event["id"] for event in recorded(audit_app, "alice")}
    # The three taken over were stored already: only two rows are new.
    assert metric("sessionsvc_audit_rows_written_total") - written == 2
    status = second.status()
    assert (status.rows, status.pending, status.unread) == (5, 0, 0)


def test_two_writers_share_the_work_each_event_once(
    audit_app: Flask, audit_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(4):
        new_user(audit_app, f"user{n}")
        for _ in range(6):
            sign_in(audit_app, f"user{n}")
    writers = [writer_of(audit_app, name=f"w{n}", batch=2) for n in range(2)]
    inserted: dict[str, list[str]] = {writer.name: [] for writer in writers}
    for writer in writers:
        write = writer.database.write

        def recording(rows: Any, write: Any = write, name: str = writer.name) -> int:
            inserted[name] += [row["id"] for row in rows]
            time.sleep(0.05)  # a slow database: the other writer takes the next batch
            return int(write(rows))

        monkeypatch.setattr(writer.database, "write", recording)
    threads = [threading.Thread(target=writer.run) for writer in writers]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(audit_rows(audit_url)) < 24 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for writer in writers:
            writer.stop.set()
        for thread in threads:
            thread.join(10)
    everyone = inserted["w0"] + inserted["w1"]
    assert sorted(everyone) == sorted(row["id"] for row in audit_rows(audit_url))
    assert len(everyone) == len(set(everyone)) == 24
    assert inserted["w0"] and inserted["w1"], "one writer did all the work"


def test_content_postgresql_refuses_is_stored_escaped(
    audit_app: Flask, audit_url: str, rc: redis.Redis
) -> None:
    new_user(audit_app, "alice")
    sign_in(audit_app, "alice", user_agent="Agent\x00with a NUL")
    store = state_of(audit_app).store
    (stream,) = store.audit_streams()
    # A lone surrogate cannot come through HTTP; an older version or a host
    # app's detail could put one in the JSON.
    event = {
        "i": "1796090062108178.240cc-9",
        "k": "session.anomaly",
        "t": 1796090062,
        "s": "s-1",
        "ua": "lone \udc80 surrogate",
        "d": {"why\x00": ["\ud800", "ok"]},
    }
    # A host app's user id may hold one too (its tag keeps it).
    rc.xadd(stream, {"u": user_tag("host\udc80user"), "e": json.dumps(event)})
    drain(writer_of(audit_app))
    rows = {row["type"]: row for row in audit_rows(audit_url)}
    assert rows["session.created"]["user_agent"] == "Agent\\x00with a NUL"
    anomaly = rows["session.anomaly"]
    assert anomaly["user_id"] == "host\\udc80user"
    assert anomaly["user_agent"] == "lone \\udc80 surrogate"
    assert anomaly["detail"] == {"why\\x00": ["\\ud800", "ok"]}


def test_a_client_address_with_a_long_zone_is_stored_without_it(
    audit_app: Flask, audit_url: str
) -> None:
    # A zone names an interface of the host that saw the address, and what
    # a proxy forwards is a client's text: one of 100 characters made the
    # address longer than the ip column, and PostgreSQL refused the event.
    new_user(audit_app, "alice")
    sign_in(audit_app, "alice", ip="fe80::1%" + "x" * 100)
    assert drain(writer_of(audit_app)) == 1
    [row] = audit_rows(audit_url)
    assert (row["type"], row["ip"]) == ("session.created", "fe80::1")


def test_escaping_leaves_other_text_alone() -> None:
    assert escape_text("Zürich — 李") == "Zürich — 李"
    assert escape_text("a\x00b\ud800") == "a\\x00b\\ud800"


def test_an_unreadable_entry_or_a_refused_row_is_skipped_not_retried_forever(
    audit_app: Flask, audit_url: str, rc: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    new_user(audit_app, "alice")
    sign_in(audit_app, "alice")
    store = state_of(audit_app).store
    (stream,) = store.audit_streams()
    rc.xadd(stream, {"u": user_tag("alice"), "e": "not json"})
    # An id longer than the table's 64 characters: PostgreSQL refuses it.
    long = {"i": "x" * 80, "k": "session.created", "t": 1796090062, "s": "s-2"}
    rc.xadd(stream, {"u": user_tag("alice"), "e": json.dumps(long)})
    sign_in(audit_app, "alice")
    unreadable = metric("sessionsvc_audit_failures_total", kind="unreadable")
    refused = metric("sessionsvc_audit_failures_total", kind="refused")
    with caplog.at_level(logging.ERROR, "sessionsvc.audit"):
        assert drain(writer_of(audit_app)) == 4
    ids = [row["id"] for row in audit_rows(audit_url)]
    postgres = audit_url.startswith("postgresql")
    # The good ones around them are stored: the bad row is found by halves.
    assert len(ids) == (2 if postgres else 3)
    assert ("x" * 80 in ids) is not postgres
    assert metric("sessionsvc_audit_failures_total", kind="unreadable") - unreadable == 1
    assert metric("sessionsvc_audit_failures_total", kind="refused") - refused == (
        1 if postgres else 0
    )
    messages = [record.getMessage() for record in caplog.records]
    assert any("holds no readable event: dropped" in message for message in messages)
    assert any("refused by the database: skipped" in message for message in messages) is postgres
    backlog = store.audit_backlog([stream])
    assert (backlog.pending, backlog.unread) == (0, 0)


def test_entries_trimmed_before_they_were_stored_are_counted_and_logged(
    audit_app: Flask, audit_url: str, rc: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    new_user(audit_app, "alice")
    sign_in(audit_app, "alice")
    writer = writer_of(audit_app)
    drain(writer)
    for _ in range(4):
        sign_in(audit_app, "alice")
    (stream,) = state_of(audit_app).store.audit_streams()
    rc.xtrim(stream, maxlen=1, approximate=False)
    lost = metric("sessionsvc_audit_lost_total")
    with caplog.at_level(logging.ERROR, "sessionsvc.audit"):
        drain(writer)
    assert metric("sessionsvc_audit_lost_total") - lost == 3
    assert len(audit_rows(audit_url)) == 2
    assert [r.getMessage() for r in caplog.records if "trimmed" in r.getMessage()] == [
        f"audit: 3 event(s) of stream {stream} were trimmed before they were stored: "
        "lost to the audit trail"
    ]


def test_a_schema_missing_or_outdated_is_refused(make_app: AppFactory, audit_url: str) -> None:
    app = make_app(SESSIONSVC_AUDIT_URL=audit_url)
    writer = writer_of(app)
    with pytest.raises(SchemaOutdated, match="run flask sessions audit upgrade"):
        writer.run()
    upgrade(audit_url)
    assert writer.ready() is True


def test_prune_deletes_only_rows_past_the_retention_once_a_day(
    audit_app: Flask, audit_url: str
) -> None:
    now = datetime.now(UTC)
    database = AuditDatabase(audit_url)
    base = {"type": "session.created", "user_id": "alice", "account": None, "detail": {}}
    base |= {"session_id": "s", "ip": None, "user_agent": None}
    database.write(
        [
            {**base, "id": "old", "at": now - timedelta(days=31)},
            {**base, "id": "recent", "at": now - timedelta(days=29)},
        ]
    )
    drain(writer_of(audit_app))
    assert [row["id"] for row in audit_rows(audit_url)] == ["recent"]
    # Once a day, whichever writer asks first: another one prunes nothing.
    database.write([{**base, "id": "old-2", "at": now - timedelta(days=40)}])
    database.close()
    drain(writer_of(audit_app))
    assert [row["id"] for row in audit_rows(audit_url)] == ["old-2", "recent"]


def outage(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the writer logged about a dependency going down or coming back."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sessionsvc.audit" and ("unavailable" in r.msg or "back" in r.msg)
    ]


def test_a_database_that_stops_answering_holds_the_batch_and_recovers(
    make_app: AppFactory,
    own_postgres: PostgresProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_postgres.url
    upgrade(url)
    app = make_app(SESSIONSVC_AUDIT_URL=url)
    new_user(app, "alice")
    sign_in(app, "alice")
    writer = writer_of(app)
    assert drain(writer) == 1
    own_postgres.halt()
    caplog.set_level(logging.INFO, "sessionsvc.audit")
    sign_in(app, "alice")  # the service keeps working: the stream holds the event
    delays = []
    for _ in range(4):
        assert writer.step() == 0
        delays.append(writer.retry_in)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    sign_in(app, "alice")
    own_postgres.resume()
    assert drain(writer) == 2
    assert len(audit_rows(url)) == 3
    messages = outage(caplog)
    assert len(messages) == 2, messages
    assert messages[0].startswith("audit: the audit database is unavailable (connection ")
    assert messages[0].endswith("1 event(s) held in memory, trying again until it is back")
    assert messages[1] == "audit: the audit database is back; writing again"
    assert "password" not in " ".join(messages)


def test_a_sqlite_file_out_of_reach_then_back(
    make_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'audit.db'}"
    upgrade(url)
    app = make_app(SESSIONSVC_AUDIT_URL=url)
    new_user(app, "alice")
    sign_in(app, "alice")
    shutil.move(folder, tmp_path / "away")
    writer = writer_of(app)
    caplog.set_level(logging.INFO, "sessionsvc.audit")
    assert writer.step() == 0
    assert writer.retry_in == 1.0
    sign_in(app, "alice")
    shutil.move(tmp_path / "away", folder)
    assert drain(writer) == 2
    assert len(audit_rows(url)) == 2
    assert len(outage(caplog)) == 2


def test_a_redis_that_stops_answering_is_waited_for(
    own_redis: RedisProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sessionsvc import create_app
    from tests.clients import JWT_KEY

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    config = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY, "SESSIONSVC_LOGIN_RATE_LIMIT": ""}
    app = create_app({**config, "SESSIONSVC_REDIS_URL": own_redis.url, "SESSIONSVC_AUDIT_URL": url})
    new_user(app, "alice")
    sign_in(app, "alice")
    writer = writer_of(app)
    caplog.set_level(logging.INFO, "sessionsvc.audit")
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        assert writer.step() == 0
        assert writer.retry_in == 1.0
        assert writer.step() == 0
        assert writer.retry_in == 2.0
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    assert drain(writer) == 1
    messages = outage(caplog)
    assert len(messages) == 2, messages
    assert messages[0] == (
        "audit: the store is unavailable (TimeoutError); trying again until it is back"
    )
    assert messages[1] == "audit: the store is back; writing again"
    state_of(app).store.close()


def metric_line(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_gunicorn_starts_a_writer_whose_metrics_show_on_metrics(
    redis_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)  # what make run does before gunicorn
    with served(redis_url, {"alice": "pw"}, workers=2, SESSIONSVC_AUDIT_URL=url) as service:
        for _ in range(3):
            status, _ = http(
                "POST",
                f"{service.base}/api/v1/auth/login",
                body={"username": "alice", "password": "pw"},
            )
            assert status == 200
        wait_until(lambda: len(audit_rows(url)) == 3, 20, service.output)
        pids = helper_pids("audit")
        assert len(pids) == 1, pids

        def counted() -> bool:
            with urllib.request.urlopen(f"{service.base}/metrics", timeout=5) as response:
                text = response.read().decode()
            written = metric_line(text, "sessionsvc_audit_rows_written_total")
            return written == 3.0 and metric_line(text, "sessionsvc_audit_lag_seconds") == 0.0

        # Whichever worker answers sums the writer's files with its own.
        wait_until(counted, 20, service.output)
        assert "an audit writer" in service.output()
    wait_until(
        lambda: not (set(pids) & set(helper_pids("audit"))), 20, lambda: "the writer lives on"
    )


def test_a_writer_started_before_its_database_answers_waits_for_it(
    make_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder / 'audit.db'}"
    app = make_app(SESSIONSVC_AUDIT_URL=url)
    new_user(app, "alice")
    sign_in(app, "alice")
    writer = writer_of(app)
    caplog.set_level(logging.INFO, "sessionsvc.audit")
    running = threading.Thread(target=writer.run)
    running.start()
    try:
        wait_until(lambda: bool(outage(caplog)), 10, lambda: "no outage logged")
        folder.mkdir()
        upgrade(url)
        wait_until(lambda: len(audit_rows(url)) == 1, 20, lambda: "nothing was written")
    finally:
        writer.stop.set()
        running.join(10)
    assert not running.is_alive()
    assert outage(caplog) == [
        "audit: the audit database is unavailable (unable to open database file); "
        "trying again until it is back",
        "audit: the audit database is back; writing again",
    ]
