"""Round trips and Redis commands per operation, counted exactly.

Starts its own ``redis-server`` on a free loopback port, drives the
standalone app through Flask's test client, and for each operation counts
what the client sent (round trips: one per packed write to the socket) and
what the server executed (``INFO commandstats`` delta, which also counts the
commands a Lua script runs inside Redis).

    python -m bench.commands
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from werkzeug.security import generate_password_hash

from sessionsvc import create_app, current_manager
from sessionsvc.models import User

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of our own, gone when the block ends."""
    if not shutil.which("redis-server"):
        sys.exit("redis-server is not on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sessionsvc-bench-")
    proc = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(200):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


class RoundTrips:
    """Counts packed writes to Redis sockets: one per round trip."""

    def __init__(self) -> None:
        self.count = 0
        self._original = redis.connection.AbstractConnection.send_packed_command

    def __enter__(self) -> RoundTrips:
        counter = self
        original = self._original

        def counting(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            original(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        redis.connection.AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]


def commandstats(admin: redis.Redis) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }


def measure(admin: redis.Redis, action: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """(round trips, server commands by name) of one action."""
    admin.config_resetstat()
    with RoundTrips() as trips:
        action()
    return trips.count, commandstats(admin)


Row = tuple[str, int, dict[str, int]]


def signed_in(tokens: dict[str, Any], kind: str = "access_token") -> dict[str, str]:
    """The headers of the device that signed in: its token and browser (another
    browser would be an anomaly, recorded in a second round trip)."""
    return {"Authorization": f"Bearer {tokens[kind]}", "User-Agent": CHROME}


def count_operations(url: str) -> list[Row]:
    """(operation, round trips, server commands) for each operation, on ``url``."""
    rows: list[Row] = []
    admin = redis.Redis.from_url(url, decode_responses=True)
    app = create_app(
        {
            "TESTING": True,
            "JWT_SECRET_KEY": "bench-secret-key-long-enough-for-hs256",
            "SESSIONSVC_REDIS_URL": url,
            "SESSIONSVC_TOUCH_INTERVAL": 60,
            # Counted without the login rate limit (it signs in 200 times); with
            # it, a login costs one more round trip per counter (address, username).
            "SESSIONSVC_LOGIN_RATE_LIMIT": "",
        }
    )
    client = app.test_client()
    with app.app_context():
        manager = current_manager()
        store = manager.store
        for name in ("alice", "bob", "root"):
            roles = ("admin",) if name == "root" else ()
            store.create_user(
                User(name, generate_password_hash("pw", "pbkdf2:sha256:1"), roles=roles)
            )
        # A server that has run for a while has every script cached: so
        # does this one before anything is counted.
        store.load_scripts()

    def count(operation: str, action: Callable[[], Any]) -> None:
        """Count one run of ``action`` as a row."""
        rows.append((operation, *measure(admin, action)))

    def login(user: str = "alice") -> dict[str, Any]:
        response = client.post(
            "/api/v1/auth/login",
            json={"username": user, "password": "pw"},
            headers={"User-Agent": CHROME},
        )
        assert response.status_code == 200
        body: dict[str, Any] = response.get_json()
        return body

    login()  # warm: scripts loaded once per server, not per request
    count("login (user lookup + open)", login)
    tokens = login()
    # Every request comes from the browser that signed in (another one
    # would be an anomaly, recorded in a second round trip).
    headers = signed_in(tokens)

    def authed() -> None:
        assert client.get("/api/v1/sessions/events?limit=1", headers=headers).status_code == 200

    # The events route is one store read beyond the check; list is
    # measured separately below. Subtract it to get the check alone.
    authed()
    count("authenticated GET /events?limit=1 (steady)", authed)

    with app.test_request_context(headers=headers):
        from flask_jwt_extended import decode_token

        payload = decode_token(tokens["access_token"])
        count("revocation check alone (steady)", lambda: manager.is_revoked({}, payload))
        key = store.session_key("alice", tokens["session_id"])
        admin.hset(key, "t", 0)  # last seen long ago: a touch is due
        count("revocation check alone (touch due)", lambda: manager.is_revoked({}, payload))

    def bob_signed_in(k: int) -> dict[str, str]:
        """Bob with exactly ``k`` sessions: the headers of the first."""
        with app.app_context():
            manager.revoke_all("bob")
        first = login("bob")
        for _ in range(k - 1):
            login("bob")
        return signed_in(first)

    for k in (1, 10, 100):
        bob_headers = bob_signed_in(k)

        def listing(h: dict[str, str] = bob_headers, n: int = k) -> None:
            response = client.get("/api/v1/sessions", headers=h)
            assert len(response.get_json()["sessions"]) == n

        listing()
        count(f"GET /sessions, K={k} (check + list)", listing)

    refresh_headers = signed_in(tokens, "refresh_token")
    count(
        "POST /auth/refresh", lambda: client.post("/api/v1/auth/refresh", headers=refresh_headers)
    )

    own = f"/api/v1/sessions/{tokens['session_id']}"
    client.get(own, headers=headers)
    count("GET /sessions/{own id} (steady)", lambda: client.get(own, headers=headers))
    other = login()
    theirs = f"/api/v1/sessions/{other['session_id']}"
    count("GET /sessions/{another id} (check + read)", lambda: client.get(theirs, headers=headers))
    count(
        "PATCH /sessions/{id} (check + rename)",
        lambda: client.patch(theirs, json={"name": "Phone"}, headers=headers),
    )
    count(
        "DELETE /sessions/{id} (check + revoke)",
        lambda: client.delete(theirs, headers=headers),
    )

    root = login("root")
    as_root = signed_in(root)
    admin_sessions = "/api/v1/admin/users/bob/sessions"
    count(
        "GET /admin/users/{id}/sessions, K=100 (check + list)",
        lambda: client.get(admin_sessions, headers=as_root),
    )
    count(
        "GET /admin/users/{id} (check + user)",
        lambda: client.get("/api/v1/admin/users/bob", headers=as_root),
    )
    # The first listing builds the name index (users of no earlier listing).
    assert client.get("/api/v1/admin/users", headers=as_root).status_code == 200
    count(
        "GET /admin/users, 3 users (check + page)",
        lambda: client.get("/api/v1/admin/users", headers=as_root),
    )
    count(
        "DELETE /admin/users/{id}/sessions, K=100 (check + revoke)",
        lambda: client.delete(admin_sessions, headers=as_root),
    )
    leaving = login()
    count(
        "POST /auth/logout (check + revoke)",
        lambda: client.post(
            "/api/v1/auth/logout",
            headers=signed_in(leaving),
        ),
    )
    changing = login()
    count(
        "POST /auth/password (check + user + change)",
        lambda: client.post(
            "/api/v1/auth/password",
            json={"current_password": "pw", "new_password": "a new password of some length"},
            headers=signed_in(changing),
        ),
    )

    bob_headers = bob_signed_in(100)
    count(
        "DELETE /sessions, K=100 (check + revoke 99)",
        lambda: client.delete("/api/v1/sessions", headers=bob_headers),
    )
    admin.close()
    return rows


def print_rows(rows: list[Row]) -> None:
    width = max(len(name) for name, _, _ in rows)
    print(f"{'operation':<{width}}  round trips  server commands")
    for name, trips, cmds in rows:
        detail = ", ".join(f"{cmd} {calls}" for cmd, calls in sorted(cmds.items()))
        print(f"{name:<{width}}  {trips:>11}  {sum(cmds.values()):>4}  ({detail})")


def main() -> None:
    with redis_server() as url:
        print_rows(count_operations(url))


if __name__ == "__main__":
    main()
