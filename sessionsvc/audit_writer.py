"""The audit writer: security events from the Redis stream into the audit
table (``SESSIONSVC_AUDIT_URL``).

The scripts that record an event append it to a stream in the same atomic
step (:mod:`sessionsvc.store.webhooks`); the writers read it as one consumer
group (:data:`~sessionsvc.store.audit.AUDIT_GROUP`), so any number of them,
on any hosts, share the work and each event is taken by one. A batch is
inserted in one transaction and acknowledged only after the commit: a writer
that dies in between leaves its batch pending, another takes it over after
``takeover_after`` seconds, and the event id (the primary key) stores a
redelivered event once.

A database or a Redis that stops answering holds the batch in memory; the
writer tries again after 1 s, 2 s, ... 30 s, and logs once when it goes down
and once when it is back. The stream keeps the backlog meanwhile, up to its
bounds (:data:`~sessionsvc.store.webhooks.STREAM_MAX_LEN` entries,
:data:`~sessionsvc.store.webhooks.STREAM_MAX_AGE_MS`): what is trimmed
before it was stored is counted (``sessionsvc_audit_lost_total``) and logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import StoreUnavailable
from .metrics import AUDIT_FAILURES, AUDIT_LAG, AUDIT_LOST, AUDIT_ROWS_WRITTEN
from .models import isotime
from .settings import Settings
from .sql.events import AuditDatabase, RowsRefused
from .sql.migrate import AuditUnavailable, require_current
from .store import SessionStore
from .store.audit import AUDIT_GROUP, AuditBatch, AuditEntry
from .store.codec import event_from_json
from .store.webhooks import parse_entry_id

logger = logging.getLogger("sessionsvc.audit")

#: Entries taken (and rows inserted in one transaction) at a time.
BATCH = 500
#: Seconds after which a batch held by a writer that stopped answering is
#: taken over by another.
TAKEOVER_AFTER = 30.0
#: Seconds an idle writer waits before looking for new events again.
POLL_INTERVAL = 0.25
#: The first and the longest wait before trying a database or Redis again.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
#: Seconds between looks for new streams (Redis Cluster: one per slot in use),
#: and between SCANs for streams whose registration was missed.
DISCOVER_INTERVAL, SCAN_INTERVAL = 10.0, 300.0
#: Rows older than the retention are deleted once a day (by one writer),
#: which the writers ask about every :data:`PRUNE_LOOK` seconds.
PRUNE_EVERY, PRUNE_LOOK = 86400, 60.0
#: Consumers of writers that stopped are forgotten after an hour idle.
TIDY_IDLE = 3600.0


def escape_text(text: str) -> str:
    """``text`` as PostgreSQL stores it: a NUL becomes ``\\x00`` and a lone
    surrogate (no UTF-8 for it) ``\\udXXX``; other text is unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def escape(value: Any) -> Any:
    """``value`` with every text in it (keys too) passed through :func:`escape_text`."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, dict):
        return {escape_text(str(k)): escape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape(item) for item in value]
    return value


def row_of(entry: AuditEntry) -> dict[str, Any] | None:
    """The audit row of a stream entry; ``None`` when it holds no readable event."""
    if entry.user_id is None:
        return None
    try:
        event = event_from_json(entry.event)
        at = datetime.fromtimestamp(event.at, tz=UTC)
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        return None
    return {
        "id": escape_text(event.id),
        "type": escape_text(event.type),
        "at": at,
        "user_id": escape_text(entry.user_id),
        "account": escape(entry.account),
        "session_id": escape(event.session_id),
        "ip": escape(event.ip),
        "user_agent": escape(event.user_agent),
        "detail": escape(event.detail),
    }


def prune(database: AuditDatabase, retention_days: int) -> tuple[int, datetime]:
    """Delete the rows older than ``retention_days``; how many, and the cutoff."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    return database.prune(cutoff), cutoff


class _Outage:
    """One dependency's state: logged once when it goes down and once when
    it is back, with the wait before the next try doubling meanwhile."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self.delay = 0.0

    def failed(self, reason: str, held: int) -> float:
        if not self.down:
            self.down, self.delay = True, BACKOFF_FIRST
            logger.error(
                "audit: %s is unavailable (%s); %strying again until it is back",
                self.what,
                reason,
                f"{held} event(s) held in memory, " if held else "",
            )
        else:
            self.delay = min(self.delay * 2, BACKOFF_MAX)
        return self.delay

    def ok(self) -> None:
        if self.down:
            logger.warning("audit: %s is back; writing again", self.what)
            self.down, self.delay = False, 0.0


def _why(exc: BaseException) -> str:
    """What went wrong, in a few words: the driver's line after the
    message's own prefix, or the Redis client's exception's name."""
    text = str(exc)
    _, colon, reason = text.partition(": ")
    if isinstance(exc, StoreUnavailable):
        cause = exc.__cause__ or exc.__context__
        return type(cause).__name__ if cause is not None else "no answer"
    return reason if colon else text


@dataclass
class _Held:
    """A batch taken from a stream and not yet acknowledged."""

    stream: str
    rows: list[dict[str, Any]]
    #: Every entry of the batch (unreadable ones too): acknowledged once stored.
    entries: list[str] = field(default_factory=list)
    stored: bool = False


@dataclass(frozen=True)
class AuditStatus:
    """What ``audit status`` reports beside the schema."""

    #: Rows in the table (``None``: not counted, there is no table yet).
    rows: int | None
    #: Entries taken by a writer and not yet acknowledged.
    pending: int
    #: Entries no writer has taken yet.
    unread: int
    #: Seconds since the oldest event not yet stored was recorded (0: none).
    lag_seconds: float


class Writer:
    """Writes the streamed events to the audit table until stopped.

    :param store: the service's store.
    :param settings: the service's settings (the audit URL and retention).
    :param batch: entries taken, and rows inserted in one transaction, at a time.
    :param takeover_after: seconds after which a batch held by a writer that
        died is taken over.
    :param name: this writer's consumer name (default: host and process id).
    """

    def __init__(
        self,
        store: SessionStore,
        settings: Settings,
        *,
        batch: int = BATCH,
        takeover_after: float = TAKEOVER_AFTER,
        name: str | None = None,
    ) -> None:
        if settings.audit_url is None:
            raise ValueError("the audit trail is off: SESSIONSVC_AUDIT_URL is not set")
        self.store = store
        self.url = settings.audit_url
        self.database = AuditDatabase(settings.audit_url)
        self.retention_days = settings.audit_retention_days
        self.batch = batch
        self.takeover_ms = int(takeover_after * 1000)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        #: Set to stop :meth:`run` (after the batch in progress).
        self.stop = threading.Event()
        #: Seconds to wait before the next step (a dependency is down), else 0.
        self.retry_in = 0.0
        self._db = _Outage("the audit database")
        self._redis = _Outage("the store")
        self._held: _Held | None = None
        self._streams: list[str] = []
        self._turns = itertools.count()
        self._last: dict[str, float] = {}
        #: The store's clock minus ours (ms): entry ids carry the store's.
        self._skew_ms = 0

    # -- starting ---------------------------------------------------------------

    def ready(self) -> bool:
        """Wait until the database answers; ``False`` if stopped first.

        :raises SchemaOutdated: the schema is missing or not this version's.
        """
        while not self.stop.is_set():
            try:
                require_current(self.url)
            except AuditUnavailable as exc:
                self.stop.wait(self._db.failed(_why(exc), 0))
                continue
            self._db.ok()
            return True
        return False

    # -- one step -----------------------------------------------------------------

    def step(self) -> int:
        """Store one batch (or finish the one held) and do what is due
        (prune, tidy); how many entries were handled. A dependency that is
        down sets :attr:`retry_in`."""
        try:
            done = self._finish() if self._held else self._next()
            self._chores()
        except (AuditUnavailable, StoreUnavailable) as exc:
            outage = self._db if isinstance(exc, AuditUnavailable) else self._redis
            held = len(self._held.entries) if self._held else 0
            self.retry_in = outage.failed(_why(exc), held)
            return 0
        self.retry_in = 0.0
        return done

    def _due(self, chore: str, every: float) -> bool:
        now = time.monotonic()
        if now - self._last.get(chore, -every) < every:
            return False
        self._last[chore] = now
        return True

    def streams(self) -> list[str]:
        """The streams to read, looked for again now and then."""
        if not self._streams or self._due("discover", DISCOVER_INTERVAL):
            streams = self.store.audit_streams(scan=self._due("scan", SCAN_INTERVAL))
            self._skew_ms = self.store.server_time_ms() - int(time.time() * 1000)
            # Trimmed by age also when no event comes (a quiet stream).
            self.store.webhook_trim(streams)
            self._streams = streams
            self._redis.ok()
        return self._streams

    def _next(self) -> int:
        streams = self.streams()
        # Each look starts at another stream: a busy one cannot starve the rest.
        start = next(self._turns) % len(streams) if streams else 0
        for stream in streams[start:] + streams[:start]:
            batch = self.store.audit_take(
                stream, self.name, count=self.batch, takeover_ms=self.takeover_ms
            )
            self._redis.ok()
            self._lost(batch)
            if batch.entries:
                # The lag, as this writer sees it: the age of the oldest
                # entry it took (an entry id starts with the store's time).
                oldest = min(parse_entry_id(entry.entry)[0] for entry in batch.entries)
                now = int(time.time() * 1000) + self._skew_ms
                AUDIT_LAG.set(max(0.0, (now - oldest) / 1000))
                self._held = self._hold(batch)
                return self._finish()
        AUDIT_LAG.set(0.0)  # nothing waits (for this writer)
        return 0

    def _lost(self, batch: AuditBatch) -> None:
        if batch.lost > 0:
            AUDIT_LOST.inc(batch.lost)
            logger.error(
                "audit: %d event(s) of stream %s were trimmed before they were stored: "
                "lost to the audit trail",
                batch.lost,
                batch.stream,
            )

    def _hold(self, batch: AuditBatch) -> _Held:
        held = _Held(batch.stream, [], [entry.entry for entry in batch.entries])
        for entry in batch.entries:
            row = row_of(entry)
            if row is None:
                AUDIT_FAILURES.labels("unreadable").inc()
                logger.error("audit: stream entry %s holds no readable event: dropped", entry.entry)
            else:
                held.rows.append(row)
        return held

    def _finish(self) -> int:
        held = self._held
        assert held is not None
        if not held.stored:
            AUDIT_ROWS_WRITTEN.inc(self._write(held.rows))
            held.stored = True
            self._db.ok()
        self.store.audit_ack(held.stream, held.entries)
        self._redis.ok()
        self._held = None
        return len(held.entries)

    def _write(self, rows: list[dict[str, Any]]) -> int:
        """Insert ``rows`` in one transaction; rows the database refuses are
        found by halves, and each is logged, counted and skipped."""
        try:
            return self.database.write(rows)
        except RowsRefused as exc:
            if len(rows) == 1:
                AUDIT_FAILURES.labels("refused").inc()
                logger.error(
                    "audit: event %s (%s) refused by the database: skipped (%s)",
                    rows[0]["id"],
                    rows[0]["type"],
                    exc,
                )
                return 0
        half = len(rows) // 2
        return self._write(rows[:half]) + self._write(rows[half:])

    def _chores(self) -> None:
        if self._due("prune", PRUNE_LOOK) and self.store.audit_prune_due(PRUNE_EVERY):
            deleted, cutoff = prune(self.database, self.retention_days)
            logger.info(
                "audit: pruned %d row(s) older than %s", deleted, isotime(int(cutoff.timestamp()))
            )
        if self._due("tidy", TIDY_IDLE):
            self.store.webhook_tidy(self.streams(), AUDIT_GROUP, idle_ms=int(TIDY_IDLE * 1000))

    # -- running ------------------------------------------------------------------

    def run(self) -> None:
        """Write until :attr:`stop` is set (the batch in progress is finished first).

        :raises SchemaOutdated: the schema is missing or not this version's.
        """
        if not self.ready():
            return
        try:
            while not self.stop.is_set():
                try:
                    done = self.step()
                except Exception:  # pragma: no cover - logged, and the writer goes on
                    # A writer that exits writes nothing until someone
                    # restarts it; what it held is taken over or retried.
                    logger.exception("audit: a step failed unexpectedly")
                    self.retry_in = BACKOFF_MAX
                    done = 0
                if self.retry_in:
                    self.stop.wait(self.retry_in)
                elif not done:
                    self.stop.wait(POLL_INTERVAL)
        finally:
            self.database.close()

    def status(self, *, rows: bool = True) -> AuditStatus:
        """The rows stored (``None`` without ``rows``), the events waiting, and the lag.

        :raises AuditUnavailable: the database cannot be reached.
        :raises StoreUnavailable: Redis cannot be reached.
        """
        # Counted (pages of 1,000 entries): for the command, not the loop.
        backlog = self.store.audit_backlog(self.store.audit_streams(scan=True))
        lag = 0.0
        if backlog.oldest_ms is not None:
            lag = max(0.0, (self.store.server_time_ms() - backlog.oldest_ms) / 1000)
        count = self.database.count() if rows else None
        return AuditStatus(count, backlog.pending, backlog.unread, lag)


__all__ = ["AuditStatus", "Writer", "escape", "escape_text", "prune", "row_of"]
