"""The audit trail's databases for tests (the fixtures ``postgres_server`` and
``audit_url`` are in ``tests/conftest.py``): a PostgreSQL database created
and dropped, rows written as the writer writes them, and the rows read back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import make_url, select, text

from sessionsvc.sql.events import insert_events
from sessionsvc.sql.migrate import engine
from sessionsvc.sql.tables import audit


def _on_server(server: str, statement: str) -> None:
    admin = engine(server).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def create_database(server: str, name: str) -> str:
    """Create the database ``name`` on ``server``; its URL."""
    _on_server(server, f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, name: str) -> None:
    """Drop the database ``name`` (if it is there), its open connections ended."""
    _on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def event(event_id: str, **values: Any) -> dict[str, Any]:
    """An audit row of ``alice``'s (``values`` change its columns)."""
    row = {
        "id": event_id,
        "type": "login",
        "at": datetime(2026, 12, 5, 6, 0, 1, 250000, tzinfo=UTC),
        "user_id": "alice",
        "account": "acc-1",
        "session_id": "s-1",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
        "detail": {},
    }
    return row | values


def write(url: str, *events: Mapping[str, Any]) -> int:
    """Insert audit rows as the writer does; how many were new."""
    db = engine(url)
    try:
        with db.begin() as connection:
            return insert_events(connection, events)
    finally:
        db.dispose()


def audit_rows(url: str) -> list[dict[str, Any]]:
    """Every row of the audit table at ``url``, oldest first (ties by id)."""
    db = engine(url)
    try:
        with db.connect() as connection:
            found = connection.execute(select(audit).order_by(audit.c.at, audit.c.id))
            return [dict(row._mapping) for row in found]
    finally:
        db.dispose()


def finishes_within(call: Callable[[], Any], limit: float) -> tuple[Any, float]:
    """Run ``call`` in a thread (a call that hangs fails the test, not stops
    it); what it returned or raised, and the seconds it took."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    running = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    running.start()
    running.join(limit)
    assert not running.is_alive(), f"still waiting after {limit} s"
    return outcome[0], time.monotonic() - started
