"""Writing audit rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .tables import audit


def insert_events(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert audit rows, skipping those whose id is stored already (a
    redelivered event); return how many were new."""
    if not rows:
        return 0
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = pg_insert(audit)
    elif dialect == "sqlite":
        statement = sqlite_insert(audit)
    else:
        raise ValueError(f"the audit trail runs on SQLite or PostgreSQL, not {dialect}")
    # RETURNING names the rows really inserted: rowcount is -1 for some
    # drivers' statements, and an executemany's is not reliable.
    statement = statement.on_conflict_do_nothing(index_elements=["id"]).returning(audit.c.id)
    return len(connection.execute(statement, [dict(row) for row in rows]).all())
