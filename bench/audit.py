"""The audit trail: events into PostgreSQL, and a user's history at 1,000,000 rows.

``python -m bench.audit`` (part of ``make bench``) uses the PostgreSQL on
127.0.0.1:5432 when it answers (else starts one of its own, as the tests
do), in databases of its own (random names, dropped at the end), and:

1. **Ingest.** On its own redis-server, with ``SESSIONSVC_AUDIT_URL`` set
   (so the scripts append every event to the stream), users sign in and out
   through the extension (``open`` then ``revoke``: two events each) until
   ``--events`` are queued; then ``--writers`` real writers
   (``sessionsvc.audit_writer.Writer``, one process each, ``--batch``
   entries a transaction) drain them into the table. Printed: events/s for
   each number of writers, each writer's share, and the check that the
   table holds every queued event exactly once. Then, with one idle writer
   (``Writer.run``), the time from an event recorded to the event
   queryable (``--latency`` events, a random pause between them).
2. **A user's history.** ``--rows`` rows (``--users`` users over 400 days,
   ``--heavy`` of them with ``--heavy-events`` each; appended in time order,
   as writers do) written with ``COPY``, then ``VACUUM ANALYZE``; then the
   API's query (``sessionsvc.sql.query.find_events``, 100 a page) timed for
   ``--queries`` random users' first page, and for the heavy users' first
   page and a page deep in their history (through the cursor); and the
   same users' first page through ``GET /api/v1/admin/audit?user_id=`` (an
   admin's request, on the test client). The same on SQLite
   (``insert_events`` in batches) unless ``--no-sqlite``
   (``bench/audit_history.py``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import random
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from flask import Flask
from sqlalchemy import func, make_url, select, text

from bench.audit_history import (
    Queries,
    fill_postgres,
    fill_sqlite,
    history,
    service_app,
    time_queries,
)
from bench.commands import CHROME, redis_server
from sessionsvc import current_manager
from sessionsvc.audit_writer import Writer
from sessionsvc.sql.migrate import engine, upgrade
from sessionsvc.sql.query import AuditFilter, find_events
from sessionsvc.sql.tables import audit
from sessionsvc.state import state_of
from tests.servers import POSTGRES_URL, PostgresProcess, postgres_answers

#: Seconds after which an event not yet queryable fails the bench.
GIVE_UP = 60.0


# -- databases ---------------------------------------------------------------


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database: the one on
    127.0.0.1:5432 when it answers, else one of the bench's own."""
    if postgres_answers(POSTGRES_URL):
        yield POSTGRES_URL
        return
    server = PostgresProcess().start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def database(server: str) -> Iterator[str]:
    """A database of its own on ``server`` (random name) with the audit
    schema, dropped after the block."""
    name = f"sessionsvc_bench_{secrets.token_hex(6)}"
    admin = engine(server).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def count_rows(url: str) -> tuple[int, int]:
    """(rows, distinct ids) in the audit table at ``url``."""
    db = engine(url)
    try:
        with db.connect() as connection:
            query = select(func.count(), func.count(audit.c.id.distinct()))
            rows, ids = connection.execute(query).one()
    finally:
        db.dispose()
    return int(rows), int(ids)


# -- ingest --------------------------------------------------------------------


def record(app: Flask, events: int, users: int = 5000) -> None:
    """Sign ``users`` in and out, by turns, until ``events`` are recorded
    (``session.created`` and ``session.revoked`` for each sign-in)."""
    with app.test_request_context(
        headers={"User-Agent": CHROME}, environ_base={"REMOTE_ADDR": "203.0.113.9"}
    ):
        manager = current_manager()
        for i in range(events // 2):
            user = f"user{i % users}"
            manager.revoke(user, manager.open(user).session_id)


def queued(app: Flask) -> int:
    """Events in the streams that no writer has stored yet."""
    store = state_of(app).store
    backlog = store.audit_backlog(store.audit_streams(scan=True))
    return backlog.unread + backlog.pending


def writer_of(app: Flask, batch: int, name: str) -> Writer:
    state = state_of(app)
    return Writer(state.store, state.settings, batch=batch, name=name)


def drain(writer: Writer) -> int:
    """Step until the streams hold nothing for this writer; entries handled."""
    handled = 0
    while True:
        done = writer.step()
        handled += done
        if writer.retry_in:
            time.sleep(writer.retry_in)
        elif not done:
            return handled


def _drain_process(
    redis_url: str, audit_url: str, batch: int, name: str, start: Any, results: Any
) -> None:
    writer = writer_of(service_app(redis_url, audit_url), batch, name)
    assert writer.ready()
    start.wait()
    handled = drain(writer)
    results.put((name, handled, time.perf_counter()))
    writer.database.close()


@dataclass
class Ingest:
    writers: int
    batch: int
    queued: int
    #: Seconds the service took to record them (signing in and out).
    recorded: float
    seconds: float
    shares: list[int]
    rows: int
    distinct: int

    @property
    def rate(self) -> float:
        return self.queued / self.seconds

    @property
    def exact(self) -> bool:
        return self.rows == self.distinct == self.queued == sum(self.shares)


def ingest(server: str, events: int, writers: int, batch: int) -> Ingest:
    """Queue ``events`` on a redis-server and in a database of their own,
    then time ``writers`` writer processes draining them."""
    with redis_server() as redis_url, database(server) as audit_url:
        app = service_app(redis_url, audit_url)
        began = time.perf_counter()
        record(app, events)
        recorded = time.perf_counter() - began
        waiting = queued(app)
        context = multiprocessing.get_context("fork")
        start, results = context.Barrier(writers + 1), context.Queue()
        procs = [
            context.Process(
                target=_drain_process,
                args=(redis_url, audit_url, batch, f"bench-{n}", start, results),
            )
            for n in range(writers)
        ]
        for proc in procs:
            proc.start()
        start.wait(60)  # a writer that failed to start breaks it
        began = time.perf_counter()
        finished: list[tuple[str, int, float]] = []
        while len(finished) < writers:
            try:
                finished.append(results.get(timeout=1))
            except queue.Empty:
                if any(proc.exitcode not in (None, 0) for proc in procs):
                    raise RuntimeError("a writer process failed") from None
        for proc in procs:
            proc.join()
        seconds = max(at for _, _, at in finished) - began
        rows, distinct = count_rows(audit_url)
        shares = [n for _, n, _ in finished]
        return Ingest(writers, batch, waiting, recorded, seconds, shares, rows, distinct)


def time_to_queryable(server: str, samples: int, seed: int = 7) -> list[float]:
    """Seconds from an event recorded to the event found by the API's query,
    with one idle writer running, for ``samples`` events."""
    chance = random.Random(seed)
    with redis_server() as redis_url, database(server) as audit_url:
        app = service_app(redis_url, audit_url)
        record(app, 2)  # the stream and its group exist before the writer looks
        writer = writer_of(app, 500, "bench-idle")
        thread = threading.Thread(target=writer.run)
        thread.start()
        db = engine(audit_url)
        took: list[float] = []
        try:
            with (
                app.test_request_context(headers={"User-Agent": CHROME}),
                db.connect() as connection,
            ):
                manager = current_manager()
                for _ in range(samples):
                    time.sleep(chance.uniform(0.05, 0.5))
                    session_id = manager.open("someone").session_id
                    recorded = time.perf_counter()
                    where = AuditFilter(session_id=session_id)
                    while not find_events(connection, where, limit=1)[0]:
                        connection.rollback()  # a fresh snapshot for the next look
                        if time.perf_counter() - recorded > GIVE_UP:
                            raise RuntimeError(f"session {session_id}'s event never stored")
                        time.sleep(0.002)
                    took.append(time.perf_counter() - recorded)
                    connection.rollback()
        finally:
            writer.stop.set()
            thread.join()
            db.dispose()
    return took


# -- printing --------------------------------------------------------------------


def ms(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


Row = tuple[str, str, str]


def ingest_row(runs: list[Ingest]) -> Row:
    """One row for the runs of one number of writers: the median run's rate
    and shares, the range, and whether every run stored each event once."""
    run = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    wrong = [f"{r.queued} queued: {r.rows} rows, {r.distinct} ids" for r in runs if not r.exact]
    return (
        f"ingest, {run.writers} writer(s), batch {run.batch}",
        f"{run.rate:,.0f} events/s (median of {len(runs)} runs: "
        f"{min(r.rate for r in runs):,.0f}-{max(r.rate for r in runs):,.0f}; "
        f"{run.queued:,} queued, recorded at {run.queued / run.recorded:,.0f}/s, "
        f"stored in {run.seconds:.1f} s, shares {'/'.join(f'{n:,}' for n in run.shares)}; "
        f"{'each event once in every run' if not wrong else 'NOT EXACT: ' + '; '.join(wrong)})",
        ">= 5,000 events/s",
    )


def query_rows(label: str, rows: int, fill: tuple[float, int], found: Queries) -> list[Row]:
    return [
        (f"{label}: fill {rows:,} rows", f"{fill[0]:.1f} s, {fill[1] / 2**20:,.0f} MiB", "-"),
        (
            f"{label}: a user's first page, {len(found.first)} random users",
            f"{ms(found.first)} ({found.rows_seen / len(found.first):.0f} rows a page)",
            "< 20 ms",
        ),
        (f"{label}: a heavy user's first page", ms(found.heavy_first), "< 20 ms"),
        (f"{label}: a heavy user's page {found.deep_page} (cursor)", ms(found.deep), "< 20 ms"),
        (f"{label}: GET /api/v1/admin/audit?user_id=, same users", ms(found.route), "-"),
    ]


def history_rows(args: argparse.Namespace, server: str) -> list[Row]:
    """Part 2: a user's history on PostgreSQL (at ``server``), then on SQLite."""
    shape = (args.rows, args.users, args.heavy, args.heavy_events)
    deep = max(2, args.heavy_events // 200)  # halfway through a heavy user's pages
    rows: list[Row] = []
    print(f"PostgreSQL: {args.rows:,} rows, then queries...", flush=True)
    with database(server) as url:
        fill = fill_postgres(url, history(*shape))
        found = time_queries(url, *shape[1:3], args.queries, deep_page=deep)
        rows += query_rows("PostgreSQL", args.rows, fill, found)
    if not args.no_sqlite:
        print(f"SQLite: {args.rows:,} rows, then queries...", flush=True)
        with TemporaryDirectory(prefix="sessionsvc-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            upgrade(url)
            fill = fill_sqlite(url, history(*shape))
            found = time_queries(url, *shape[1:3], args.queries, deep_page=deep)
            rows += query_rows("SQLite", args.rows, fill, found)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="events queued per run")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[500], help="entries a writer takes at a time"
    )
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3, help="ingest runs per configuration")
    parser.add_argument("--ingest-only", action="store_true", help="the ingest runs alone")
    parser.add_argument("--latency", type=int, default=50, help="events timed to queryable")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--heavy", type=int, default=5, help="users with --heavy-events each")
    parser.add_argument("--heavy-events", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200, help="random users timed")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite half of 2")
    args = parser.parse_args(argv)
    table: list[Row] = [("figure", "measured", "goal")]
    with postgres_server() as server:
        for writers in args.writers:
            for batch in args.batch:
                print(
                    f"ingest: {args.events:,} events, {writers} writer(s), batch {batch}...",
                    flush=True,
                )
                runs = [ingest(server, args.events, writers, batch) for _ in range(args.runs)]
                table.append(ingest_row(runs))
        if not args.ingest_only:
            print(f"recorded to queryable: {args.latency} events...", flush=True)
            took = time_to_queryable(server, args.latency)
            late = f"{ms(took)}, max {max(took) * 1000:.0f} ms"
            table.append(
                (f"recorded to queryable, idle writer ({len(took)} events)", late, "< 2 s")
            )
            table += history_rows(args, server)
    print()
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(max(len(r[i]) for r in table)) for i, cell in enumerate(row)))
        if n == 0:
            print("  ".join("-" * max(len(r[i]) for r in table) for i in range(3)))


if __name__ == "__main__":
    main()
