"""The audit table and its indexes (SQLAlchemy Core)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Index,
    MetaData,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB

#: The name of the table Alembic records the schema's revision in: not its
#: default ``alembic_version``, so a host's own migrations in the same
#: database keep theirs.
VERSION_TABLE = "sessionsvc_audit_version"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every engine: SQLite keeps no zone
    and gives naive datetimes back, PostgreSQL gives the session's zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous: refuse it rather than guess a zone.
            raise ValueError(f"an audit time must be timezone-aware, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

#: One row per security event; the event id is the key, so a redelivered
#: event is stored once.
audit = Table(
    "sessionsvc_audit",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    # No length on what a host app or an older version chooses (its user
    # ids, its accounts): a row must never be refused for being long.
    Column("user_id", String(), nullable=False),
    # The account behind user_id when the event happened: a name deleted and
    # created again is another account, and its events are told apart.
    Column("account", String(), nullable=True),
    Column("session_id", String(), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(), nullable=True),
    Column("detail", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    # Newest first, keyset-paginated on (at, id), whole or by one filter.
    Index("sessionsvc_audit_at", "at", "id"),
    Index("sessionsvc_audit_user", "user_id", "at", "id"),
    Index("sessionsvc_audit_session", "session_id", "at", "id"),
    Index("sessionsvc_audit_type", "type", "at", "id"),
    Index("sessionsvc_audit_ip", "ip", "at", "id"),
)

#: The indexes of the table, by name (what a migration must create).
INDEXES = frozenset(str(index.name) for index in audit.indexes)
