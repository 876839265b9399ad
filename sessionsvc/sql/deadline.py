"""A deadline for a request's use of PostgreSQL that the server cannot miss
by going silent.

``statement_timeout`` is the server's to enforce: a server that stopped
answering (paused, or behind a network that drops everything) never does,
and the client's socket waits for ever. A :class:`Deadline` shuts down the
sockets of the connections its request uses once its time is up, so the
driver's wait ends with an error and the request answers.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import AuditUnavailable


class Deadline:
    """Shuts down the sockets :meth:`watch` was given once ``seconds`` pass."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: Whether the time ran out (the sockets were shut down).
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, fileno: int) -> None:
        """Shut down the socket ``fileno`` (a connection's) when time is up.
        It is watched through a duplicate: closed or reused meanwhile, the
        number never reaches another socket."""
        watched = socket.socket(fileno=os.dup(fileno))
        with self._lock:
            self._sockets.append(watched)
            if self.expired:
                _shut(watched)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for watched in self._sockets:
                _shut(watched)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            for watched in self._sockets:
                watched.close()  # the duplicate only: the connection's stays
            self._sockets.clear()


def _shut(watched: socket.socket) -> None:
    with suppress(OSError):  # closed by its connection already
        watched.shutdown(socket.SHUT_RDWR)


_CURRENT: ContextVar[Deadline | None] = ContextVar("sessionsvc_sql_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Within the block, the connections an engine of :func:`ping_on_checkout`
    lends are shut down once ``seconds`` pass."""
    current = Deadline(seconds)
    token = _CURRENT.set(current)
    current.start()
    try:
        yield current
    finally:
        current.stop()
        _CURRENT.reset(token)


@contextmanager
def answering_within(seconds: float) -> Iterator[None]:
    """:func:`deadline` for a use of the audit database, whose
    :class:`AuditUnavailable` says ``no answer in N s`` when the time ran out."""
    with deadline(seconds) as timed:
        try:
            yield
        except AuditUnavailable:
            if timed.expired:
                raise AuditUnavailable(
                    f"the audit database is unavailable: no answer in {seconds:g} s"
                ) from None
            raise


def ping_on_checkout(db: Engine) -> None:
    """Ping each connection ``db`` lends (instead of its ``pool_pre_ping``,
    which runs before anything can watch the connection), under the current
    :func:`deadline`: a connection that does not answer is replaced while
    there is time left, else its error ends the request."""

    @event.listens_for(db, "checkout")
    def _ping(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        current = _CURRENT.get()
        if current is not None:
            current.watch(dbapi_connection.fileno())
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()
        except db.dialect.loaded_dbapi.Error as exc:
            if current is not None and current.expired:
                raise
            raise DisconnectionError(f"the connection does not answer: {exc}") from exc
