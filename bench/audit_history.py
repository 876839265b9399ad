"""A user's history at scale, for ``python -m bench.audit``: an audit
table filled fast with a realistic spread of rows, and the API's query timed
on it (the function itself, and the admin route through a test client).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Connection, make_url, text

from bench.commands import CHROME, redis_server
from sessionsvc import create_app
from sessionsvc.audit_query import close_reader
from sessionsvc.models import User
from sessionsvc.passwords import hash_password
from sessionsvc.sql.events import insert_events
from sessionsvc.sql.migrate import engine
from sessionsvc.sql.query import AuditFilter, Position, find_events
from sessionsvc.sql.tables import audit
from sessionsvc.state import state_of

#: The audit table's columns, in the order the fills write them.
COLUMNS = ("id", "type", "at", "user_id", "account", "session_id", "ip", "user_agent", "detail")

#: Event types and how often each comes, roughly as a service records them.
TYPES = (
    ("session.created", 45),
    ("session.revoked", 45),
    ("session.anomaly", 5),
    ("session.confirmed", 3),
    ("password.changed", 2),
)

#: The admin's password in the HTTP route's timing.
PASSWORD = "a password nobody uses"


def service_app(redis_url: str, audit_url: str) -> Flask:
    """The standalone app on ``redis_url``, its audit trail on ``audit_url``."""
    app = create_app(
        {
            "JWT_SECRET_KEY": "b" * 40,
            "SESSIONSVC_REDIS_URL": redis_url,
            "SESSIONSVC_AUDIT_URL": audit_url,
            "SESSIONSVC_LOGIN_RATE_LIMIT": "",
        }
    )
    # One JSON line per event on stderr would be most of the bench's time.
    logging.getLogger("sessionsvc.events").setLevel(logging.WARNING)
    return app


def history(
    rows: int, users: int, heavy: int, heavy_events: int, *, days: int = 400, seed: int = 1
) -> Iterator[dict[str, Any]]:
    """``rows`` audit rows, oldest first over the last ``days``: ``heavy``
    users (``heavy0``...) with ``heavy_events`` each, the rest spread at
    random over the other users (``user0``...)."""
    chance = random.Random(seed)
    owners = [i for i in range(heavy) for _ in range(heavy_events)]
    owners += chance.choices(range(heavy, users), k=rows - len(owners))
    span = days * 86400 * 1_000_000
    end = int(time.time() * 1_000_000)
    micros = sorted(end - chance.randrange(span) for _ in owners)
    chance.shuffle(owners)
    kinds = chance.choices([t for t, _ in TYPES], [w for _, w in TYPES], k=len(owners))
    sessions: dict[int, str] = {}
    for n, (at, owner, kind) in enumerate(zip(micros, owners, kinds, strict=True)):
        user = f"heavy{owner}" if owner < heavy else f"user{owner}"
        if kind == "session.created" or owner not in sessions:
            sessions[owner] = secrets.token_urlsafe(16)
        yield {
            "id": f"{at}.{n:x}{chance.getrandbits(16):04x}",
            "type": kind,
            "at": datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at),
            "user_id": user,
            "account": f"acct-{owner}",
            "session_id": sessions[owner],
            "ip": f"198.51.{owner % 200}.{chance.randrange(1, 5)}",
            "user_agent": CHROME,
            "detail": {"reason": "logout"} if kind == "session.revoked" else {},
        }


def fill_postgres(url: str, rows: Iterator[dict[str, Any]]) -> tuple[float, int]:
    """Write ``rows`` with ``COPY``, then ``VACUUM ANALYZE``; seconds taken,
    and the bytes of the table and its indexes."""
    import psycopg

    began = time.perf_counter()
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        with connection.cursor() as cursor:
            columns = ", ".join(COLUMNS)
            with cursor.copy(f"COPY {audit.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(
                        [json.dumps(row[c]) if c == "detail" else row[c] for c in COLUMNS]
                    )
        connection.execute(f"VACUUM ANALYZE {audit.name}")
        took = time.perf_counter() - began
        size = connection.execute(f"SELECT pg_total_relation_size('{audit.name}')").fetchone()
    assert size is not None
    return took, int(size[0])


def fill_sqlite(url: str, rows: Iterator[dict[str, Any]], batch: int = 20_000) -> tuple[float, int]:
    """Write ``rows`` with ``insert_events``, ``batch`` a transaction, then
    ``ANALYZE``; seconds taken, and the bytes of the file."""
    began = time.perf_counter()
    db = engine(url)
    try:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == batch:
                with db.begin() as connection:
                    insert_events(connection, chunk)
                chunk = []
        with db.begin() as connection:
            insert_events(connection, chunk)
            connection.execute(text("ANALYZE"))
    finally:
        db.dispose()
    return time.perf_counter() - began, Path(str(make_url(url).database)).stat().st_size


def timed_page(
    connection: Connection, user: str, before: Position | None
) -> tuple[float, int, Position | None]:
    """Seconds, rows and next position of one page of ``user``'s history."""
    began = time.perf_counter()
    rows, after = find_events(connection, AuditFilter(user_id=user), limit=100, before=before)
    took = time.perf_counter() - began
    connection.rollback()
    return took, len(rows), after


def sample(users: int, heavy: int, queries: int, seed: int = 3) -> list[str]:
    """``queries`` users drawn at random among those who are not heavy."""
    return [f"user{i}" for i in random.Random(seed).sample(range(heavy, users), queries)]


def time_route(url: str, users: list[str]) -> list[float]:
    """Seconds of ``GET /api/v1/admin/audit?user_id=`` for each of ``users``
    (an admin's request through the standalone app's test client)."""
    with redis_server() as redis_url:
        app = service_app(redis_url, url)
        with app.app_context():
            root = User("root", hash_password(PASSWORD), roles=("admin",), account="r")
            assert state_of(app).store.create_user(root)
        client = app.test_client()
        login = {"username": "root", "password": PASSWORD}
        signed_in = client.post("/api/v1/auth/login", json=login, headers={"User-Agent": CHROME})
        token = signed_in.get_json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "User-Agent": CHROME}
        took = []
        for user in [users[0], *users]:  # the first opens the reader's pool
            began = time.perf_counter()
            answer = client.get(
                "/api/v1/admin/audit", query_string={"user_id": user}, headers=headers
            )
            took.append(time.perf_counter() - began)
            assert answer.status_code == 200, answer.text
            assert answer.get_json()["events"], user
        close_reader(app)
    return took[1:]


@dataclass
class Queries:
    first: list[float]
    heavy_first: list[float]
    deep: list[float]
    deep_page: int
    rows_seen: int
    route: list[float]


def time_queries(
    url: str, users: int, heavy: int, queries: int, *, deep_page: int = 50, seed: int = 3
) -> Queries:
    """Time the API's query: ``queries`` random users' first page, and each
    heavy user's first page and page ``deep_page`` (via the cursor), 20 times."""
    regular = sample(users, heavy, queries, seed)
    heavies = [f"heavy{i}" for i in range(heavy)]
    db = engine(url)
    try:
        with db.connect() as connection:
            timed_page(connection, regular[0], None)  # the connection's first query
            first = [timed_page(connection, user, None) for user in regular]
            heavy_first: list[float] = []
            deep: list[float] = []
            for user in heavies:
                before: Position | None = None
                for _ in range(deep_page - 1):  # where page deep_page starts
                    before = timed_page(connection, user, before)[2]
                    if before is None:
                        raise ValueError(f"{user} has fewer than {deep_page} pages")
                for _ in range(20):
                    heavy_first.append(timed_page(connection, user, None)[0])
                    took, found, _ = timed_page(connection, user, before)
                    assert found == 100, f"page {deep_page} of {user}: {found} rows"
                    deep.append(took)
    finally:
        db.dispose()
    times, seen = [t for t, _, _ in first], sum(n for _, n, _ in first)
    return Queries(times, heavy_first, deep, deep_page, seen, time_route(url, regular))
