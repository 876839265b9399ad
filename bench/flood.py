"""A real sign-in's latency during a flood of sign-ins of unknown names.

``python -m bench.flood`` (part of ``make bench``) starts its own
redis-server, creates one user with the service's own password hash
(``sessionsvc.passwords.hash_password``) and serves ``gunicorn -c
gunicorn.conf.py wsgi:app`` with the login rate limit off (a flood from
thousands of addresses gets past any per-address limit) twice:

- ``unbounded``: ``SESSIONSVC_PASSWORD_HASHES`` above the worker's threads,
  so every request thread may hash at once, as before the bound;
- ``bounded``: the setting as shipped (the CPUs the worker may use).

For each, ``--flood`` threads sign in with random unknown names as fast as
they are answered (each such sign-in costs one argon2id check), and
meanwhile the real user signs in every 0.2 s, by turns from the address it
signed in from before (127.0.0.1, where the flood comes from too: the
hash slots put it first) and, as a first sign-in from somewhere new, from a
loopback address it never used (127.77.x.y: no priority), and ``GET
/healthz`` is sampled every 0.1 s. Printed: each real sign-in's median and
p95 (of every answer, and of those that signed in), how many were answered
``busy``, the flood's answers by status, and ``/healthz`` meanwhile; and, for
reference, the real sign-in with no flood.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import secrets
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from bench.commands import redis_server
from bench.logins import PASSWORD, sign_in
from bench.serving import get, service
from sessionsvc.accounts import new_user
from sessionsvc.store import SessionStore

#: ``SESSIONSVC_PASSWORD_HASHES`` per configuration (``None``: as shipped).
CONFIGS: dict[str, str | None] = {"unbounded": "10000", "bounded": None}


@contextmanager
def hashes_setting(value: str | None) -> Iterator[None]:
    """``SESSIONSVC_PASSWORD_HASHES`` for the service started in the block."""
    before = os.environ.pop("SESSIONSVC_PASSWORD_HASHES", None)
    if value is not None:
        os.environ["SESSIONSVC_PASSWORD_HASHES"] = value
    try:
        yield
    finally:
        os.environ.pop("SESSIONSVC_PASSWORD_HASHES", None)
        if before is not None:
            os.environ["SESSIONSVC_PASSWORD_HASHES"] = before


def flooder(host: str, port: int, stop: threading.Event, statuses: Counter[int]) -> None:
    """Sign in with random unknown names, one after another, until told to stop."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    while not stop.is_set():
        try:
            status = sign_in(host, port, "nobody-" + secrets.token_hex(6), "a guess", connection)
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=30)
            status = 0
        statuses[status] += 1
    connection.close()


def real_sign_in(host: str, port: int, source: str = "127.0.0.1") -> tuple[float, int]:
    """Seconds and status of one sign-in of the real user, on a new
    connection from ``source`` (a loopback address)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=30, source_address=(source, 0))
    try:
        status = sign_in(host, port, "bench", PASSWORD, connection)
    finally:
        connection.close()
    return time.perf_counter() - started, status


def new_addresses() -> Iterator[str]:
    """Loopback addresses the real user never signed in from, one per sign-in."""
    for n in itertools.count(1):
        yield f"127.77.{n // 250}.{1 + n % 250}"


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"


def measure(host: str, port: int, flood: int, seconds: float) -> dict[str, Any]:
    quiet = [real_sign_in(host, port) for _ in range(20)]
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    threads = [
        threading.Thread(target=flooder, args=(host, port, stop, statuses), daemon=True)
        for _ in range(flood)
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)  # the flood is under way
    healthz: list[float | None] = []

    def sample() -> None:
        while not stop.is_set():
            healthz.append(get(host, port, "/healthz", timeout=10))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    statuses.clear()
    real: list[tuple[float, int]] = []
    new: list[tuple[float, int]] = []
    sources = new_addresses()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        real.append(real_sign_in(host, port))
        time.sleep(0.2)
        new.append(real_sign_in(host, port, next(sources)))
        time.sleep(0.2)
    stop.set()
    for thread in [*threads, sampler]:
        thread.join(30)
    return {
        "quiet": [t for t, status in quiet if status == 200],
        "real": real,
        "new": new,
        "flood": dict(sorted(statuses.items())),
        "flood_rate": round(sum(statuses.values()) / seconds),
        "healthz": [t for t in healthz if t is not None],
        "healthz_failed": sum(t is None for t in healthz),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--flood", type=int, default=64, help="flooding threads")
    parser.add_argument("--seconds", type=float, default=10, help="seconds measured per run")
    args = parser.parse_args(argv)
    results = {}
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        SessionStore(lambda: client, prefix="bench-serving").create_user(
            new_user("bench", PASSWORD)
        )
        for name, value in CONFIGS.items():
            print(f"{name}: a real sign-in under a flood of {args.flood} threads", flush=True)
            with hashes_setting(value), service(url, []) as (host, port):
                results[name] = measure(host, port, args.flood, args.seconds)
    print()
    for name, figures in results.items():
        print(f"{name} (SESSIONSVC_PASSWORD_HASHES={CONFIGS[name] or 'default'}):")
        print(f"  real sign-in, no flood:      {percentiles(figures['quiet'])}")
        for label, key in (("known address", "real"), ("new address", "new")):
            real = figures[key]
            signed_in = [t for t, status in real if status == 200]
            busy = sum(status == 503 for _, status in real)
            other = len(real) - len(signed_in) - busy
            print(
                f"  real sign-in during flood, {label}: {percentiles([t for t, _ in real])} "
                f"({len(real)} tries: {len(signed_in)} signed in, {busy} busy, {other} other)"
            )
            print(f"    of those signed in:        {percentiles(signed_in)}")
        print(f"  flood answers:               {figures['flood']} (~{figures['flood_rate']}/s)")
        print(
            f"  GET /healthz during flood:   {percentiles(figures['healthz'])}, "
            f"{figures['healthz_failed']} failed"
        )


if __name__ == "__main__":
    main()
