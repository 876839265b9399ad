"""Connections: Redis clients from a ``SESSIONSVC_REDIS_URL``, and what
counts as the store being unavailable.

URL schemes as Flask-Limiter's storage takes them: ``redis://``,
``rediss://``, ``unix://``, ``redis+cluster://`` and ``redis+sentinel://``;
no URL is the embedded development store (:mod:`.devstore`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from .. import metrics
from ..errors import StoreUnavailable
from ..settings import ConfigError
from .devstore import DEV_STORE_HOST, DEV_STORE_PORT, embedded_factory
from .reads import mark_direct, retry_policy

logger = logging.getLogger("sessionsvc")

#: Builds the Redis client of a process (``decode_responses=True``).
ClientFactory = Callable[[], "redis.Redis"]

#: Redis errors that mean "the store cannot answer now": connection loss,
#: time-outs, failover, but also OOM, ACL or persistence refusals. Whatever
#: Redis says, a session that cannot be checked is not served: 503.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)
# Errors that are expected in an outage; anything else is also logged with
# its message, since it may point at a bug or a misconfiguration.
_OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def client_location(client: Any) -> str:
    """Where a Redis client given to the extension connects, for log lines."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return f"(the {type(client).__name__} given to SessionManager)"


def unavailable(exc: Exception, where: str) -> StoreUnavailable:
    """Log why the store at ``where`` (:func:`describe`) could not answer;
    the error to fail closed with."""
    if isinstance(exc, _OUTAGE_ERRORS):
        metrics.STORE_ERRORS.labels("outage").inc()
        # redis-py's text says what failed (refused, timed out, name unknown).
        logger.warning("session store %s unavailable: %s: %s", where, type(exc).__name__, exc)
    else:
        metrics.STORE_ERRORS.labels("refused").inc()
        logger.error("session store %s refused: %s: %s", where, type(exc).__name__, exc)
    return StoreUnavailable("The session store is unavailable; try again shortly.")


def describe(url: str | None) -> str:
    """Where a ``SESSIONSVC_REDIS_URL`` points, for log lines: its scheme,
    hosts and ports (or socket path) and database, without credentials or
    options."""
    if url is None:
        return f"(the embedded development store; shared at {DEV_STORE_HOST}:{DEV_STORE_PORT})"
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}{parts.path}"


def _client_options(timeout: float) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry_policy(),
        "health_check_interval": 30,
    }


#: Seconds between two questions to the sentinels about where the primary
#: is, besides the one asked for every new connection.
SENTINEL_CHECK_INTERVAL = 1.0


class _SentinelPrimaryPool(SentinelConnectionPool):
    """A pool of connections to the Sentinel primary that notices a failover.

    redis-py asks the sentinels for the primary only when it opens a
    connection. After ``SENTINEL FAILOVER`` the old primary stays a primary
    until Sentinel reconfigures it as a replica (and closes its clients),
    about 10 s later; meanwhile pooled connections to it read stale sessions
    and write revocations that the resync then discards. Asking at most once
    per :data:`SENTINEL_CHECK_INTERVAL` closes idle connections to the old
    primary as soon as the sentinels name another (busy ones on release).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        # The first connection asks anyway.
        self._next_check = time.monotonic() + SENTINEL_CHECK_INTERVAL

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + SENTINEL_CHECK_INTERVAL
            try:
                self.get_master_address()  # type: ignore[no-untyped-call]
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                # Sentinels that cannot answer cannot name another primary:
                # keep the one we have, which answers for itself.
                logger.warning("sentinels unavailable: %s", type(exc).__name__)
        return super().get_connection(*args, **kwargs)


def client_factory_from_url(url: str | None, *, timeout: float) -> ClientFactory:
    """A factory of Redis clients for a ``SESSIONSVC_REDIS_URL``.

    ``redis://``, ``rediss://`` and ``unix://`` go to redis-py as they are;
    ``redis+cluster://host:port[,host:port...]`` builds a cluster client and
    ``redis+sentinel://host:port[,host:port...]/service[/db]`` asks the
    sentinels for the current primary. ``None`` is the embedded store.
    """
    if url is None:
        return embedded_factory(_client_options(1.0))
    scheme = urlsplit(url).scheme
    options = _client_options(timeout)
    if scheme in ("redis", "rediss", "unix"):
        try:
            parsed = parse_url(url)  # type: ignore[no-untyped-call]  # fail now, not on first use
        except ValueError as exc:
            raise ConfigError(f"SESSIONSVC_REDIS_URL is not a valid Redis URL: {exc}") from None
        if scheme != "unix" and urlsplit(url).path.strip("/") and "db" not in parsed:
            raise ConfigError("SESSIONSVC_REDIS_URL: the database must be a number")
        bounded = "max_connections" in parsed
        return lambda: mark_direct(redis.Redis.from_url(url, **options), bounded=bounded)
    if scheme in ("redis+cluster", "rediss+cluster"):
        hosts = _parse_multi_host(url)
        startup = [ClusterNode(host, port) for host, port in hosts.nodes]  # type: ignore[no-untyped-call]

        def cluster() -> redis.Redis:
            # A cluster client serves the same commands; scripts and
            # pipelines stay within one user's hash slot.
            return RedisCluster(  # type: ignore[return-value]
                startup_nodes=startup,
                username=hosts.username,
                password=hosts.password,
                ssl=scheme.startswith("rediss"),
                **options,
            )

        return cluster
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        hosts = _parse_multi_host(url)
        parts = [part for part in hosts.path.split("/") if part]
        if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ConfigError(
                "SESSIONSVC_REDIS_URL: a Sentinel URL is "
                "redis+sentinel://host:port[,host:port...]/service_name[/db]"
            )
        service, db = parts[0], int(parts[1]) if len(parts) == 2 else 0

        def sentinel() -> redis.Redis:
            # Typed as Any: redis-py types Sentinel only from 8.2 on, and
            # the package supports older releases (no ignore fits both).
            sentinels: Any = cast(Any, Sentinel)(
                hosts.nodes,
                socket_timeout=timeout,
                # redis-py's default retries a sentinel ten times with backoff:
                # seconds, not the timeout, before a 503.
                sentinel_kwargs={
                    "socket_timeout": timeout,
                    "socket_connect_timeout": timeout,
                    "retry": retry_policy(),
                },
            )
            primary: redis.Redis = sentinels.master_for(
                service,
                connection_pool_class=_SentinelPrimaryPool,
                db=db,
                username=hosts.username,
                password=hosts.password,
                ssl=scheme.startswith("rediss"),
                **options,
            )
            return primary

        return sentinel
    raise ConfigError(
        f"SESSIONSVC_REDIS_URL has an unknown scheme {scheme!r}: use redis://, rediss://, "
        "unix://, redis+cluster:// or redis+sentinel://"
    )


@dataclass(frozen=True)
class _MultiHost:
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: str


def _parse_multi_host(url: str) -> _MultiHost:
    # As redis-py reads redis:// URLs: user:password@, :password@ or user@.
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, secret = auth.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    nodes = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"SESSIONSVC_REDIS_URL: {item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if parse_qs(parts.query):
        raise ConfigError("SESSIONSVC_REDIS_URL: cluster and sentinel URLs take no query options")
    return _MultiHost(nodes, username, password, parts.path)


#: What the rate limiter's own cluster client takes over from the store's:
#: where and as whom to connect, and how long to wait (``ssl_*`` too).
#: Not the store's decoding, nor the callbacks bound to its client.
_LIMITER_CLUSTER_OPTIONS = frozenset(
    (
        "username",
        "password",
        "credential_provider",
        "ssl",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
    )
)


def limiter_storage(client: redis.Redis, key_prefix: str) -> tuple[str, dict[str, Any]]:
    """Flask-Limiter's ``storage_uri`` and ``storage_options`` for counters beside ``client``.

    limits' Redis storage on the client's connection pool: the same server,
    credentials and timeouts as the sessions, also for an injected client, a
    Sentinel primary or the embedded store; keys under ``key_prefix``.
    redis-py's pool reconnects by itself in a forked worker.

    On Redis Cluster, limits' cluster storage, which always builds a cluster
    client of its own (and, like ours, connects when it is built, here at
    ``init_app``): given our client's startup nodes, credentials, TLS
    settings, timeouts and retries. A fixed-window counter is one key per
    command, so nothing it sends spans two slots.
    """
    if isinstance(client, RedisCluster):
        kwargs = client.get_connection_kwargs()
        options = {
            name: value
            for name, value in kwargs.items()
            if name in _LIMITER_CLUSTER_OPTIONS or name.startswith("ssl_")
        }
        startup = [ClusterNode(node.host, node.port) for node in client.startup_nodes]
        # The URL only selects limits' cluster storage; the options say where it is.
        return "redis+cluster://", {
            **options,
            "startup_nodes": startup,
            "retry": client.retry,
            "key_prefix": key_prefix,
        }
    # The URL only selects limits' Redis storage; the pool says where it is.
    return "redis://", {"connection_pool": client.connection_pool, "key_prefix": key_prefix}
