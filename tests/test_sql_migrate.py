"""``audit upgrade`` (``sessionsvc.sql.migrate.upgrade``) run by several
processes at once, and stopped half-way: on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event
from typing import Any

import pytest
from alembic.operations import Operations
from sqlalchemy import inspect

from sessionsvc.sql.migrate import engine, schema_state, upgrade
from tests.databases import audit_rows, event, write

#: Processes that run ``audit upgrade`` at the same moment.
RACERS = 6


def _race(url: str, go: Event, results: Any) -> None:
    go.wait()
    try:
        upgrade(url)
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put("ok")


def test_upgrades_run_at_once_all_succeed(audit_url: str) -> None:
    # Several instances of a deployment each run the upgrade as they start:
    # one creates the schema, the others wait for it and find it current.
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    racers = [context.Process(target=_race, args=(audit_url, go, results)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    go.set()
    for racer in racers:
        racer.join(60)
    assert [results.get(timeout=5) for _ in racers] == ["ok"] * RACERS
    assert schema_state(audit_url) == ("0001", "0001")
    write(audit_url, event("e-1"))
    assert [row["id"] for row in audit_rows(audit_url)] == ["e-1"]


def _tables(url: str) -> list[str]:
    db = engine(url)
    try:
        with db.connect() as connection:
            return sorted(inspect(connection).get_table_names())
    finally:
        db.dispose()


def test_an_upgrade_stopped_half_way_leaves_no_half_schema(
    audit_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash, a Ctrl-C or a full disk between the table and its indexes:
    # the next upgrade must not find a table it cannot create again.
    create_index = Operations.create_index
    made: list[str] = []

    def failing(self: Operations, name: str, *args: Any, **kwargs: Any) -> Any:
        if made:
            raise RuntimeError("stopped half-way")
        made.append(name)
        return create_index(self, name, *args, **kwargs)

    monkeypatch.setattr(Operations, "create_index", failing)
    with pytest.raises(RuntimeError, match="stopped half-way"):
        upgrade(audit_url)
    assert made == ["sessionsvc_audit_at"]
    assert schema_state(audit_url) == (None, "0001")
    assert [name for name in _tables(audit_url) if name.startswith("sessionsvc")] == []
    monkeypatch.undo()
    upgrade(audit_url)
    assert schema_state(audit_url) == ("0001", "0001")
