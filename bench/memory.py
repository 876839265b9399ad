"""Bytes per session over real logins, and each kind of key's size.

``python -m bench.memory`` starts its own redis-server, runs issue 15's
measure (``bench.__main__.logins_memory``: 2,000 HTTP logins to the
standalone service served by gunicorn, 20 users with 100 each,
``used_memory`` before and after) and prints it beside ``MEMORY USAGE`` of
each kind of key those logins left: session hashes, per-user index, event
lists, interned user agents, known places and devices, user records.

The first logins on a new server also pay what Redis allocates once, not
per session: above all, with ``latency-tracking`` on (Redis 7's default),
a latency histogram of ~25 KB for each command the first time it is
called. So it also measures the logins after a warm-up, what deleting
their keys frees, and the logins on a server with ``latency-tracking no``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from bench.apps import standalone
from bench.commands import CHROME, redis_server
from bench.throughput import bench_env, gunicorn
from sessionsvc import current_manager

#: Sign-ins of a user deleted before the warm measure: what Redis allocates
#: once on the first scripts and connections is not a session's.
WARM_UP = 20

#: What each kind of key's name ends with (see ``sessionsvc/store/keys.py``).
KINDS = {
    "session hash": ":s:",
    "index zset": ":idx",
    "events list": ":ev",
    "activity list": ":ea",
    "agents hash": ":ag",
    "known hash": ":known",
    "names zset": ":names",
    "user hash": ":user",
}


def kind_of(key: str) -> str:
    """The kind of a key left by the logins (``other`` for none of KINDS)."""
    for kind, mark in KINDS.items():
        if (mark.endswith(":") and mark in key) or key.endswith(mark):
            return kind
    return "other"


def key_sizes(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Per kind: how many keys, and ``MEMORY USAGE`` median and total bytes."""
    sizes: dict[str, list[int]] = {}
    for key in client.scan_iter(count=1000):
        name = key if isinstance(key, str) else key.decode()
        usage = client.memory_usage(name, samples=0)
        sizes.setdefault(kind_of(name), []).append(int(usage or 0))
    return {
        kind: {"keys": len(v), "median": round(statistics.median(v)), "total": sum(v)}
        for kind, v in sorted(sizes.items())
    }


def logins_memory(
    url: str, client: redis.Redis, *, users: int = 20, per_user: int = 100, warm_up: int = 0
) -> dict[str, int]:
    """Issue 15's measure as it says: ``used_memory`` before and after
    ``users * per_user`` real HTTP logins, per login (``bytes_per_session``).

    The standalone service (``bench.apps:standalone()``) is served by
    gunicorn with the benchmark's settings and signed in to with
    ``POST /api/v1/auth/login`` and a browser's user agent; the users are
    created as the service creates them, each with an account of its own
    that its sessions carry (``sessionsvc.accounts.new_user``), but with a
    cheap hash, and the scripts loaded before. With ``warm_up``, a user of
    its own signs in that many times first and its keys are deleted, so
    that what Redis allocates once per server (the connections, a latency
    histogram per command's first call) is left out; then
    ``freed_per_session`` is what deleting the logins' keys frees, per
    login."""
    from werkzeug.security import generate_password_hash

    from sessionsvc.models import User

    env = bench_env(url)
    names = [f"user-{u}" for u in range(users)]
    warm = ["warm-up"] if warm_up else []
    with standalone(url).app_context():
        store = current_manager().store
        for name in [*names, *warm]:
            cheap = generate_password_hash("pw", "pbkdf2:sha256:1")
            account = secrets.token_urlsafe(12)
            store.create_user(User(name, cheap, account=account, created_at=int(time.time())))
        store.load_scripts()
        store.close()

    def sessions_keys() -> list[str]:
        return [k for k in client.scan_iter(count=1000) if not k.endswith((":user", ":names"))]

    with gunicorn("standalone", env) as base:
        for _ in range(warm_up):
            sign_in(base, "warm-up")
        if warm_up:
            client.delete(*sessions_keys())
        before = int(client.info("memory")["used_memory"])
        for name in names:
            for _ in range(per_user):
                sign_in(base, name)
        after = int(client.info("memory")["used_memory"])
        logins = users * per_user
        figures = {"bytes_per_session": round((after - before) / logins)}
        if warm_up:
            # While the service runs: its connections' buffers are not a session's.
            client.delete(*sessions_keys())
            freed = after - int(client.info("memory")["used_memory"])
            figures["freed_per_session"] = round(freed / logins)
    return figures


def sign_in(base: str, name: str) -> None:
    """One sign-in over HTTP, as a browser makes it (password ``pw``)."""
    login = urllib.request.Request(
        base + "/api/v1/auth/login",
        data=json.dumps({"username": name, "password": "pw"}).encode(),
        headers={"Content-Type": "application/json", "User-Agent": CHROME},
        method="POST",
    )
    try:
        with urllib.request.urlopen(login, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as error:
        sys.exit(f"sign-in of {name} answered {error.code}: {error.read().decode()}")


def measure(users: int = 20, per_user: int = 100) -> dict[str, Any]:
    """Bytes per session over the logins (``logins_memory`` cold, and
    warmed up), and the keys they left, by kind: each on a new redis-server."""
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        cold = logins_memory(url, client, users=users, per_user=per_user)
        kinds = key_sizes(client)
        histograms = len(client.info("latencystats"))
        client.close()
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        warm = logins_memory(url, client, users=users, per_user=per_user, warm_up=WARM_UP)
        client.close()
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        client.config_set("latency-tracking", "no")
        untracked = logins_memory(url, client, users=users, per_user=per_user)
        client.close()
    return {
        "logins": users * per_user,
        "bytes_per_session": cold["bytes_per_session"],
        "warm_bytes_per_session": warm["bytes_per_session"],
        "untracked_bytes_per_session": untracked["bytes_per_session"],
        "latency_histograms": histograms,
        "freed_bytes_per_session": warm["freed_per_session"],
        "keys": kinds,
    }


def report(figures: dict[str, Any]) -> str:
    """The figures as a table."""
    lines = [
        f"bytes per session (used_memory over {figures['logins']:,} HTTP logins): "
        f"{figures['bytes_per_session']}",
        f"  after {WARM_UP} warm-up logins of another user: {figures['warm_bytes_per_session']}; "
        f"freed by deleting the logins' keys: {figures['freed_bytes_per_session']}",
        f"  with latency-tracking off: {figures['untracked_bytes_per_session']} "
        f"(on, Redis 7 allocates ~25 KB once for each command's first call: "
        f"{figures['latency_histograms']} commands by the end, the bench's own included)",
        f"{'kind':<14} {'keys':>6} {'median B':>9} {'total B':>10} {'B/session':>10}",
    ]
    for kind, row in figures["keys"].items():
        share = row["total"] / figures["logins"]
        lines.append(
            f"{kind:<14} {row['keys']:>6} {row['median']:>9} {row['total']:>10} {share:>10.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    figures = measure(users=args.users, per_user=args.per_user)
    print(json.dumps(figures, indent=2) if args.json else report(figures))


if __name__ == "__main__":
    main()
