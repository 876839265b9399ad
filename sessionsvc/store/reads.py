"""The revocation check's read: one ``HMGET`` on every authenticated request,
straight on a connection kept for it where that does exactly what redis-py's
``execute_command`` would (:func:`read_fields`), and the retry policy both
share (:func:`retry_policy`)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from types import FunctionType
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def retry_policy() -> Retry:
    """The retry policy of every client built from a URL."""
    # One immediate retry on a broken connection (a pooled socket that died
    # with a Redis restart); no backoff and no retry of timeouts, so an
    # outage answers 503 within the configured timeout.
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


#: The attribute that marks a client built here whose steady-state read may
#: go straight to a connection of its own (see :func:`read_fields`).
_DIRECT = "_sessionsvc_direct"

#: The attribute that marks a client built from a URL with a
#: ``max_connections``: its checks borrow from its pool (see :func:`mark_direct`).
_BOUNDED = "_sessionsvc_bounded"


#: redis-py's own ``execute_command``, which :func:`read_fields` stands in for
#: (as it was when this module was imported).
_EXECUTE = redis.Redis.execute_command


def mark_direct(client: redis.Redis, *, bounded: bool) -> redis.Redis:
    """Mark ``client`` as one built here. ``bounded``: its URL gave a
    ``max_connections``, which then bounds every connection of the process
    (a fleet's, under Redis's ``maxclients``), as it did before checks kept
    connections of their own: they borrow from the pool instead."""
    setattr(client, _DIRECT, None)  # decided on first use
    setattr(client, _BOUNDED, bounded)
    return client


class _CheckConnections:
    """The connections a client's revocation checks read on, beside its pool.

    redis-py's pool, lending a connection, polls its socket for unread data
    (a connection given back before its reply was read) and records its
    observability counters, twice each way: a few microseconds and three
    system calls on every authenticated request. These connections need
    neither: one goes back (:meth:`give_back`) only once its reply was read
    whole, and any error disconnects it first (its next use reconnects), so
    none ever holds a reply that is not its own. As many are kept as checks
    ran at once, and no more than ``limit`` (the pool's ``max_connections``,
    or none when the URL gave one: see :func:`mark_direct`): past that the check
    borrows from the pool. A fork starts the child afresh.
    """

    __slots__ = ("closes", "idle", "limit", "made", "pid", "pool")

    def __init__(self, pool: redis.ConnectionPool, limit: int) -> None:
        self.pool = pool
        self.limit = limit
        self.pid = os.getpid()
        self.idle: list[Any] = []
        self.made = 0
        #: How many times :meth:`close` ran: a connection made before the
        #: last one and in use then is disconnected when it comes back.
        self.closes = 0

    def take(self) -> Any:
        """An idle connection, a new one, or ``None`` at the limit."""
        if self.pid != os.getpid():
            self.pid, self.idle, self.made = os.getpid(), [], 0
        try:
            return self.idle.pop()  # atomic: no lock
        except IndexError:
            pass
        if self.made >= self.limit:
            return None
        self.made += 1
        connection = self.pool.connection_class(**self.pool.connection_kwargs)
        setattr(connection, _CLOSES, self.closes)
        return connection

    def give_back(self, connection: Any) -> None:
        if self.pid != os.getpid():
            return
        self.idle.append(connection)
        # In use when the client closed, or closed meanwhile (close counts
        # itself before it disconnects the idle ones): not kept.
        if getattr(connection, _CLOSES) != self.closes:
            try:
                self.idle.remove(connection)
            except ValueError:  # taken again already: its check gives it back
                return
            connection.disconnect()

    def close(self) -> None:
        """Disconnect the idle connections, and those in use when they come
        back (with the client's pool)."""
        self.closes += 1
        self.made = 0
        while True:
            try:
                connection = self.idle.pop()  # a check may take one meanwhile
            except IndexError:
                return
            connection.disconnect()


#: The attribute of a check connection that says which :attr:`_CheckConnections.closes`
#: it was made after.
_CLOSES = "_sessionsvc_closes"


def _may_read_directly(client: Any) -> _CheckConnections | None:
    """Whether ``read_fields`` on ``client`` may skip redis-py's command
    machinery and still do exactly what ``execute_command`` does: the
    connections to read on if so, or ``None``.

    Only a plain ``redis.Redis`` built by :func:`.connections.client_factory_from_url`
    (our retry policy, :func:`retry_policy`), with a plain connection pool taken
    without arguments (redis-py 5.3+), no single connection, no client-side
    cache, RESP2 (no push notifications), no response callback for
    ``HMGET``, redis-py's own observability not enabled, and
    ``execute_command`` redis-py's own (not wrapped by a tracer, say).
    """
    pool = getattr(client, "connection_pool", None)
    execute = redis.Redis.__dict__.get("execute_command")
    try:
        observed = _redis_observability()
        takes_no_arguments = not any(
            p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(pool.get_connection).parameters.values()  # type: ignore[union-attr]
        )
    except (AttributeError, TypeError, ValueError):
        return None
    plain = (
        type(client) is redis.Redis
        and type(pool) is redis.ConnectionPool
        and takes_no_arguments
        and not observed
        and isinstance(execute, FunctionType)
        and execute.__module__ == "redis.client"
        and execute.__qualname__ == "Redis.execute_command"
        and not hasattr(execute, "__wrapped__")  # functools.wraps copies the names
        and getattr(client, "connection", None) is None
        and getattr(pool, "cache", None) is None
        and str(pool.connection_kwargs.get("protocol") or 2) == "2"
        and "HMGET" not in client.response_callbacks
        and client.get_retry() == retry_policy()
        and isinstance(getattr(pool, "max_connections", None), int)
    )
    if not plain:
        return None
    pool = cast(redis.ConnectionPool, pool)
    return _CheckConnections(pool, 0 if getattr(client, _BOUNDED, False) else pool.max_connections)


def _redis_observability() -> bool:
    """Whether redis-py (8.x) records metrics of its commands in this process."""
    try:
        from redis.observability import recorder  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    return getattr(recorder, "_metrics_collector", None) is not None


def close_client(client: Any) -> None:
    """Close a client's connections, those :func:`read_fields` keeps too."""
    connections = getattr(client, _DIRECT, None)
    if isinstance(connections, _CheckConnections):
        connections.close()
    client.close()


def read_fields(client: Any, key: str, fields: Sequence[str]) -> list[str | None]:
    """``HMGET key fields...``: the read of every authenticated request.

    On a client :func:`_may_read_directly` accepts, straight on one of its
    :class:`_CheckConnections`, with the one retry ``execute_command`` would
    make on a broken connection (a socket that died with a Redis restart is
    reconnected and asked again; a second failure, or a time-out, raises),
    without its per-call closures, retry object, response handling and the
    pool's checkout. Any other client (an injected one, a cluster, a
    Sentinel primary, fakeredis), and any whose ``execute_command`` was
    wrapped, reads through ``execute_command``.
    """
    direct = getattr(client, _DIRECT, False)
    if direct is None:  # built here, not decided yet
        direct = _may_read_directly(client) or False
        setattr(client, _DIRECT, direct)
    if (
        not isinstance(direct, _CheckConnections)
        # Wrapped since (a tracer instrumenting redis-py, a test counting
        # commands): the wrapper sees the read.
        or redis.Redis.execute_command is not _EXECUTE
        or "execute_command" in client.__dict__
    ):
        return cast(list[str | None], client.execute_command("HMGET", key, *fields))
    connection = direct.take()
    if connection is None:  # as many reading as may be kept: borrow
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            return _hmget(connection, key, fields)
        except BaseException:
            # Interrupted between the send and the read, say: the reply may
            # come after the pool's next poll for unread data.
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
    try:
        answer = _hmget(connection, key, fields)
    except BaseException:
        connection.disconnect()  # nothing unread stays on it
        direct.give_back(connection)
        raise
    direct.give_back(connection)
    return answer


def _hmget(connection: Any, key: str, fields: Sequence[str]) -> list[str | None]:
    """``HMGET`` on ``connection``, asked again once if it was broken."""
    try:
        connection.send_command("HMGET", key, *fields)
        return cast(list[str | None], connection.read_response())
    except redis.exceptions.ConnectionError:
        connection.disconnect()
    try:
        connection.send_command("HMGET", key, *fields)
        return cast(list[str | None], connection.read_response())
    except redis.exceptions.ConnectionError:
        connection.disconnect()
        raise
