"""Webhook delivery: security events posted to other services, signed per
the Standard Webhooks specification.

The scripts that record an event also queue it in a Redis stream, in the
same atomic step (:mod:`sessionsvc.store.webhooks`); nothing here runs in a
request. ``flask --app wsgi sessions webhooks run`` starts a
:class:`Deliverer`: for each endpoint, a few threads, each a consumer of the
endpoint's consumer group, take deliveries and post them. Any number of
deliverers, on any hosts, share the work.

Each POST gets :data:`TIMEOUT` seconds in all (connecting, sending, the
status line and headers; the body is not read); anything but a 2xx in that
time is a failed attempt, retried after the next delay of
``SESSIONSVC_WEBHOOK_RETRY`` and parked as failed after the last one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import itertools
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import StoreUnavailable
from .models import SecurityEvent, isotime
from .settings import Settings, redact, webhook_key
from .store import SessionStore
from .store.codec import event_from_json
from .store.keys import endpoint_id
from .store.webhooks import Delivery, DeliveryCounts

logger = logging.getLogger("sessionsvc.webhooks")

#: Seconds a receiver has to answer a delivery with a 2xx.
TIMEOUT = 10.0
#: Seconds after which a delivery held by a deliverer that stopped answering
#: is taken over by another (the specification's bound is 60).
TAKEOVER_AFTER = 30.0
#: Seconds an idle deliverer thread waits before looking for work again.
POLL_INTERVAL = 0.5
#: Seconds between looks for new streams (Redis Cluster: one per slot in use).
DISCOVER_INTERVAL = 10.0
#: Seconds between SCANs for streams whose registration was missed (Cluster).
SCAN_INTERVAL = 300.0
_USER_AGENT = "sessionsvc-webhooks"


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` + base64 HMAC-SHA256 of
    ``{id}.{timestamp}.{body}`` keyed with the secret's bytes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def body_of(user_id: str, event: SecurityEvent) -> bytes:
    """A delivery's body: the event's type and time, and the event with its user."""
    data = {**event.to_json(), "user_id": user_id}
    payload = {"type": event.type, "timestamp": isotime(event.at), "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def headers_of(secret: str, message_id: str, body: bytes, *, now: int) -> dict[str, str]:
    """The headers of one attempt (the timestamp and signature are the attempt's)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, message_id, now, body),
    }


class DeliveryFailed(Exception):
    """An attempt got no 2xx in time; the message says what happened."""


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float = TIMEOUT) -> int:
    """POST ``body``; the response's status, within ``timeout`` seconds in all.

    A receiver that trickles its answer is cut off at the deadline: a timer
    shuts the socket down, which ends any read in progress.

    :raises DeliveryFailed: no answer in time, or no connection.
    """
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    headers = dict(headers)
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    timed_out = threading.Event()

    def cut_off() -> None:
        timed_out.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, cut_off)
    timer.daemon = True
    timer.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=headers)
        # The status line and headers decide; the body is not waited for (a
        # receiver may keep the connection open after a 200).
        return connection.getresponse().status
    except http.client.InvalidURL:
        # Its message would carry the URL's path and query (maybe a token).
        raise DeliveryFailed("the endpoint's URL is not valid") from None
    except (OSError, http.client.HTTPException) as exc:
        if timed_out.is_set() or isinstance(exc, TimeoutError):
            raise DeliveryFailed(f"no answer within {timeout:g} s") from None
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        timer.cancel()
        connection.close()


@dataclass(frozen=True)
class Endpoint:
    """One receiver: its URL and its id (its consumer group's name)."""

    url: str

    @property
    def id(self) -> str:
        # Of the URL without credentials or query: rotating a password or
        # a token in it keeps the endpoint's queue, and the id tells nothing
        # of them.
        return endpoint_id(redact(self.url))


class Deliverer:
    """Delivers the queued events to every endpoint until stopped.

    :param store: the service's store.
    :param settings: the webhook settings (URLs, secret, events, retries).
    :param threads: threads per endpoint, each a consumer of its own.
    :param takeover_after: seconds after which a delivery held by a
        deliverer that stopped answering is taken over.
    :param name: this deliverer's name in the consumer groups (default:
        host and process id).
    """

    def __init__(
        self,
        store: SessionStore,
        settings: Settings,
        *,
        threads: int = 2,
        takeover_after: float = TAKEOVER_AFTER,
        timeout: float = TIMEOUT,
        name: str | None = None,
    ) -> None:
        if not settings.webhook_urls or settings.webhook_secret is None:
            raise ValueError("webhooks are off: SESSIONSVC_WEBHOOK_URLS is not set")
        if takeover_after <= timeout:
            # Else a delivery still being posted would be taken over and
            # posted twice, and a failure counted twice.
            raise ValueError(
                f"takeover_after ({takeover_after:g} s) must exceed timeout ({timeout:g} s)"
            )
        self.store = store
        self.endpoints = [Endpoint(url) for url in settings.webhook_urls]
        self.secret = settings.webhook_secret
        self.events = settings.webhook_events
        self.delays = settings.webhook_retry
        self.threads = threads
        self.takeover_ms = int(takeover_after * 1000)
        self.timeout = timeout
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self._streams: list[str] = []
        self._joined: set[tuple[str, str]] = set()
        self._discovered = 0.0
        self._scanned = 0.0
        self._lock = threading.Lock()
        self._turns = itertools.count()
        #: The store's clock minus ours (ms): retries are due by the store's.
        self._skew_ms = 0

    # -- streams --------------------------------------------------------------

    def streams(self) -> list[str]:
        """The streams to deliver from, looked for again now and then."""
        now = time.monotonic()
        with self._lock:
            if not self._streams or now - self._discovered >= DISCOVER_INTERVAL:
                scan = now - self._scanned >= SCAN_INTERVAL
                streams = self.store.webhook_streams(scan=scan)
                self._skew_ms = self.store.server_time_ms() - int(time.time() * 1000)
                # Trimmed by age also when no event comes (a quiet stream).
                self.store.webhook_trim(streams)
                for endpoint in self.endpoints:
                    new = [s for s in streams if (s, endpoint.id) not in self._joined]
                    self.store.webhook_join(new, endpoint.id)
                    self._joined.update((s, endpoint.id) for s in new)
                self._streams, self._discovered = streams, now
                if scan:
                    self._scanned = now
            return self._streams

    # -- one delivery -----------------------------------------------------------

    def step(self, endpoint: Endpoint, consumer: str) -> bool:
        """Take and deliver one delivery for ``endpoint``; ``False`` when there was none."""
        streams = self.store.webhook_busy(
            self.streams(), endpoint.id, takeover_ms=self.takeover_ms, skew_ms=self._skew_ms
        )
        # Each look starts at another stream: a busy one cannot starve the rest.
        start = next(self._turns) % len(streams) if streams else 0
        for stream in streams[start:] + streams[:start]:
            delivery = self.store.webhook_take(
                stream, endpoint.id, consumer, takeover_ms=self.takeover_ms
            )
            if delivery is not None:
                self.deliver(endpoint, delivery)
                return True
        return False

    def deliver(self, endpoint: Endpoint, delivery: Delivery) -> str:
        """Post one delivery and record how it went: ``delivered``,
        ``skipped`` (a type the endpoints do not take, or an unreadable
        entry), ``retrying`` or ``failed``."""
        try:
            event = event_from_json(delivery.event)
        except (ValueError, KeyError, TypeError):
            event = None
        if event is None or delivery.user_id is None:
            logger.error("webhook entry %s is unreadable: dropped", delivery.entry)
            self.store.webhook_done(delivery.stream, endpoint.id, delivery.entry, delivered=False)
            return "skipped"
        if self.events is not None and event.type not in self.events:
            self.store.webhook_done(delivery.stream, endpoint.id, delivery.entry, delivered=False)
            return "skipped"
        body = body_of(delivery.user_id, event)
        headers = headers_of(self.secret, event.id, body, now=int(time.time()))
        try:
            status = post(endpoint.url, body, headers, timeout=self.timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except DeliveryFailed as exc:
            error = str(exc)
        if error is None:
            self.store.webhook_done(delivery.stream, endpoint.id, delivery.entry, delivered=True)
            logger.info(
                "webhook %s (%s) delivered to %s on attempt %d",
                event.id,
                event.type,
                redact(endpoint.url),
                delivery.attempt,
            )
            return "delivered"
        outcome = self.store.webhook_failed(
            delivery, endpoint.id, delays=self.delays, error=error[:200]
        )
        logger.warning(
            "webhook %s (%s) to %s failed on attempt %d (%s): %s",
            event.id,
            event.type,
            redact(endpoint.url),
            delivery.attempt,
            error,
            "parked as failed" if outcome == "failed" else "will retry",
        )
        # '' : another deliverer ended it meanwhile (it took the delivery over).
        return outcome or "taken over"

    # -- running ---------------------------------------------------------------

    def _work(self, endpoint: Endpoint, consumer: str) -> None:
        while not self.stop.is_set():
            try:
                worked = self.step(endpoint, consumer)
            except StoreUnavailable as exc:
                # Fail closed and recover by itself: try again shortly.
                logger.warning("webhooks: the store is unavailable (%s); retrying", exc.detail)
                worked = False
                self.stop.wait(1.0)
            except Exception:  # pragma: no cover - logged, and the thread goes on
                logger.exception("webhooks: delivery to %s failed unexpectedly", endpoint.id)
                worked = False
                self.stop.wait(1.0)
            if not worked:
                self.stop.wait(POLL_INTERVAL)

    def run(self) -> None:
        """Deliver until :attr:`stop` is set; each thread ends after its
        delivery in progress."""
        workers = [
            threading.Thread(
                target=self._work,
                args=(endpoint, f"{self.name}:{n}"),
                name=f"webhooks-{endpoint.id}-{n}",
                daemon=True,
            )
            for endpoint in self.endpoints
            for n in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.5)
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(self.timeout + 2)

    def status(self, *, parked: int = 0) -> list[tuple[Endpoint, DeliveryCounts]]:
        """Each endpoint's deliveries: pending, delivered, retrying, failed."""
        streams = self.store.webhook_streams(scan=True)
        return [
            (endpoint, self.store.webhook_counts(streams, endpoint.id, parked=parked))
            for endpoint in self.endpoints
        ]


def tidy(deliverer: Deliverer, *, idle: float = 3600.0) -> int:
    """Forget consumers of stopped deliverers that hold nothing."""
    streams: Sequence[str] = deliverer.streams()
    return sum(
        deliverer.store.webhook_tidy(streams, endpoint.id, idle_ms=int(idle * 1000))
        for endpoint in deliverer.endpoints
    )


__all__ = [
    "Deliverer",
    "DeliveryFailed",
    "Endpoint",
    "body_of",
    "headers_of",
    "post",
    "redact",
    "sign",
    "tidy",
]
