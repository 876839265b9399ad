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
import statistics
from typing import Any

import redis

from bench.__main__ import logins_memory
from bench.commands import redis_server

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
