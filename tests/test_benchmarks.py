"""Micro-benchmarks of the two paths users pay for: the revocation check of
every authenticated request, and listing a user's sessions.

In the normal test run they execute once each, as tests (``--benchmark-disable``
in setup.cfg), so they stay correct; ``make bench-micro`` times them for real.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
import redis
from flask import Flask
from flask_jwt_extended import decode_token

from sessionsvc import current_manager
from sessionsvc.store import Actor, CheckStatus
from tests.clients import CHROME


@pytest.fixture
def opened(app: Flask) -> Any:
    with app.test_request_context(headers={"User-Agent": CHROME}):
        manager = current_manager()
        pairs = [manager.open("alice") for _ in range(10)]
        manager.store.load_scripts()
        yield manager, pairs


def test_revocation_check_of_a_live_session(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    payload = decode_token(pairs[0].access_token)
    assert benchmark(manager.is_revoked, {}, payload) is False


def test_revocation_check_of_a_revoked_session(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    payload = decode_token(pairs[1].access_token)
    manager.revoke("alice", pairs[1].session_id)
    assert benchmark(manager.is_revoked, {}, payload) is True


def test_store_touch_when_a_write_is_due(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    store, sid = manager.store, pairs[2].session_id
    clock = iter(range(int(time.time()) + 120, 2**40, 120))  # every call is due
    result = benchmark(
        lambda: store.check_access("alice", sid, now=next(clock), actor=Actor(ip="10.0.0.1"))
    )
    assert result.status is CheckStatus.ACTIVE


def test_list_ten_sessions(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    listed = benchmark(manager.list_for, "alice")
    assert {s.id for s in listed} == {p.session_id for p in pairs}


#: Round trips per route, as ``python -m bench.commands`` counts them (README,
#: "Performance"): a change that adds one fails here.
ROUND_TRIPS = {
    "login (user lookup + open)": 2,
    "authenticated GET /events?limit=1 (steady)": 2,
    "revocation check alone (steady)": 1,
    "revocation check alone (touch due)": 2,
    "GET /sessions, K=1 (check + list)": 2,
    "GET /sessions, K=10 (check + list)": 2,
    "GET /sessions, K=100 (check + list)": 2,
    "POST /auth/refresh": 1,
    "GET /sessions/{own id} (steady)": 1,
    "GET /sessions/{another id} (check + read)": 2,
    "PATCH /sessions/{id} (check + rename)": 2,
    "DELETE /sessions/{id} (check + revoke)": 2,
    "GET /admin/users/{id}/sessions, K=100 (check + list)": 2,
    "GET /admin/users/{id} (check + user)": 2,
    "GET /admin/users, 3 users (check + page)": 3,
    "DELETE /admin/users/{id}/sessions, K=100 (check + revoke)": 2,
    "POST /auth/logout (check + revoke)": 2,
    "POST /auth/password (check + user + change)": 3,
    "DELETE /sessions, K=100 (check + revoke 99)": 2,
}


def test_round_trips_per_route(own_redis: Any) -> None:
    from bench.commands import count_operations

    rows = count_operations(own_redis.url)
    assert {name: trips for name, trips, _ in rows} == ROUND_TRIPS
    commands = {name: sum(cmds.values()) for name, _, cmds in rows}
    assert commands["revocation check alone (steady)"] == 1
    assert commands["GET /sessions/{own id} (steady)"] == 1
    # The check, one ZRANGEBYLEX and one HGETALL a user.
    assert commands["GET /admin/users, 3 users (check + page)"] == 1 + 1 + 3


def test_audit_ingest_stores_each_queued_event_once(postgres_server: str) -> None:
    from bench.audit import ingest

    run = ingest(postgres_server, 300, 2, 40)
    assert run.queued == 300
    assert run.rows == run.distinct == 300
    assert len(run.shares) == 2
    assert sum(run.shares) == 300
    assert run.exact


def test_audit_recorded_to_queryable(postgres_server: str) -> None:
    from bench.audit import time_to_queryable

    took = time_to_queryable(postgres_server, 3)
    assert len(took) == 3
    assert all(0 < seconds < 30 for seconds in took)


def test_audit_history_pages(audit_url: str) -> None:
    from collections import Counter

    from bench.audit_history import fill_postgres, fill_sqlite, history, sample, time_queries
    from sessionsvc.sql.migrate import upgrade

    upgrade(audit_url)
    rows = list(history(3000, 40, 2, 700))
    counts = Counter(row["user_id"] for row in rows)
    assert len(rows) == len({row["id"] for row in rows}) == 3000
    assert counts["heavy0"] == counts["heavy1"] == 700
    assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)
    fill = fill_postgres if audit_url.startswith("postgresql") else fill_sqlite
    fill(audit_url, iter(rows))
    found = time_queries(audit_url, 40, 2, 10, deep_page=4)
    assert len(found.first) == len(found.route) == 10
    assert len(found.heavy_first) == len(found.deep) == 2 * 20
    # Each first page holds every row of a user who has fewer than 100.
    assert found.rows_seen == sum(min(100, counts[user]) for user in sample(40, 2, 10))


def test_throughput_pairs_alternate_and_give_both_ratios() -> None:
    from bench.throughput import compare, pair_lines

    rps = {"ours": 900.0, "baseline": 750.0, "nocheck": 1000.0}
    order: list[str] = []

    def run(name: str) -> dict[str, Any]:
        order.append(name)
        return {"rps": rps[name] + len(order), "p50": 3000, "p99": 6000}

    result = compare(run, pairs=4)
    # Each round: ours with no check, then ours with the recipe; each pair's
    # order flips from one round to the next.
    first_two = ["ours", "nocheck", "ours", "baseline", "nocheck", "ours", "baseline", "ours"]
    assert order[:8] == first_two
    assert len(order) == 16
    for key, other in (("pairs", "baseline"), ("nocheck_pairs", "nocheck")):
        pairs = result[key]
        assert [p["first"] for p in pairs] == ["ours", other, "ours", other]
        assert all(p["ratio"] == p["ours"]["rps"] / p[other]["rps"] for p in pairs)
    assert result["pairs"][0]["ratio"] == 903 / 754
    assert result["nocheck_pairs"][0]["ratio"] == 901 / 1002
    assert result["median_ratio"] == round(
        statistics.median(p["ratio"] for p in result["pairs"]), 3
    )
    assert 1.1 < result["median_ratio"] < 1.3
    assert 0.85 < result["nocheck_median_ratio"] < 0.95
    assert result["nocheck_rps_median"] > result["baseline_rps_median"]
    lines = pair_lines(result)
    assert lines["nocheck_pairs"][0] == "ours first: ours 901 / nocheck 1002 req/s = 0.899"
    assert lines["pairs"][1] == "baseline first: ours 908 / baseline 757 req/s = 1.199"


def test_the_nocheck_app_checks_the_signature_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask_jwt_extended import create_access_token

    from bench.apps import PAYLOAD, nocheck

    # Nothing listens there: the app never asks a store.
    monkeypatch.setenv("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("BENCH_JWT_KEY", "k" * 32)
    app = nocheck()
    with app.app_context():
        token = create_access_token("someone")
    client = app.test_client()
    answered = client.get("/protected", headers={"Authorization": f"Bearer {token}"})
    assert (answered.status_code, answered.get_json()) == (200, PAYLOAD)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (
        client.get("/protected", headers={"Authorization": f"Bearer {forged}"}).status_code == 422
    )
    assert client.get("/protected").status_code == 401


def test_memory_figures_by_kind_of_key(own_redis: Any) -> None:
    from bench.memory import key_sizes, kind_of, logins_memory

    assert kind_of("p:{dXNlci0w}:s:abc") == "session hash"
    assert kind_of("p:{dXNlci0w}:ev") == "events list"
    assert kind_of("p:{dXNlci0w}:known") == "known hash"
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    figures = logins_memory(own_redis.url, client, users=2, per_user=3, warm_up=2)
    assert 150 < figures["freed_per_session"] < 2000
    kinds = key_sizes(client)
    assert set(kinds) == {"user hash", "names zset"}
    assert kinds["user hash"]["keys"] == 3
    client.close()


def test_profile_own_time_by_function_and_package() -> None:
    from bench.profile import own_time, summarize

    raw = "\n".join(
        [
            "<module> (wsgi.py:1);check (/x/site-packages/sessionsvc/store/checks.py:60);"
            "read_fields (/x/site-packages/sessionsvc/store/connections.py:240) 6",
            "<module> (wsgi.py:1);"
            "read_fields (/x/site-packages/sessionsvc/store/connections.py:244) 2",
            "<module> (wsgi.py:1);send (/x/site-packages/redis/connection.py:10) 2",
            "not a sample line",
        ]
    )
    leaves, total = own_time(raw)
    assert total == 10
    summary = summarize(leaves, total, top=1)
    # Lines of one function are one entry; the file from its package on.
    assert summary["top"] == [
        {"function": "read_fields", "file": "sessionsvc/store/connections.py", "share": 80.0}
    ]
    assert summary["packages"] == {"sessionsvc": 80.0, "redis": 20.0}
