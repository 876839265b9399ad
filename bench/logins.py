"""Logins per second of the standalone service, as shipped.

``python -m bench.logins`` (part of ``make bench``) starts its own
redis-server, creates one user with the service's own password hash
(``sessionsvc.passwords.hash_password``), serves ``gunicorn -c gunicorn.conf.py
wsgi:app`` with the login rate limit off, and drives ``POST
/api/v1/auth/login`` with ``wrk``: a login's cost is its password hash, so
this is the figure that changes with the hashing scheme.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import redis

from bench.commands import CHROME, redis_server
from bench.serving import service
from bench.throughput import REPORT_LUA, ensure_wrk
from sessionsvc.accounts import new_user
from sessionsvc.passwords import hash_password
from sessionsvc.store import SessionStore

PASSWORD = "correct horse battery staple"

_POST = """
wrk.method = "POST"
wrk.body = '{"username": "bench", "password": "%s"}'
wrk.headers["Content-Type"] = "application/json"
"""


def sign_in(
    host: str,
    port: int,
    username: str,
    password: str,
    connection: http.client.HTTPConnection | None = None,
) -> int:
    """The status of one ``POST /api/v1/auth/login`` (on a new connection
    unless one is given)."""
    conn = connection or http.client.HTTPConnection(host, port, timeout=30)
    try:
        body = json.dumps({"username": username, "password": password})
        headers = {"Content-Type": "application/json", "User-Agent": CHROME}
        conn.request("POST", "/api/v1/auth/login", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        if connection is None:
            conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.logins", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    args = parser.parse_args(argv)
    wrk_bin = ensure_wrk()
    stored = hash_password(PASSWORD)
    scheme = stored.split("$")[1] if stored.startswith("$") else stored.split("$")[0]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_POST % PASSWORD + Path(REPORT_LUA).read_text())
    rates = []
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        SessionStore(lambda: client, prefix="bench-serving").create_user(
            new_user("bench", PASSWORD)
        )
        with service(url, []) as (host, port):
            # A returning user: signed in from this address before, its
            # sign-ins take the first free hash slot (sessionsvc.passwords.HashSlots).
            assert sign_in(host, port, "bench", PASSWORD) == 200
            for _ in range(args.runs):
                result = subprocess.run(
                    [
                        *(wrk_bin, "-t1", f"-c{args.connections}", f"-d{args.seconds:g}s"),
                        *("--timeout", "10s", "-s", script.name),
                        f"http://{host}:{port}/api/v1/auth/login",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                summary = json.loads(result.stdout.strip().splitlines()[-1])
                if summary["non2xx"] or summary["errors"]:
                    raise SystemExit(f"wrk saw failures: {summary}")
                rates.append(round(summary["requests"] / (summary["duration_us"] / 1e6), 1))
    Path(script.name).unlink()
    print(
        f"logins/s with {scheme} hashes (wrk -c{args.connections}, {args.runs} runs of "
        f"{args.seconds:g} s): {rates}, median {statistics.median(rates)}"
    )


if __name__ == "__main__":
    main()
