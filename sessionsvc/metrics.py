"""Prometheus metrics: what the service counts.

The metric objects are process-global (prometheus_client's default
registry), made once here, so building several apps in one process never
registers a series twice. Opens, revocations, anomalies and confirmations are
counted from the signals, so whatever sends them is counted once. Under gunicorn,
``PROMETHEUS_MULTIPROC_DIR`` (set up by ``gunicorn.conf.py``) makes every
worker write its values to files there, and :func:`registry` sums them:
the whole service, whichever worker answers. The standalone service serves
them at ``/metrics`` (:mod:`sessionsvc.app`).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from .signals import session_anomaly, session_confirmed, session_opened, session_revoked

#: Sessions opened (sign-ins).
SESSIONS_OPENED = Counter("sessionsvc_sessions_opened", "Sessions opened.")
#: Sessions revoked, by ``reason`` (see :data:`~sessionsvc.signals.session_revoked`).
SESSIONS_REVOKED = Counter("sessionsvc_sessions_revoked", "Sessions revoked.", ["reason"])
#: Sessions used from another browser, OS or country than they opened with.
ANOMALIES = Counter("sessionsvc_anomalies", "Session anomalies detected.")
#: Flagged sessions the user confirmed were theirs ("Was this you?").
CONFIRMED = Counter("sessionsvc_sessions_confirmed", "Flagged sessions confirmed by their user.")
#: How long the per-request revocation check takes, store round trip included.
CHECK_SECONDS = Histogram(
    "sessionsvc_revocation_check_seconds",
    "Time to check a token's session against the store.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
)
#: Store calls that failed closed with ``StoreUnavailable``; ``kind`` is
#: ``outage`` (connection, timeout) or ``refused`` (any other Redis error).
STORE_ERRORS = Counter(
    "sessionsvc_store_errors", "Session store errors turned into 503s.", ["kind"]
)
#: HTTP requests by route template (never the raw path: bounded labels),
#: method and status.
REQUESTS = Counter(
    "sessionsvc_http_requests", "HTTP requests answered.", ["route", "method", "status"]
)

#: Audit rows the writers stored (a redelivered event, stored already, is not counted).
AUDIT_ROWS_WRITTEN = Counter("sessionsvc_audit_rows_written", "Audit rows written.")
#: Events the writers could not store, by ``kind``: ``unreadable`` (a stream
#: entry that is not an event) or ``refused`` (a row the database refused
#: even with its text escaped); each is logged as an error.
AUDIT_FAILURES = Counter(
    "sessionsvc_audit_failures", "Events the audit writer could not store.", ["kind"]
)
for _kind in ("unreadable", "refused"):
    AUDIT_FAILURES.labels(_kind)  # shown at 0 from the start: an alert needs the series
#: Events trimmed from the stream before any writer stored them (the stream
#: keeps about 100,000 entries and 7 days); each loss is logged as an error.
AUDIT_LOST = Counter("sessionsvc_audit_lost", "Events trimmed before reaching the audit trail.")
#: How far behind the audit writer is: the age (s) of the oldest event in
#: the batch it took last, 0 when it found none waiting; under gunicorn the
#: largest of the live processes' values.
AUDIT_LAG = Gauge(
    "sessionsvc_audit_lag_seconds",
    "Age of the oldest event not yet in the audit trail.",
    multiprocess_mode="livemax",
)

#: The route label of requests that matched no route (404, 405).
UNMATCHED = "<unmatched>"
#: The method labels; any other method is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def registry() -> CollectorRegistry:
    """What to expose: this process's values, or, in multiprocess mode,
    every worker's summed from ``PROMETHEUS_MULTIPROC_DIR``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return REGISTRY


# Module-level receivers, connected for every sender: held strongly by the
# module, so blinker's weak references never drop them.
def _on_opened(sender: Any, **extra: Any) -> None:
    SESSIONS_OPENED.inc()


def _on_revoked(sender: Any, *, reason: str, **extra: Any) -> None:
    SESSIONS_REVOKED.labels(reason).inc()


def _on_anomaly(sender: Any, **extra: Any) -> None:
    ANOMALIES.inc()


def _on_confirmed(sender: Any, **extra: Any) -> None:
    CONFIRMED.inc()


session_opened.connect(_on_opened)
session_revoked.connect(_on_revoked)
session_anomaly.connect(_on_anomaly)
session_confirmed.connect(_on_confirmed)
