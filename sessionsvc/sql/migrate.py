"""The audit schema's migrations, run from the package (no ``alembic.ini``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, make_url, select
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry

# The one class the API answers 503 with and the commands print: re-exported.
from ..errors import AuditUnavailable as AuditUnavailable
from .tables import VERSION_TABLE

#: The Alembic script directory shipped inside the package.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaOutdated(RuntimeError):
    """The audit schema is missing or not this version's; the message says what to run."""


#: What creates or upgrades the schema, for the messages that ask for it.
UPGRADE_COMMAND = "flask sessions audit upgrade"


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn the driver's errors (refused, no such file, authentication, no
    such table), and a pool with no connection free in time, into
    :class:`AuditUnavailable`, with the first line of what went wrong: the
    rest is SQLAlchemy's background link, and the statement."""
    try:
        yield
    except (DBAPIError, PoolTimeout) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
        lines = str(cause).strip().splitlines() or [type(cause).__name__]
        raise AuditUnavailable(f"the audit database is unavailable: {lines[0]}") from exc


def engine(
    url: str, *, create: bool = False, connect_args: dict[str, Any] | None = None, **options: Any
) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``);
    ``connect_args`` and ``options`` go to ``create_engine``.

    SQLite runs in write-ahead-log mode, so the API's reads and a writer's
    inserts do not wait for each other, and a connection waits up to
    :data:`SQLITE_BUSY_TIMEOUT` seconds for another's write to end rather
    than failing at once ("database is locked"). PostgreSQL is given
    :data:`CONNECT_TIMEOUT` to connect. A SQLite file is created
    only with ``create`` (by :func:`upgrade`): a file that was removed is a
    database that is unavailable, not an empty trail made again; and a
    pooled connection to a file removed or replaced since it was opened is
    not lent (its writes would go to a file no one reads) but opened again.
    """
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    path = sqlite_file(url)
    if path is not None and not create:
        # A URI filename, read-write: SQLite's default also creates.
        parsed = parsed.set(
            database="file:" + quote(path), query={**parsed.query, "mode": "rw", "uri": "true"}
        )
    arguments: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT} if sqlite else {}
    if not sqlite and "connect_timeout" not in parsed.query:  # the URL's, if it says
        arguments["connect_timeout"] = CONNECT_TIMEOUT
    arguments |= connect_args or {}
    options.setdefault("pool_pre_ping", True)
    db = create_engine(parsed, connect_args=arguments, **options)
    if sqlite:
        event.listen(db, "connect", _sqlite_wal)
    if path is not None:
        event.listen(db, "connect", partial(_sqlite_opened, path))
        event.listen(db, "checkout", partial(_sqlite_still_there, path))
    return db


def sqlite_file(url: str) -> str | None:
    """The absolute path of a SQLite URL's file (``None``: not SQLite, or in memory)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # a URI of the operator's own: used as written
    return os.path.abspath(database)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _sqlite_opened(path: str, _connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["sqlite_file"] = _identity(path)


def _sqlite_still_there(
    path: str, _connection: Any, record: ConnectionPoolEntry, _proxy: Any
) -> None:
    opened = record.info.get("sqlite_file")
    if opened is None or opened != _identity(path):
        # The pool opens a new connection instead (which fails while no
        # file is there: the database is unavailable until one is).
        raise DisconnectionError(f"the SQLite file {path} was removed or replaced")


#: Seconds to wait for PostgreSQL to accept a connection (and answer its
#: start): a server that does not answer is unavailable, not a reader, a
#: writer or a command that hangs.
CONNECT_TIMEOUT = 5

#: Seconds a SQLite connection waits for another's write to end.
SQLITE_BUSY_TIMEOUT = 10.0
#: Seconds an upgrade of a SQLite file waits for the upgrades before it.
UPGRADE_WAIT = 120.0


def _sqlite_wal(connection: Any, _record: Any) -> None:
    # Kept in the file: every later connection, of any process, is in WAL mode.
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # env.py runs on this connection instead of opening one of its own.
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The newest revision the package ships."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


#: The key of the PostgreSQL advisory lock an upgrade holds (any constant
#: of the package's own: a host app's locks use keys of theirs).
UPGRADE_LOCK = 5_981_912_900_910_673_523


def upgrade(url: str) -> None:
    """Create the audit schema or bring it up to the newest revision (a no-op
    when it is); :class:`AuditUnavailable` when the database cannot be reached.

    One transaction, which one upgrade at a time holds (a PostgreSQL
    advisory lock; SQLite's write lock, taken at its start): upgrades run
    at once by several instances wait for each other, and the later ones
    find the schema current; an upgrade stopped half-way leaves nothing of
    itself (SQLite too, whose driver would otherwise run each statement of
    the schema in a transaction of its own).
    """
    # SQLite: an upgrade waits for the others' far longer than a request
    # for a write (each holds the lock while Alembic loads and runs).
    wait = {"timeout": UPGRADE_WAIT} if sqlite_file(url) is not None else None
    db = engine(url, create=True, connect_args=wait)
    if db.dialect.name == "sqlite":
        event.listen(db, "connect", _sqlite_driver_autocommit)
        event.listen(db, "begin", _sqlite_begin_immediate)
    deadline = time.monotonic() + UPGRADE_WAIT
    try:
        while True:
            try:
                with database_errors(), db.begin() as connection:
                    if db.dialect.name == "postgresql":
                        connection.execute(select(func.pg_advisory_xact_lock(UPGRADE_LOCK)))
                    command.upgrade(_config(connection), "head")
                return
            except AuditUnavailable as exc:
                # SQLite answers "locked" at once, without waiting, in some
                # of the moments another connection opens or turns the file
                # to WAL mode: the upgrade, undone whole, is tried again.
                locked = "database is locked" in str(exc.__cause__)
                if db.dialect.name != "sqlite" or not locked or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        db.dispose()


def _sqlite_driver_autocommit(connection: Any, _record: Any) -> None:
    # The driver begins no transaction of its own (its own would not cover
    # CREATE TABLE): _sqlite_begin_immediate begins the one that does.
    connection.isolation_level = None


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Takes the write lock now, waiting up to the busy timeout for another
    # upgrade's to end, before the schema is read.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def schema_state(url: str) -> tuple[str | None, str | None]:
    """The database's schema revision (``None``: no schema yet) and the
    package's head; :class:`AuditUnavailable` when the database cannot be reached."""
    path = sqlite_file(url)
    if path is not None and os.path.isdir(os.path.dirname(path)) and not os.path.exists(path):
        return None, head()  # no file yet: no schema (and none is made by looking)
    db = engine(url)
    try:
        with database_errors(), db.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            current = context.get_current_revision()
    finally:
        db.dispose()
    return current, head()


def require_current(url: str) -> None:
    """Raise :class:`SchemaOutdated`, naming the command to run, unless the
    database's schema is this version's: what writes to it must not guess."""
    current, newest = schema_state(url)
    if current is None:
        raise SchemaOutdated(f"the audit schema does not exist yet: run {UPGRADE_COMMAND}")
    if current != newest:
        raise SchemaOutdated(
            f"the audit schema is at revision {current}, this version needs {newest}: "
            f"run {UPGRADE_COMMAND}"
        )
