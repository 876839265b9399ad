"""The plumbing every part of the store shares: the client, scripts, keys, errors."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from ..errors import StoreUnavailable
from . import scripts
from .codec import AgentTexts, event_from_json, event_head
from .connections import (
    UNAVAILABLE_ERRORS,
    ClientFactory,
    client_location,
    limiter_storage,
    unavailable,
)
from .devstore import PER_WORKER
from .keys import Keys, stream_tag
from .reads import close_client
from .records import Actor, EventSink, Policy

logger = logging.getLogger("sessionsvc")


class StoreBase:
    """What every part of the store shares (:class:`SessionStore` is the whole).

    The client is created lazily, on first use in each process, so a
    gunicorn master can build the app before forking workers.

    :param client_factory: builds the Redis client (``decode_responses=True``).
    :param prefix: namespace of every key.
    :param events_max: security events kept per user.
    :param events_ttl: seconds a user's events (and sign-in history)
        outlive their last change.
    :param policy: what activity does (touch interval, idle timeout,
        anomalies, location).
    :param on_events: called with the events that activity or a listing
        recorded (ip changes, anomalies, idle revocations), to log and
        signal them.
    :param webhooks: also queue every event recorded in a webhook stream,
        in the same atomic step (see :mod:`.webhooks`); its readers are the
        webhook deliverers and the audit writers (see :mod:`.audit`), so it
        is on when either is.
    :param where: where the store is, for log lines (no credentials); by
        default, where the client connects.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        prefix: str,
        events_max: int = 1000,
        events_ttl: int = 30 * 86400,
        policy: Policy | None = None,
        on_events: EventSink | None = None,
        webhooks: bool = False,
        where: str | None = None,
    ) -> None:
        self._factory = client_factory
        self._where = where
        #: Where everything lives.
        self.keys = Keys(prefix)
        self._events_max = events_max
        self._events_ttl = events_ttl
        self.policy = policy or Policy()
        self.on_events = on_events
        #: Queue events in the stream, for webhooks and the audit trail
        #: (see :meth:`stream_keys`).
        self.webhooks = webhooks
        self._client: redis.Redis | None = None
        self._cluster = False
        self._registered_streams: set[str] = set()
        self._pid = 0
        self._lock = threading.Lock()
        self._scripts: dict[str, Any] = {}
        #: The interned user agents this process has met (see :class:`.codec.AgentTexts`).
        self.agent_texts = AgentTexts()

    # -- plumbing -----------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """The process's Redis client, created on first use after a fork."""
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    client = self._factory()
                    self._scripts = {
                        name: client.register_script(scripts.source(name)) for name in scripts.NAMES
                    }
                    self._cluster = isinstance(client, RedisCluster)
                    self._registered_streams = set()
                    self._client, self._pid = client, pid
        assert self._client is not None
        return self._client

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = self.client
        script = self._scripts[name]
        try:
            # EVALSHA straight away: redis-py's Script wrapper costs more than
            # the script itself on the hot path.
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # A new, restarted or failed-over server has not cached it yet.
            client.script_load(script.script)
            return client.evalsha(script.sha, len(keys), *keys, *args)

    @contextmanager
    def _available(self) -> Iterator[None]:
        """Turn "the store cannot answer" into :class:`StoreUnavailable`."""
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc, self.where) from exc

    @property
    def private(self) -> bool:
        """Whether this is an in-process embedded store, of this process alone."""
        return bool(getattr(self._factory, "private", False))

    def check_one_process(self, environ: Mapping[str, Any]) -> None:
        """Fail closed when a multi-process WSGI server (``wsgi.multiprocess``)
        runs on a private embedded store: each process would have sessions of
        its own, a token made in one refused by the others (gunicorn is
        refused at start-up already: see :mod:`.devstore`).

        :raises StoreUnavailable: so it is.
        """
        if self.private and environ.get("wsgi.multiprocess"):
            _say_per_process_store()
            raise StoreUnavailable("The session store is not shared by the server's processes.")

    @property
    def where(self) -> str:
        """Where the store is, for log lines: its URL without credentials."""
        return self._where or client_location(self._client)

    def _hgetall(self, key: str) -> dict[str, str]:
        # The client decodes responses: every value is a str.
        return cast(dict[str, str], self.client.hgetall(key))

    def session_key(self, user_id: str, session_id: str) -> str:
        """The key of one session hash."""
        return self.keys.session(user_id, session_id)

    def index_key(self, user_id: str) -> str:
        """The key of a user's session index."""
        return self.keys.index(user_id)

    def events_key(self, user_id: str) -> str:
        """The key of a user's security-event list."""
        return self.keys.events(user_id)

    def activity_events_key(self, user_id: str) -> str:
        """The key of a user's list of the events activity records."""
        return self.keys.activity_events(user_id)

    def agents_key(self, user_id: str) -> str:
        """The key of a user's interned user agents."""
        return self.keys.agents(user_id)

    def user_key(self, user_id: str) -> str:
        """The key of a user record (standalone user store)."""
        return self.keys.user(user_id)

    def known_key(self, user_id: str) -> str:
        """The key of a user's sign-in history (device families, countries)."""
        return self.keys.known(user_id)

    @property
    def cluster(self) -> bool:
        """Whether the store is a Redis Cluster."""
        self.client  # noqa: B018 (made on first use: it tells)
        return self._cluster

    def stream_keys(self, user_id: str) -> list[str]:
        """The webhook stream a script recording the user's events appends
        to, as the last of its ``KEYS`` (see ``events.lua``); none when
        webhooks and the audit trail are off.

        On Redis Cluster each slot in use has its own stream; the first time
        a process writes to one, it adds the stream's tag to the set the
        deliverers read (deliverers also ``SCAN`` for streams, so a tag this
        misses is found a little later, never lost).
        """
        if not self.webhooks:
            return []
        cluster = self.cluster
        tag = stream_tag(user_id, cluster=cluster)
        if cluster and tag not in self._registered_streams:
            try:
                self.client.sadd(self.keys.webhook_streams(), tag)
                self._registered_streams.add(tag)
            except UNAVAILABLE_ERRORS:
                # The set's node is out of reach: the event is still queued
                # (in the user's slot), deliverers find the stream by SCAN,
                # and the next event of the slot registers it again.
                pass
        return [self.keys.webhook_stream(tag)]

    def event_keys(self, user_id: str) -> list[str]:
        """The last of the ``KEYS`` of a script that records the user's
        events: the user's agents hash, where the user agents of the events
        it keeps are interned, and the webhook stream (:meth:`stream_keys`)."""
        return [self.agents_key(user_id), *self.stream_keys(user_id)]

    def _event_args(self, now: int, actor: Actor) -> list[Any]:
        head = event_head(now, actor.ip, actor.user_agent)
        return [self._events_max, self._events_ttl, *head]

    def _recorded(self, user_id: str, entries: Sequence[str]) -> None:
        """Hand the events a script recorded to the sink, oldest first."""
        if entries and self.on_events is not None:
            self.on_events(user_id, [event_from_json(entry) for entry in entries])

    # -- rate-limit counters ---------------------------------------------------

    def limiter_storage(self) -> tuple[str, dict[str, Any]]:
        """Flask-Limiter's ``storage_uri`` and ``storage_options`` for counters
        beside the sessions (see :func:`.connections.limiter_storage`)."""
        return limiter_storage(self.client, self.keys.limiter)

    # -- health -------------------------------------------------------------

    def close(self) -> None:
        """Close this process's connections, if any were made."""
        client, self._client = self._client, None
        if client is not None:
            close_client(client)

    def load_scripts(self) -> None:
        """Cache every script on the server now (otherwise done on first use)."""
        client = self.client
        with self._available():
            for script in self._scripts.values():
                client.script_load(script.script)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        with self._available():
            self.client.ping()


@functools.cache
def _say_per_process_store() -> None:
    logger.error(PER_WORKER.format(workers="several"))
