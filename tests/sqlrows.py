"""Reading the audit table back, as the tests check it (oldest first)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from sessionsvc.sql.migrate import engine
from sessionsvc.sql.tables import audit


def audit_rows(url: str) -> list[dict[str, Any]]:
    """Every row of the audit table at ``url``, oldest first (ties by id)."""
    db = engine(url)
    try:
        with db.connect() as connection:
            found = connection.execute(select(audit).order_by(audit.c.at, audit.c.id))
            return [dict(row._mapping) for row in found]
    finally:
        db.dispose()
