"""Reading the audit trail: filtered pages, newest first, for the admin API,
and every matching row, oldest first, for ``audit export``.

Pages are keyset-paginated on ``(at, id)``: a page starts strictly past the
last row of the one before, so rows written meanwhile never shift it, and
rows of one instant are told apart (and ordered) by their id. Every query
filters on at most one indexed column by equality and orders by the
``(at, id)`` that follows it in that column's index (``tables.audit``).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import ColumnElement, Connection, Engine, make_url, select, tuple_
from sqlalchemy.pool import NullPool

from .deadline import answering_within, ping_on_checkout
from .migrate import database_errors, engine
from .tables import audit

#: A row's place in the order: its time and its id.
Position = tuple[datetime, str]

#: The zero of the cursor's microsecond count.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Seconds a reader's query may run on PostgreSQL (waiting for a lock
#: included) before the server cancels it: a page that cannot be read in
#: time is unavailable, not a worker held for as long as a lock is.
STATEMENT_TIMEOUT = 5

#: Seconds after which a page gives up on PostgreSQL even if the server
#: cannot say so (gone silent: paused, or a network that drops everything),
#: rather than hold a server thread for as long as it stays silent.
READ_DEADLINE = STATEMENT_TIMEOUT + 2


@dataclass(frozen=True)
class AuditFilter:
    """What rows to read; each field that is not ``None`` must match.

    ``since`` is inclusive and ``until`` exclusive (``at >= since`` and
    ``at < until``), so consecutive windows never share a row. Both are
    timezone-aware.
    """

    user_id: str | None = None
    session_id: str | None = None
    type: str | None = None
    #: Compared as stored: callers normalise an address first (``models.parse_ip``).
    ip: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions."""
        conditions: list[ColumnElement[bool]] = []
        for name in ("user_id", "session_id", "type", "ip"):
            value = getattr(self, name)
            if value is not None:
                conditions.append(audit.c[name] == value)
        if self.since is not None:
            conditions.append(audit.c.at >= self.since)
        if self.until is not None:
            conditions.append(audit.c.at < self.until)
        return conditions


@dataclass(frozen=True)
class AuditRow:
    """One row of the audit table."""

    id: str
    type: str
    at: datetime
    user_id: str
    account: str | None
    session_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def position(self) -> Position:
        return self.at, self.id

    def to_json(self) -> dict[str, Any]:
        """The API's ``Event`` (``models.SecurityEvent.to_json``), with the
        row's ``user_id`` and ``account``: the row's columns, by name."""
        columns = {column.name: getattr(self, column.name) for column in fields(self)}
        return columns | {"at": isotime(self.at), "detail": dict(self.detail)}


def isotime(at: datetime) -> str:
    """UTC, ISO 8601, ``Z``: to the second as ``models.isotime`` (every time
    the service records is), with the microseconds of a time that has them."""
    at = at.astimezone(UTC)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{at.microsecond:06d}Z" if at.microsecond else f"{text}Z"


def _past(position: Position, newest_first: bool) -> ColumnElement[bool]:
    # A row value: both engines read it as a range of the index's (at, id)
    # after the filter's column (SQLite since 3.15), where the spelled-out
    # "at < x OR (at = x AND id < y)" makes SQLite walk the index from its end.
    row = tuple_(audit.c.at, audit.c.id)
    return row < position if newest_first else row > position


def _read(
    connection: Connection,
    filters: AuditFilter,
    *,
    limit: int,
    past: Position | None,
    newest_first: bool,
) -> tuple[list[AuditRow], Position | None]:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    conditions = filters.where()
    if past is not None:
        conditions.append(_past(past, newest_first))
    order = (audit.c.at.desc(), audit.c.id.desc()) if newest_first else (audit.c.at, audit.c.id)
    # One row more than the page says whether another page follows.
    statement = select(audit).where(*conditions).order_by(*order).limit(limit + 1)
    found = [AuditRow(**row._mapping) for row in connection.execute(statement)]
    if len(found) <= limit:
        return found, None
    del found[limit:]
    return found, found[-1].position


def find_events(
    connection: Connection,
    filters: AuditFilter,
    *,
    limit: int,
    before: Position | None = None,
) -> tuple[list[AuditRow], Position | None]:
    """A page of the rows ``filters`` matches, newest first (``at``, then ``id``,
    descending), strictly before ``before``; and the position the next page
    starts before (``None``: this page is the last)."""
    return _read(connection, filters, limit=limit, past=before, newest_first=True)


def iter_events(
    connection: Connection, filters: AuditFilter, *, page: int = 1000
) -> Iterator[AuditRow]:
    """Every row ``filters`` matches, oldest first (an export reads as a log
    does), ``page`` rows per query: a large trail is never held whole."""
    after: Position | None = None
    while True:
        rows, after = _read(connection, filters, limit=page, past=after, newest_first=False)
        yield from rows
        if after is None:
            return


def export_lines(url: str, filters: AuditFilter, out: TextIO) -> int:
    """Write the rows ``filters`` matches to ``out`` as JSON lines, oldest
    first, each one object as the admin API answers it; return how many.

    :raises AuditUnavailable: the database cannot be reached or read.
    """
    db = engine(url)
    count = 0
    try:
        with database_errors(), db.connect() as connection:
            for row in iter_events(connection, filters):
                out.write(json.dumps(row.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
    finally:
        db.dispose()
    return count


def encode_cursor(position: Position) -> str:
    """The opaque cursor of a page that ends at ``position``: base64url (no
    padding) of the JSON ``[microseconds since 1970 UTC, id]``."""
    at, event_id = position
    micros = (at - EPOCH) // timedelta(microseconds=1)
    raw = json.dumps([micros, event_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).rstrip(b"=").decode("ascii")


#: The longest event id (the table's ``id`` column).
ID_LENGTH: int = audit.c.id.type.length  # type: ignore[attr-defined]

#: The longest cursor :func:`decode_cursor` reads (an id is at most 64 characters).
MAX_CURSOR = 512


def decode_cursor(cursor: str) -> Position:
    """The position a cursor of :func:`encode_cursor` names.

    :raises ValueError: anything :func:`encode_cursor` does not make.
    """
    if len(cursor) > MAX_CURSOR or not cursor.isascii():
        raise ValueError("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not a cursor") from None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], str)
        and 0 < len(value[1]) <= ID_LENGTH
        # No stored id holds NUL (PostgreSQL cannot even compare one).
        and "\x00" not in value[1]
    ):
        raise ValueError("not a cursor")
    try:
        at = EPOCH + timedelta(microseconds=value[0])
    except OverflowError:
        raise ValueError("not a cursor") from None
    position = (at, value[1])
    # Canonical only: one position, one cursor.
    if encode_cursor(position) != cursor:
        raise ValueError("not a cursor")
    return position


def reader_engine(url: str) -> Engine:
    """The engine of a reader that serves requests: :func:`migrate.engine`'s
    (SQLite in WAL mode; PostgreSQL given ``migrate.CONNECT_TIMEOUT`` to
    connect). SQLite is opened per use, as cheap as it is, so a database
    file removed or replaced is noticed rather than read through a pooled
    handle. PostgreSQL connections are pooled and pinged as they are lent,
    under the page's deadline (:func:`deadline.ping_on_checkout`): the
    database may have gone and come back, or gone silent."""
    if make_url(url).get_backend_name() == "sqlite":
        return engine(url, poolclass=NullPool)
    db = engine(url, pool_pre_ping=False)
    ping_on_checkout(db)
    return db


def _bounded(connection: Connection) -> None:
    # In the page's transaction only, not a setting of the connection
    # (a URL's own options, or a pooler such as PgBouncer, may not take one).
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}s'")


class AuditReader:
    """The audit trail's pages, for one process.

    The engine is created on first use, so a server that forks its workers
    after loading the app (gunicorn's ``preload_app``) gives each its own
    pool. A database that is down is :class:`AuditUnavailable` for that
    request; the next one tries again.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _db(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = reader_engine(self._url)
            return self._engine

    def page(
        self, filters: AuditFilter, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of events as JSON, newest first, and the next page's cursor.

        :raises ValueError: ``cursor`` is not one a page gave.
        :raises AuditUnavailable: the database cannot be reached or read.
        """
        before = None if cursor is None else decode_cursor(cursor)
        with (
            answering_within(READ_DEADLINE),
            database_errors(),
            self._db().connect() as connection,
        ):
            _bounded(connection)
            rows, after = find_events(connection, filters, limit=limit, before=before)
        return [row.to_json() for row in rows], None if after is None else encode_cursor(after)

    def close(self) -> None:
        """Close the pool's connections (a next page opens new ones)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
