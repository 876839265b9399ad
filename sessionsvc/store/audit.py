"""The audit writers' side of the event streams (see ``scripts/events.lua``).

The scripts that record a security event also append it to a stream, in the
same atomic step, whenever webhooks or the audit trail are on. The audit
writers (:mod:`sessionsvc.audit_writer`) share one consumer group on each
stream, :data:`AUDIT_GROUP`, beside the webhook endpoints' groups:

1. a writer takes a batch (``audit_take.lua``): the entries a writer that
   stopped held longer than the takeover time, else new ones; they are now
   pending, held by its consumer;
2. it stores them in the audit table, in one transaction;
3. only then it acknowledges them (:meth:`AuditStore.audit_ack`). A writer
   that dies between 2 and 3 leaves them pending; another claims them and
   stores them again, which the table's primary key makes a no-op.

The stream is bounded (:data:`.webhooks.STREAM_MAX_LEN` entries, about, and
:data:`.webhooks.STREAM_MAX_AGE_MS`): entries trimmed before any writer
stored them are counted by the take that finds them gone, once, in the
group's counters hash beside the stream (``P:{W}:wh:audit:c``, field
``lost``), and reported to the writer, which logs them and counts them in a
metric: never a silent loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from .keys import user_of_tag
from .webhooks import WebhookStore, parse_entry_id

#: The audit writers' consumer group on every stream (webhook endpoints'
#: groups are named by 16 hex digits: never this).
AUDIT_GROUP = "audit"


@dataclass(frozen=True)
class AuditEntry:
    """One event for the audit table, as the stream holds it."""

    #: The stream entry's id (``ms-seq``): what is acknowledged.
    entry: str
    #: The user's id; ``None`` when the entry names none (unreadable).
    user_id: str | None
    #: The user store's account behind the user when the event was
    #: recorded; ``None`` for a host app's users.
    account: str | None
    #: The event as stored (``codec.event_from_json`` reads it).
    event: str


@dataclass(frozen=True)
class AuditBatch:
    """What one take handed a writer."""

    stream: str
    entries: list[AuditEntry]
    #: Entries trimmed from the stream before any writer stored them,
    #: found by this take (each loss is counted by one take only).
    lost: int


@dataclass(frozen=True)
class AuditBacklog:
    """What the audit writers have not stored yet (``audit status``)."""

    #: Entries no writer has taken yet.
    unread: int
    #: Entries taken but not acknowledged (being written, or held by a
    #: writer that stopped, until another claims them).
    pending: int
    #: The store's time (ms) of the oldest entry not stored yet; ``None``
    #: when there is none.
    oldest_ms: int | None
    #: Entries lost to trimming so far (all streams).
    lost: int


class AuditStore(WebhookStore):
    """The audit writers' side of the streams."""

    def audit_streams(self, *, scan: bool = False) -> list[str]:
        """The streams to read (the webhook deliverers' streams)."""
        return self.webhook_streams(scan=scan)

    def audit_take(
        self, stream: str, consumer: str, *, count: int = 500, takeover_ms: int = 30_000
    ) -> AuditBatch:
        """The next batch for ``consumer``: entries a stopped writer held
        longer than ``takeover_ms``, else new ones; empty when there are
        none. Joins the group first when it does not exist yet (from the
        stream's first entry)."""
        keys = [stream, self.keys.audit_counters(stream)]
        with self._available():
            lost, entries = self._run(
                "audit_take", keys, [AUDIT_GROUP, consumer, count, takeover_ms]
            )
        return AuditBatch(stream, [_entry(item) for item in entries or []], int(lost))

    def audit_ack(self, stream: str, entry_ids: Sequence[str]) -> None:
        """Acknowledge stored entries: no writer takes them again."""
        if not entry_ids:
            return
        with self._available():
            self.client.xack(stream, AUDIT_GROUP, *entry_ids)

    def audit_backlog(self, streams: Sequence[str]) -> AuditBacklog:
        """What is not stored yet, over ``streams``: counted (pages of
        1,000 entries: for ``audit status``, not for a request)."""
        unread = pending = lost = 0
        oldest: tuple[int, int] | None = None
        client = cast(Any, self.client)
        with self._available():
            for stream in streams:
                lost += int(client.hget(self.keys.audit_counters(stream), "lost") or 0)
                if not client.exists(stream):
                    continue
                groups = client.xinfo_groups(stream)
                group = next((g for g in groups if g.get("name") == AUDIT_GROUP), None)
                last = "0-0" if group is None else str(group.get("last-delivered-id"))
                first_unread = client.xrange(stream, min=f"({last}", max="+", count=1)
                if first_unread:
                    unread += self._count_after(stream, last)
                    oldest = _older(oldest, parse_entry_id(first_unread[0][0]))
                if group is not None and int(group.get("pending") or 0):
                    summary = client.xpending(stream, AUDIT_GROUP)
                    pending += int(summary.get("pending") or 0)
                    if summary.get("min"):
                        oldest = _older(oldest, parse_entry_id(summary["min"]))
        return AuditBacklog(unread, pending, None if oldest is None else oldest[0], lost)

    def audit_prune_due(self, every_s: int) -> bool:
        """``True`` for one caller in every ``every_s`` seconds, whichever
        asks first (the writers' daily prune)."""
        with self._available():
            return bool(self.client.set(self.keys.audit_prune(), "1", nx=True, ex=every_s))


def _entry(item: Any) -> AuditEntry:
    entry_id, flat = item
    values = {str(flat[i]): flat[i + 1] for i in range(0, len(flat or []) - 1, 2)}
    account = values.get("a")
    return AuditEntry(
        str(entry_id),
        user_of_tag(str(values.get("u", ""))),
        None if account is None else str(account),
        str(values.get("e", "")),
    )


def _older(oldest: tuple[int, int] | None, other: tuple[int, int]) -> tuple[int, int]:
    return other if oldest is None else min(oldest, other)
