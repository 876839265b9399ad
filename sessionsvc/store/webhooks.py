"""The webhook queue: what deliverers read and write (the scripts that record
events append them to the streams, see ``scripts/events.lua``).

Each endpoint has its own consumer group on every stream, named by the
endpoint's id, so a dead receiver delays only its own deliveries. A
delivery's life:

1. a deliverer reads the entry with ``XREADGROUP`` (it is now pending, held
   by that deliverer's consumer) and posts it;
2. on a 2xx, ``webhook_done.lua`` acknowledges it and counts it delivered;
3. on a failure, ``webhook_failed.lua`` acknowledges it and schedules the
   next attempt in the endpoint's retry zset, with the event beside it (so
   trimming the stream never loses a retry), or parks it as failed after
   the last delay;
4. ``webhook_take.lua`` hands a due retry to one deliverer, leased;
5. an entry held longer than the takeover time by a deliverer that died is
   claimed by another with ``XAUTOCLAIM``; a leased retry whose deliverer
   died is due again when its lease is over.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from .base import StoreBase
from .keys import SINGLE_STREAM_TAG, user_of_tag

logger = logging.getLogger("sessionsvc.webhooks")

#: A failing endpoint keeps at most this many deliveries waiting for a retry
#: per stream; a failure beyond it is parked as failed at once.
RETRY_MAX = 100_000
#: Parked (failed) deliveries kept per endpoint and stream, newest first.
PARKED_MAX = 1000
#: What a stream keeps, at most: entries (about: whole nodes of 100 are
#: trimmed) and age. The scripts that append trim by them (``events.lua``,
#: which holds the same numbers); deliverers also trim quiet streams by age.
STREAM_MAX_LEN = 100_000
STREAM_MAX_AGE_MS = 7 * 86400 * 1000
#: Why a delivery was parked when its entry was trimmed while it was held.
TRIMMED = "trimmed from the stream before it was delivered"


@dataclass(frozen=True)
class Delivery:
    """One event to post to one endpoint."""

    stream: str
    #: The stream entry's id (the delivery's handle, not the webhook id).
    entry: str
    #: The user's id (``None`` when the entry names none: it is dropped).
    user_id: str | None
    tag: str
    #: The event as stored (``event_from_json`` reads it).
    event: str
    #: Which attempt this is: 1 for the first.
    attempt: int


@dataclass
class DeliveryCounts:
    """An endpoint's deliveries (``webhooks status``)."""

    #: In the stream, not yet delivered (unread, or being posted now).
    pending: int = 0
    delivered: int = 0
    #: Waiting for their next attempt.
    retrying: int = 0
    #: Parked after the last retry.
    failed: int = 0
    #: The newest parked deliveries (JSON objects), newest first.
    parked: list[dict[str, Any]] = field(default_factory=list)


class WebhookStore(StoreBase):
    """The deliverers' side of the webhook streams."""

    def webhook_streams(self, *, scan: bool = False) -> list[str]:
        """The keys of the streams to deliver from.

        One on a single server. On a Cluster, those in the set the services
        fill; with ``scan``, also those a ``SCAN`` of every primary finds
        (a stream whose registration failed).
        """
        keys = self.keys
        if not self.cluster:
            return [keys.webhook_stream(SINGLE_STREAM_TAG)]
        with self._available():
            tags = {str(tag) for tag in self.client.smembers(keys.webhook_streams())}
            found = {keys.webhook_stream(tag) for tag in tags}
            if scan:
                pattern = keys.webhook_stream_pattern()
                client = cast(Any, self.client)
                found.update(str(key) for key in client.scan_iter(match=pattern, count=1000))
        return sorted(found)

    def _parts(self, stream: str, endpoint: str) -> list[str]:
        keys = self.keys
        return [
            stream,
            *(keys.webhook_endpoint(stream, endpoint, part) for part in ("r", "p", "c", "f")),
        ]

    def webhook_join(self, streams: Iterable[str], endpoint: str) -> None:
        """Create the endpoint's consumer group on each stream (from its
        first entry: events queued before any deliverer ran are delivered)."""
        with self._available():
            for stream in streams:
                try:
                    self.client.xgroup_create(stream, endpoint, id="0", mkstream=True)
                except redis.exceptions.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    def webhook_busy(
        self, streams: Sequence[str], endpoint: str, *, takeover_ms: int, skew_ms: int = 0
    ) -> list[str]:
        """The streams where the endpoint has work: an entry its group has
        not read, one held longer than ``takeover_ms``, or a retry due (by
        the store's clock: ``skew_ms`` is it minus this host's). One
        pipelined round trip (per node on a Cluster); a stream whose answer
        is an error counts as busy (the take finds out why)."""
        if not streams:
            return []
        now_ms = int(time.time() * 1000) + skew_ms
        with self._available():
            pipe = self.client.pipeline(transaction=False)
            for stream in streams:
                pipe.xinfo_groups(stream)
                pipe.xrevrange(stream, count=1)
                pipe.xpending_range(stream, endpoint, "-", "+", 1, idle=takeover_ms)
                pipe.zrangebyscore(self._parts(stream, endpoint)[1], "-inf", now_ms, 0, 1)
            replies = pipe.execute(raise_on_error=False)
        busy = []
        for i, stream in enumerate(streams):
            groups, newest, stale, due = replies[4 * i : 4 * i + 4]
            if any(isinstance(reply, Exception) for reply in (groups, newest, stale, due)):
                busy.append(stream)
                continue
            group = next((g for g in groups if g.get("name") == endpoint), None)
            unread = bool(newest) and (
                group is None
                or parse_entry_id(newest[0][0])
                > parse_entry_id(group.get("last-delivered-id") or "0-0")
            )
            if unread or stale or due:
                busy.append(stream)
        return busy

    def webhook_take(
        self, stream: str, endpoint: str, consumer: str, *, takeover_ms: int
    ) -> Delivery | None:
        """The endpoint's next delivery from this stream, held by
        ``consumer``: one another deliverer held too long, a due retry, or
        a new entry; ``None`` when there is none."""
        _, retries, waiting, _, _ = self._parts(stream, endpoint)
        client = self.client
        with self._available():
            try:
                claimed = client.xautoclaim(
                    stream, endpoint, consumer, min_idle_time=takeover_ms, start_id="0-0", count=1
                )
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or its group is gone (a Redis that restarted
                # empty): join again, from whatever is there now.
                self.webhook_join([stream], endpoint)
                claimed = None
            entries = claimed[1] if claimed else []
            if claimed and len(claimed) > 2 and claimed[2]:
                # Held so long that the stream was trimmed under them.
                self._lost(stream, endpoint, [str(entry) for entry in claimed[2]])
            if entries:
                return self._delivery(stream, entries[0], attempt=1)
            due = self._run("webhook_take", [retries, waiting], [takeover_ms])
            if due:
                return self._retry(stream, endpoint, str(due[0]), str(due[1]))
            read = client.xreadgroup(endpoint, consumer, {stream: ">"}, count=1)
        for _, got in cast(list[Any], read or []):
            if got:
                return self._delivery(stream, got[0], attempt=1)
        return None

    def _delivery(self, stream: str, entry: Any, *, attempt: int) -> Delivery:
        entry_id, fields = entry
        tag = str((fields or {}).get("u", ""))
        return Delivery(
            stream,
            str(entry_id),
            user_of_tag(tag),
            tag,
            str((fields or {}).get("e", "")),
            attempt,
        )

    def _retry(self, stream: str, endpoint: str, entry_id: str, held: str) -> Delivery | None:
        attempts, _, rest = held.partition("|")
        tag, _, event = rest.partition("|")
        if not attempts.isdigit():
            # The event is gone from beside its retry: nothing to deliver.
            self.webhook_done(stream, endpoint, entry_id, delivered=False)
            return None
        return Delivery(stream, entry_id, user_of_tag(tag), tag, event, int(attempts) + 1)

    def webhook_done(self, stream: str, endpoint: str, entry_id: str, *, delivered: bool) -> bool:
        """End a delivery (posted with a 2xx, or skipped); ``False`` when
        another deliverer had already ended it."""
        keys = self._parts(stream, endpoint)[:4]
        with self._available():
            return bool(
                self._run("webhook_done", keys, [endpoint, entry_id, "1" if delivered else "0"])
            )

    def webhook_failed(
        self, delivery: Delivery, endpoint: str, *, delays: Sequence[int], error: str
    ) -> str:
        """Record a failed attempt: ``retrying`` (the next one is scheduled),
        ``failed`` (parked) or ``""`` (another deliverer had ended it)."""
        keys = self._parts(delivery.stream, endpoint)
        args = [
            endpoint,
            delivery.entry,
            ",".join(str(delay) for delay in delays),
            delivery.tag,
            delivery.event,
            error,
            RETRY_MAX,
            PARKED_MAX,
        ]
        with self._available():
            return str(self._run("webhook_failed", keys, args) or "")

    def webhook_counts(
        self, streams: Sequence[str], endpoint: str, *, parked: int = 0
    ) -> DeliveryCounts:
        """An endpoint's deliveries over all streams (``webhooks status``)."""
        counts = DeliveryCounts()
        client = cast(Any, self.client)
        with self._available():
            for stream in streams:
                _, retries, _, counters, failed = self._parts(stream, endpoint)
                groups = client.xinfo_groups(stream) if client.exists(stream) else []
                group = next((g for g in groups if g.get("name") == endpoint), None)
                if group is None:
                    # No deliverer joined yet: it will start from the first entry.
                    counts.pending += int(client.xlen(stream))
                else:
                    # Counted, not the group's lag: Redis 7.0 misreports it
                    # once entries were trimmed.
                    unread = self._count_after(stream, str(group.get("last-delivered-id")))
                    counts.pending += unread + int(group.get("pending") or 0)
                counts.retrying += int(client.zcard(retries))
                delivered, failed_count = client.hmget(counters, ["delivered", "failed"])
                counts.delivered += int(delivered or 0)
                counts.failed += int(failed_count or 0)
                if parked:
                    counts.parked += [_json(item) for item in client.lrange(failed, 0, parked - 1)]
        counts.parked.sort(key=lambda item: item.get("at", 0), reverse=True)
        counts.parked = counts.parked[:parked]
        return counts

    def webhook_tidy(self, streams: Sequence[str], endpoint: str, *, idle_ms: int) -> int:
        """Delete the endpoint's consumers that hold nothing and were idle
        longer than ``idle_ms`` (deliverers that stopped); how many."""
        deleted = 0
        with self._available():
            for stream in streams:
                try:
                    deleted += int(self._run("webhook_tidy", [stream], [endpoint, idle_ms]))
                except redis.exceptions.ResponseError as exc:
                    if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                        raise
        return deleted

    def webhook_trim(self, streams: Sequence[str]) -> None:
        """Trim each stream by age, by the store's clock (quiet streams too)."""
        cutoff = self.server_time_ms() - STREAM_MAX_AGE_MS
        with self._available():
            pipe = self.client.pipeline(transaction=False)
            for stream in streams:
                pipe.xtrim(stream, minid=f"{cutoff}-0")
            pipe.execute(raise_on_error=False)

    def server_time_ms(self) -> int:
        """The store's clock, in ms (the one retries and trimming go by)."""
        with self._available():
            seconds, micros = cast(Any, self.client).time()
        return int(seconds) * 1000 + int(micros) // 1000

    def _count_after(self, stream: str, last: str) -> int:
        """How many entries come after ``last`` (for the status: pages of 1,000)."""
        client = cast(Any, self.client)
        count, start = 0, f"({last}"
        while True:
            page = client.xrange(stream, min=start, max="+", count=1000)
            count += len(page)
            if len(page) < 1000:
                return count
            start = f"({page[-1][0]}"

    def _lost(self, stream: str, endpoint: str, entry_ids: list[str]) -> None:
        """Count and park deliveries whose entries were trimmed while held."""
        _, _, _, counters, failed = self._parts(stream, endpoint)
        now = self.server_time_ms() // 1000
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(counters, "failed", len(entry_ids))
        for entry_id in entry_ids:
            parked = {"id": entry_id, "attempts": 0, "error": TRIMMED, "at": now}
            pipe.lpush(failed, json.dumps(parked))
        pipe.ltrim(failed, 0, PARKED_MAX - 1)
        pipe.execute()
        logger.error(
            "webhooks: %d delivery(ies) to endpoint %s lost: %s", len(entry_ids), endpoint, TRIMMED
        )


def parse_entry_id(text: str) -> tuple[int, int]:
    """A stream entry id as a pair of numbers, to compare."""
    ms, _, seq = str(text).partition("-")
    return int(ms or 0), int(seq or 0)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
