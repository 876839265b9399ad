"""Writing, counting and pruning audit rows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, make_url, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    StatementError,
)

from .deadline import answering_within, ping_on_checkout
from .migrate import database_errors, engine
from .tables import audit

#: Rows deleted per statement by a prune: a first prune of a big table holds
#: no long lock, and the writer's inserts go on between the chunks.
PRUNE_CHUNK = 10_000


#: Seconds a write, a count or a chunk of a prune may take on PostgreSQL.
WRITE_DEADLINE = 60.0

#: The SQLSTATE class of a statement past one of PostgreSQL's limits.
PROGRAM_LIMIT_EXCEEDED = "54"


class RowsRefused(ValueError):
    """The database refused rows for what they hold (not for being down): a
    value it cannot store. The message says why, in one line."""


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


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


@contextmanager
def _errors() -> Iterator[None]:
    """Rows the database refuses for their content are :class:`RowsRefused`
    (trying again would fail again); a database that cannot answer is
    :class:`AuditUnavailable` (wait and try again)."""
    with database_errors():
        try:
            yield
        except (DataError, IntegrityError) as exc:
            raise RowsRefused(_reason(exc)) from exc
        except OperationalError as exc:
            if str(getattr(exc.orig, "sqlstate", "")).startswith(PROGRAM_LIMIT_EXCEEDED):
                # A value past one of the database's limits (PostgreSQL's
                # largest index entry: a user id of some kilobytes): the
                # same row fails again, it is not the database down.
                raise RowsRefused(_reason(exc)) from exc
            raise
        except (StatementError, UnicodeEncodeError) as exc:
            if isinstance(exc, DBAPIError):
                raise  # the database's own answer: database_errors says it
            # Not the database's answer: a value the driver could not send
            # (text with no UTF-8 for it, a naive time).
            raise RowsRefused(_reason(exc)) from exc


class AuditDatabase:
    """The audit table of one database, for the writer and the commands.

    The engine is made on first use (in the process that uses it: after a
    fork, never inherited) and pings its connections before lending them,
    so a database that restarted is reached again without help.
    """

    def __init__(self, url: str, *, deadline: float = WRITE_DEADLINE) -> None:
        self.url = url
        #: Seconds a use of PostgreSQL may take before it is given up on.
        self.deadline = deadline
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if make_url(self.url).get_backend_name() == "postgresql":
                # Pinged under the deadline of its use (_errors).
                self._engine = engine(self.url, pool_pre_ping=False)
                ping_on_checkout(self._engine)
            else:
                self._engine = engine(self.url)
        return self._engine

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """:func:`_errors`, within :attr:`deadline` on PostgreSQL: a server
        gone silent on a pooled connection (which cannot cancel anything
        itself) is unavailable then, not a writer that waits for ever."""
        if make_url(self.url).get_backend_name() != "postgresql":
            with _errors():
                yield
            return
        with answering_within(self.deadline), _errors():
            yield

    def write(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert ``rows`` in one transaction (all or none); how many were new.

        :raises AuditUnavailable: the database cannot be reached.
        :raises RowsRefused: the database refused a row's content.
        """
        with self._errors(), self.engine.begin() as connection:
            return insert_events(connection, rows)

    def count(self) -> int:
        """How many rows the table holds."""
        with self._errors(), self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(audit)).scalar_one())

    def prune(self, before: datetime, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete the rows older than ``before`` (aware), ``chunk`` per
        transaction, oldest first; how many."""
        deleted = 0
        while True:
            oldest = select(audit.c.id).where(audit.c.at < before).order_by(audit.c.at).limit(chunk)
            with self._errors(), self.engine.begin() as connection:
                done = connection.execute(delete(audit).where(audit.c.id.in_(oldest))).rowcount
            deleted += done
            if done < chunk:
                return deleted

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
