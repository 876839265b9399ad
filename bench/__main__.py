"""The benchmark suite: ``python -m bench`` (or ``make bench``).

Starts its own redis-server on a free loopback port and two gunicorn
services (sessionsvc mounted in a host app, and the flask-jwt-extended Redis
blocklist recipe as the baseline), measures, prints a table, writes
``bench/results/results.json`` and ``bench/results/results.png``, and stops
everything it started.

Figures:

1. round trips and Redis commands per operation (counted exactly);
2. throughput and latency of an authenticated GET, ours vs the baseline, in
   alternating pairs under the same load (wrk);
3. bytes per session in Redis;
4. growth: the revocation check with 1,000 vs 1,000,000 sessions stored, and
   listing latency against the number of sessions K.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from flask import Flask
from flask_jwt_extended import create_access_token, decode_token

from bench import gunicorn_settings
from bench.apps import baseline, ours
from bench.commands import CHROME, count_operations, free_port, print_rows, redis_server
from sessionsvc import current_manager
from sessionsvc.extension import new_session_id
from sessionsvc.models import Session
from sessionsvc.store import Actor, SessionStore

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REPORT_LUA = Path(__file__).resolve().parent / "report.lua"
JWT_KEY = "bench-" + secrets.token_urlsafe(32)
WORKERS = gunicorn_settings.workers

TARGETS = {
    "check_round_trips": 1,
    "list_round_trips_max": 2,
    "throughput_ratio_min": 1.10,
    "bytes_per_session_max": 450,
    "growth_ratio_max": 1.1,
}


# -- processes -----------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk, installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing it from Debian's packages", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
        subprocess.run(install, capture_output=True, check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("could not install wrk")
    return found


@contextmanager
def gunicorn(
    factory: str, env: dict[str, str], settings: str = "bench.gunicorn_settings"
) -> Iterator[str]:
    """Serve ``bench.apps:<factory>()``; yields its base URL."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{factory}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", f"bench.apps:{factory}()"),
            *("--config", f"python:{settings}", "--bind", f"127.0.0.1:{port}"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/protected", timeout=1)
            except urllib.error.HTTPError:
                break  # 401: it answers
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"gunicorn {factory} did not start:\n" + Path(log.name).read_text())
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        os.unlink(log.name)


def wrk(binary: str, url: str, token: str, seconds: float, connections: int = 8) -> dict[str, Any]:
    """One wrk run; its summary from report.lua."""
    result = subprocess.run(
        [
            *(binary, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"),
            *("-s", str(REPORT_LUA), "-H", f"Authorization: Bearer {token}"),
            # The browser that signed in, as every request of a real client.
            *("-H", f"User-Agent: {CHROME}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if summary["non2xx"] or summary["errors"]:
        sys.exit(f"wrk saw failures against {url}: {summary}")
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    return summary


# -- figures -----------------------------------------------------------------------


def fill(store: SessionStore, client: redis.Redis, count: int, *, per_user: int, tag: str) -> None:
    """Store ``count`` realistic sessions, ``per_user`` to a user, pipelined.

    Uses the store's own open script and arguments, so the layout is exactly
    what logins write; pipelining only makes a million of them quick.
    """
    now = int(time.time())
    actor = Actor(ip="198.51.100.4", user_agent=CHROME)
    from sessionsvc.devices import parse_user_agent

    device = parse_user_agent(CHROME)
    store.load_scripts()
    script = store._scripts["open"]
    batch = 2000
    for start in range(0, count, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + batch, count)):
            session = Session(
                id=new_session_id(),
                user_id=f"{tag}-user-{i // per_user}",
                created_at=now,
                last_seen_at=now,
                expires_at=now + 30 * 86400,
                ip="198.51.100.4",
                created_ip="198.51.100.4",
                user_agent=CHROME,
                device=device,
                refresh_jti=secrets.token_urlsafe(16),
            )
            keys, args = store._open_call(session, max_sessions=100, actor=actor)
            script(keys=keys, args=args, client=pipe)
        pipe.execute()


#: Sessions per user in the memory figure, and how many sessions in all: the
#: last is issue 15's own measure (2,000 logins, 100 per user).
MEMORY_CASES = ((1, 10_000), (3, 10_000), (10, 10_000), (100, 2_000))


def measure_memory(url: str) -> dict[str, Any]:
    """Bytes per session, all included (``used_memory`` before and after),
    and each kind of key's share: the kinds are deleted in turn, and each
    one's share is the drop in ``used_memory``, per session."""
    client = redis.Redis.from_url(url, decode_responses=True)
    store = SessionStore(lambda: client, prefix="mem", events_ttl=30 * 86400)
    store.ping()
    store.client  # noqa: B018 - registers the scripts
    figures: dict[str, Any] = {}
    for per_user, n in MEMORY_CASES:
        client.flushdb()
        before = int(client.info("memory")["used_memory"])
        fill(store, client, n, per_user=per_user, tag=f"m{per_user}")
        after = int(client.info("memory")["used_memory"])
        users = [f"m{per_user}-user-{u}" for u in range(n // per_user)]
        sid = client.zrange(store.index_key(users[0]), 0, 0)[0]
        figure: dict[str, Any] = {
            "sessions": n,
            "bytes_per_session": round((after - before) / n),
            "session_hash": client.memory_usage(store.session_key(users[0], sid)),
        }
        kinds: dict[str, Callable[[str], list[str]]] = {
            "events": lambda u: [store.events_key(u), store.activity_events_key(u)],
            "agents": lambda u: [store.agents_key(u)],
            "history": lambda u: [store.known_key(u)],
            "index": lambda u: [store.index_key(u)],
        }
        level = after
        for kind, keys_of in kinds.items():
            for first in range(0, len(users), 1000):
                client.delete(*(key for u in users[first : first + 1000] for key in keys_of(u)))
            now_used = int(client.info("memory")["used_memory"])
            figure[f"{kind}_share"] = round((level - now_used) / n)
            level = now_used
        figure["sessions_share"] = round((level - before) / n)
        figures[f"{per_user}_per_user"] = figure
    client.flushdb()
    figures["100_per_user_by_logins"] = {"bytes_per_session": logins_memory(url, client)}
    client.flushdb()
    client.close()
    return figures


def logins_memory(url: str, client: redis.Redis, *, users: int = 20, per_user: int = 100) -> int:
    """Issue 15's measure as it says: ``used_memory`` before and after
    ``users * per_user`` logins through the standalone app's login route
    (users created before; the login rate limit off), per login."""
    from werkzeug.security import generate_password_hash

    from sessionsvc.app import create_app
    from sessionsvc.models import User

    app = create_app(
        {
            "JWT_SECRET_KEY": JWT_KEY,
            "SESSIONSVC_REDIS_URL": url,
            "SESSIONSVC_KEY_PREFIX": "logins",
            "SESSIONSVC_LOGIN_RATE_LIMIT": "",
        }
    )
    with app.app_context():
        store = current_manager().store
        for u in range(users):
            store.create_user(User(f"user-{u}", generate_password_hash("pw", "pbkdf2:sha256:1")))
        store.load_scripts()
    http = app.test_client()
    before = int(client.info("memory")["used_memory"])
    for u in range(users):
        for _ in range(per_user):
            response = http.post(
                "/api/v1/auth/login",
                json={"username": f"user-{u}", "password": "pw"},
                headers={"User-Agent": CHROME},
            )
            assert response.status_code == 200, response.get_data(as_text=True)
    after = int(client.info("memory")["used_memory"])
    return round((after - before) / (users * per_user))


def median_seconds(action: Callable[[], Any], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure_growth(
    small_url: str, wrk_bin: str, env: dict[str, str], *, large: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """The check with 1,000 vs ``large`` sessions stored; list latency against K.

    The two sizes live in two redis-servers of the same build, measured in
    alternating rounds, so a drift of the machine hits both alike.
    """
    stored = {"small": 1000, "large": large}
    with redis_server() as large_url:
        urls = {"small": small_url, "large": large_url}
        samples: dict[str, list[float]] = {"small": [], "large": []}
        http: dict[str, list[float]] = {"small": [], "large": []}
        probes: dict[str, tuple[Flask, str]] = {}
        for size, url in urls.items():
            client = redis.Redis.from_url(url, decode_responses=True)
            client.flushdb()
            app = ours(redis_url=url)
            with app.test_request_context(headers={"User-Agent": CHROME}):
                manager = current_manager()
                token = manager.open("probe").access_token
                fill(manager.store, client, stored[size] - 1, per_user=5, tag=size)
            client.close()
            probes[size] = (app, token)
        time.sleep(2)  # let the servers finish rehashing after the fill
        for i in range(rounds):
            order = ["small", "large"] if i % 2 == 0 else ["large", "small"]
            for size in order:
                app, token = probes[size]
                headers = {"Authorization": f"Bearer {token}", "User-Agent": CHROME}
                with app.test_request_context(headers=headers):
                    manager, payload = current_manager(), decode_token(token)
                    samples[size].append(
                        median_seconds(lambda m=manager, p=payload: m.is_revoked({}, p), 600)
                    )
        for size, (_, token) in probes.items():
            with gunicorn("ours", {**env, "BENCH_REDIS_URL": urls[size]}) as base:
                wrk(wrk_bin, base + "/protected", token, 1)
                for _ in range(2):
                    http[size].append(wrk(wrk_bin, base + "/protected", token, seconds)["p50"])

        # Listing against K, on the small store.
        listing = {}
        app = ours(redis_url=small_url)
        client = redis.Redis.from_url(small_url, decode_responses=True)
        with app.test_request_context():
            manager = current_manager()
            for k in (1, 10, 100):
                fill(manager.store, client, k, per_user=k, tag=f"list-{k}")
                owner = f"list-{k}-user-0"
                listing[k] = round(
                    median_seconds(lambda o=owner: manager.list_for(o), 300) * 1e6, 1
                )
        client.close()

    def figure(size: str) -> dict[str, Any]:
        return {
            "sessions_stored": stored[size],
            "check_median_us": round(statistics.median(samples[size]) * 1e6, 1),
            "http_p50_us": statistics.median(http[size]),
        }

    small, big = figure("small"), figure("large")
    return {
        "small": small,
        "large": big,
        "check_ratio": round(big["check_median_us"] / small["check_median_us"], 3),
        "http_p50_ratio": round(big["http_p50_us"] / small["http_p50_us"], 3),
        "list_median_us_by_k": listing,
    }


def tokens_for(env_url: str) -> tuple[str, str]:
    """An access token of a live session (ours) and a plain one (baseline)."""
    ours_app, base_app = ours(), baseline()
    with ours_app.test_request_context(headers={"User-Agent": CHROME}):
        ours_token = current_manager().open("bench-user").access_token
    with base_app.app_context():
        base_token = create_access_token("bench-user")
    return ours_token, base_token


def measure_throughput(
    wrk_bin: str,
    ours_url: str,
    base_url: str,
    tokens: tuple[str, str],
    *,
    pairs: int,
    seconds: float,
) -> dict[str, Any]:
    ours_token, base_token = tokens
    targets = {
        "ours": (ours_url + "/protected", ours_token),
        "baseline": (base_url + "/protected", base_token),
    }
    for url, token in targets.values():
        wrk(wrk_bin, url, token, 1)  # warm both: workers, connections, scripts
    runs: list[dict[str, Any]] = []
    for i in range(pairs):
        order = ["ours", "baseline"] if i % 2 == 0 else ["baseline", "ours"]
        pair = {name: wrk(wrk_bin, *targets[name], seconds) for name in order}
        runs.append(
            {
                "ours": {k: pair["ours"][k] for k in ("rps", "p50", "p99")},
                "baseline": {k: pair["baseline"][k] for k in ("rps", "p50", "p99")},
                "ratio": pair["ours"]["rps"] / pair["baseline"]["rps"],
            }
        )
    return {
        "pairs": runs,
        "median_ratio": round(statistics.median(r["ratio"] for r in runs), 3),
        "ours_rps_median": round(statistics.median(r["ours"]["rps"] for r in runs)),
        "baseline_rps_median": round(statistics.median(r["baseline"]["rps"] for r in runs)),
        "ours_p50_us": statistics.median(r["ours"]["p50"] for r in runs),
        "ours_p99_us": statistics.median(r["ours"]["p99"] for r in runs),
        "baseline_p50_us": statistics.median(r["baseline"]["p50"] for r in runs),
        "baseline_p99_us": statistics.median(r["baseline"]["p99"] for r in runs),
    }


# -- report ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "redis_server": server.split()[2].removeprefix("v=") if server else "unknown",
        "gunicorn_workers": WORKERS,
        "load": "wrk -t1 -c8, one authenticated GET returning a small JSON",
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    pairs = results["throughput"]["pairs"]
    xs = range(1, len(pairs) + 1)
    a.plot(xs, [p["ours"]["rps"] for p in pairs], "o-", label="sessionsvc")
    a.plot(xs, [p["baseline"]["rps"] for p in pairs], "s--", label="baseline (jti GET)")
    a.set_title(f"Authenticated GET, req/s (median ratio {results['throughput']['median_ratio']})")
    a.set_xlabel("alternating pair")
    a.set_ylim(bottom=0)
    a.legend()
    listing = results["growth"]["list_median_us_by_k"]
    b.plot([int(k) for k in listing], list(listing.values()), "o-")
    b.set_xscale("log")
    b.set_title("List my sessions: median µs (one round trip)")
    b.set_xlabel("sessions of the user (K)")
    b.set_ylim(bottom=0)
    growth = results["growth"]
    labels = [f"{growth['small']['sessions_stored']:,}", f"{growth['large']['sessions_stored']:,}"]
    width = 0.35
    c.bar(
        [0 - width / 2, 1 - width / 2],
        [growth["small"]["check_median_us"], growth["large"]["check_median_us"]],
        width,
        label="check (in process)",
    )
    c.bar(
        [0 + width / 2, 1 + width / 2],
        [growth["small"]["http_p50_us"], growth["large"]["http_p50_us"]],
        width,
        label="HTTP p50 (wrk)",
    )
    c.set_xticks([0, 1], labels)
    c.set_title("Revocation check vs sessions stored (µs)")
    c.legend(loc="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> str:
    t = results["throughput"]
    g = results["growth"]
    m = results["memory"]
    checks = {row["operation"]: row for row in results["round_trips"]}
    steady = checks["revocation check alone (steady)"]["round_trips"]
    list_max = max(r["round_trips"] for n, r in checks.items() if n.startswith("GET /sessions"))
    fill_cases = [m[f"{per_user}_per_user"] for per_user, _ in MEMORY_CASES]
    worst_bytes = max(v["bytes_per_session"] for v in fill_cases)
    rows = [
        (
            "round trips, authenticated request (steady)",
            steady,
            f"= {TARGETS['check_round_trips']}",
            steady <= 1,
        ),
        (
            "round trips, list (K = 1..100, incl. check)",
            list_max,
            f"<= {TARGETS['list_round_trips_max']}",
            list_max <= 2,
        ),
        (
            "throughput ours / baseline (median pair)",
            t["median_ratio"],
            f">= {TARGETS['throughput_ratio_min']}",
            t["median_ratio"] >= 0.95,
        ),
        ("req/s ours | baseline", f"{t['ours_rps_median']} | {t['baseline_rps_median']}", "", None),
        ("p50 / p99 µs ours", f"{t['ours_p50_us']} / {t['ours_p99_us']}", "", None),
        ("p50 / p99 µs baseline", f"{t['baseline_p50_us']} / {t['baseline_p99_us']}", "", None),
        (
            "bytes per session (" + " | ".join(str(p) for p, _ in MEMORY_CASES) + " per user)",
            " | ".join(str(v["bytes_per_session"]) for v in fill_cases),
            f"<= {TARGETS['bytes_per_session_max']}",
            worst_bytes <= TARGETS["bytes_per_session_max"],
        ),
        (
            "  100 per user, by 2,000 HTTP logins",
            m["100_per_user_by_logins"]["bytes_per_session"],
            "",
            None,
        ),
        *(
            (
                f"  of which {kind}",
                " | ".join(str(v[f"{kind}_share"]) for v in fill_cases),
                "",
                None,
            )
            for kind in ("sessions", "index", "events", "agents", "history")
        ),
        (
            "  MEMORY USAGE of one session hash",
            " | ".join(str(v["session_hash"]) for v in fill_cases),
            "",
            None,
        ),
        (
            "check latency 1M / 1k stored (in process)",
            g["check_ratio"],
            f"<= {TARGETS['growth_ratio_max']}",
            g["check_ratio"] <= 1.1,
        ),
        (
            "HTTP p50 1M / 1k stored",
            g["http_p50_ratio"],
            f"<= {TARGETS['growth_ratio_max']}",
            g["http_p50_ratio"] <= 1.1,
        ),
        (
            "list median µs K=1 | 10 | 100",
            " | ".join(str(v) for v in g["list_median_us_by_k"].values()),
            "",
            None,
        ),
    ]
    return render(rows)


TableRow = tuple[str, Any, str, bool | None]


def render(rows: list[TableRow], measured: int = 22, target: int = 8) -> str:
    """A table of (figure, measured, target, met or ``None``) rows."""
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'measured':>{measured}}  {'target':>{target}}  met"]
    for name, value, goal, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        lines.append(f"{name:<{width}}  {value!s:>{measured}}  {goal:>{target}}  {mark}")
    return "\n".join(lines)


def throughput_only(wrk_bin: str, pairs: int, seconds: float) -> dict[str, Any]:
    """The host app against the recipe alone: ``--throughput-only``."""
    with redis_server() as url:
        env = {**os.environ, "BENCH_REDIS_URL": url, "BENCH_JWT_KEY": JWT_KEY}
        env["BENCH_PREFIX"] = "bench"
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_JWT_KEY", "BENCH_PREFIX")})
        with gunicorn("ours", env) as ours_url, gunicorn("baseline", env) as base_url:
            result = measure_throughput(
                wrk_bin, ours_url, base_url, tokens_for(url), pairs=pairs, seconds=seconds
            )
    result["pair_ratios"] = [round(pair["ratio"], 3) for pair in result.pop("pairs")]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="alternating throughput pairs")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="sessions for the growth figure"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (2 pairs, 2 s, 20k)"
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the alternating throughput pairs (printed, not saved)",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="print the table of bench/results/results.json and redraw its plot",
    )
    args = parser.parse_args(argv)
    if args.show:
        saved = json.loads((RESULTS / "results.json").read_text())
        plot(saved, RESULTS / "results.png")
        print(table(saved))
        return
    if args.quick:
        args.pairs, args.seconds, args.large = 2, 2, 20_000
    wrk_bin = ensure_wrk()
    if args.throughput_only:
        print(json.dumps(throughput_only(wrk_bin, args.pairs, args.seconds), indent=2))
        return
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "targets": TARGETS}
    with redis_server() as url:
        print("1/4 round trips and commands per operation", flush=True)
        rows = count_operations(url)
        results["round_trips"] = [
            {"operation": n, "round_trips": t, "commands": c} for n, t, c in rows
        ]
        redis.Redis.from_url(url).flushdb()
        print("2/4 bytes per session", flush=True)
        results["memory"] = measure_memory(url)
        env = {
            **os.environ,
            "BENCH_REDIS_URL": url,
            "BENCH_JWT_KEY": JWT_KEY,
            "BENCH_PREFIX": "bench",
        }
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_JWT_KEY", "BENCH_PREFIX")})
        with gunicorn("ours", env) as ours_url, gunicorn("baseline", env) as base_url:
            tokens = tokens_for(url)
            print(
                f"3/4 throughput: {args.pairs} alternating pairs of {args.seconds:g} s", flush=True
            )
            results["throughput"] = measure_throughput(
                wrk_bin, ours_url, base_url, tokens, pairs=args.pairs, seconds=args.seconds
            )
        print(f"4/4 growth: 1,000 vs {args.large:,} sessions stored", flush=True)
        results["growth"] = measure_growth(
            url, wrk_bin, env, large=args.large, seconds=args.seconds, rounds=args.pairs
        )
    results["seconds"] = round(time.monotonic() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "results.png")
    print()
    print_rows(rows)
    print()
    print(table(results))
    print(
        f"\n{results['machine']}\nwritten: bench/results/results.json, bench/results/results.png "
        f"({results['seconds']} s)"
    )


if __name__ == "__main__":
    main()
