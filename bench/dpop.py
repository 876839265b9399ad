"""DPoP-bound against Bearer requests in a mounted host app.

``python -m bench.dpop [--pairs N --seconds S]`` (part of ``make bench``)
starts its own redis-server, serves ``bench.apps:ours()`` (sessionsvc mounted
in a host app, one ``jwt_required`` route) with the benchmark's gunicorn
settings, and opens two sessions in it: one unbound (a Bearer token) and one
bound to an ES256 key (signed in with a proof, so its tokens carry
``cnf.jkt``). Then alternating pairs of ``wrk`` runs against ``/protected``:

- Bearer: ``Authorization: Bearer <token>``;
- bound: ``Authorization: DPoP <token>`` and a proof of its own in every
  request (``DPoP``, with the token's ``ath``), signed just before the run
  (1.5 times as many as the fastest run so far would send) and read by
  ``bench/dpop.lua``, which sends each once; a request finding none left
  goes without (401) and fails the bench, as does any answer but 2xx.

wrk builds both sides' requests before its clock starts and picks each the
same way, so it spends the same on either per request, beyond the bytes of
the proof. For each run: requests per second, latency, CPU per request of
the workers (``/proc``), of redis-server (``INFO cpu``) and of wrk (its
setup included), and the Redis commands the server ran per request
(``INFO commandstats``). One bound request is also counted exactly
in process (``bench.commands.measure``): one round trip, the ``bound.lua``
script. The per-proof check's own cost comes from ``bench.proofs``.
Results: ``bench/results/dpop.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask_jwt_extended import decode_token

from bench import proofs
from bench.__main__ import JWT_KEY, REPORT_LUA, RESULTS, ROOT, ensure_wrk, gunicorn, machine, render
from bench.agents import cpu_seconds, serving_pids
from bench.apps import ours
from bench.commands import CHROME, commandstats, measure, redis_server
from sessionsvc import current_manager
from sessionsvc.dpop_client import DPoPKey

DPOP_LUA = Path(__file__).resolve().parent / "dpop.lua"
#: Median bound / Bearer requests per second, at least.
TARGET_RATIO = 0.85
#: Proofs signed before a bound run, per request the fastest run so far would send.
PROOF_MARGIN = 1.5
ALG = "ES256"

Run = dict[str, Any]


def sessions(base: str, key: DPoPKey) -> tuple[str, str]:
    """(a Bearer access token, an access token bound to ``key``), of two
    sessions opened in the host app as its login view would."""
    app = ours()
    with app.test_request_context(headers={"User-Agent": CHROME}):
        bearer = current_manager().open("bench-bearer")
    login = base + "/login"
    headers = {"User-Agent": CHROME, "DPoP": key.proof("POST", login)}
    # The request's URL is the one the proof names (its htu).
    with app.test_request_context("/login", base_url=base, method="POST", headers=headers):
        bound = current_manager().open("bench-bound")
    with app.app_context():
        if bearer.token_type != "Bearer" or "cnf" in decode_token(bearer.access_token):
            raise SystemExit(f"the Bearer session is bound: {bearer.token_type}")
        if decode_token(bound.access_token).get("cnf") != {"jkt": key.jkt}:
            raise SystemExit(f"the sign-in with a proof was not bound: {bound.token_type}")
    return bearer.access_token, bound.access_token


def count_one(url: str, key: DPoPKey, tokens: tuple[str, str]) -> dict[str, Any]:
    """Round trips and server commands of one request each way, in process (exact)."""
    app, admin = ours(), redis.Redis.from_url(url, decode_responses=True)
    client = app.test_client()
    bearer, bound = tokens
    target = "http://localhost/protected"
    found: dict[str, Any] = {}
    sides: dict[str, Callable[[], dict[str, str]]] = {
        "bearer": lambda: {"Authorization": f"Bearer {bearer}"},
        "bound": lambda: key.headers("GET", target, access_token=bound),
    }
    for side, headers_of in sides.items():

        def one(headers_of: Callable[[], dict[str, str]] = headers_of, side: str = side) -> None:
            response = client.get("/protected", headers={"User-Agent": CHROME, **headers_of()})
            if response.status_code != 200:
                raise SystemExit(f"{side}: {response.status_code} {response.get_data(True)}")

        one()  # warm: the scripts loaded, the token's signature checked once
        trips, commands = measure(admin, one)
        found[side] = {"round_trips": trips, "commands": commands}
    admin.close()
    return found


def sign(key: DPoPKey, url: str, token: str, count: int) -> str:
    """A file of ``count`` fresh proofs for ``GET url`` with ``token``, one a line."""
    with tempfile.NamedTemporaryFile("w", prefix="bench-dpop-", suffix=".txt", delete=False) as f:
        for _ in range(count):
            f.write(key.proof("GET", url, access_token=token) + "\n")
    return f.name


def run(
    wrk_bin: str,
    script: str,
    url: str,
    authorization: str,
    seconds: float,
    admin: redis.Redis,
    proof_file: str | None = None,
) -> Run:
    """One wrk run: its summary, CPU and Redis commands per request; exits on any
    failure (a non-2xx answer, a socket error, a request without a proof)."""
    pids = serving_pids(url.rsplit(":", 1)[1].split("/")[0])
    admin.config_resetstat()
    before = (cpu_seconds(pids), redis_cpu(admin), wrk_cpu())
    result = subprocess.run(
        [
            *(wrk_bin, "-t1", "-c8", f"-d{seconds:g}s", "--timeout", "5s", "-s", script),
            *("-H", f"Authorization: {authorization}", "-H", f"User-Agent: {CHROME}", url),
            *(("--", proof_file) if proof_file else ()),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    used = (cpu_seconds(pids) - before[0], redis_cpu(admin) - before[1], wrk_cpu() - before[2])
    commands = commandstats(admin)
    *_, report, usage = result.stdout.strip().splitlines()
    summary: Run = {**json.loads(report), **json.loads(usage)}
    side = "bound" if proof_file else "Bearer"
    if summary["non2xx"] or summary["errors"] or summary["exhausted"]:
        raise SystemExit(f"wrk saw failures in a {side} run: {summary}")
    requests = summary["requests"]
    summary["rps"] = requests / (summary["duration_us"] / 1e6)
    for name, seconds_used in zip(("workers", "redis", "wrk"), used, strict=True):
        summary[f"{name}_cpu_us"] = round(seconds_used / requests * 1e6, 1)
    summary["redis_commands_per_request"] = {
        name: round(calls / requests, 3) for name, calls in sorted(commands.items())
    }
    return summary


def measure_pairs(
    wrk_bin: str, url: str, key: DPoPKey, tokens: tuple[str, str], *, pairs: int, seconds: float
) -> dict[str, Any]:
    bearer, bound = tokens
    admin = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(REPORT_LUA.read_text() + DPOP_LUA.read_text())
    fastest = 0.0

    def once(side: str, length: float) -> Run:
        nonlocal fastest
        if side == "bearer":
            found = run(wrk_bin, script.name, url, f"Bearer {bearer}", length, admin)
        else:
            # The fastest run so far, or a guess before the first: ample.
            count = math.ceil(max(fastest, 3000.0) * length * PROOF_MARGIN)
            signed = sign(key, url, bound, count)
            try:
                found = run(wrk_bin, script.name, url, f"DPoP {bound}", length, admin, signed)
            finally:
                os.unlink(signed)
            found["proofs_signed"] = count
        fastest = max(fastest, found["rps"])
        return found

    try:
        for side in ("bearer", "bound"):
            once(side, 1)  # warm both: workers, connections, scripts, caches
        runs: list[dict[str, Any]] = []
        for i in range(pairs):
            order = ["bearer", "bound"] if i % 2 == 0 else ["bound", "bearer"]
            pair = {side: once(side, seconds) for side in order}
            runs.append({**pair, "ratio": round(pair["bound"]["rps"] / pair["bearer"]["rps"], 3)})
            print(
                f"  pair {i + 1}: Bearer {pair['bearer']['rps']:.0f} req/s, "
                f"bound {pair['bound']['rps']:.0f} req/s, ratio {runs[-1]['ratio']:.3f}",
                flush=True,
            )
    finally:
        os.unlink(script.name)
        admin.close()

    def median(side: str, field: str) -> float:
        return round(statistics.median(r[side][field] for r in runs), 1)

    return {
        "pairs": runs,
        "median_ratio": statistics.median(r["ratio"] for r in runs),
        **{f"{s}_{f}": median(s, f) for s in ("bearer", "bound") for f in FIELDS},
        "bound_requests": sum(r["bound"]["requests"] for r in runs),
        "bound_commands_per_request": {
            name: statistics.median(
                r["bound"]["redis_commands_per_request"].get(name, 0) for r in runs
            )
            for name in runs[0]["bound"]["redis_commands_per_request"]
        },
    }


FIELDS = ("rps", "p50", "p99", "workers_cpu_us", "redis_cpu_us", "wrk_cpu_us")


def redis_cpu(admin: redis.Redis) -> float:
    """CPU seconds redis-server has used."""
    info = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wrk_cpu() -> float:
    """CPU seconds of the child processes that ended (a wrk run, once it has)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proof_cost() -> dict[str, float]:
    """``bench.proofs``' figures for ES256 (median us), on fewer proofs."""
    figures = proofs.measure(ALG, 5000, 500)
    return {name: round(median, 1) for name, (median, _) in figures.items()}


def others_busy() -> list[str]:
    """Test runs on this machine (their load skews the pairs)."""
    found = subprocess.run(["pgrep", "-af", "pytest"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def table(results: dict[str, Any]) -> str:
    t, one = results["throughput"], results["one_request"]
    bound = one["bound"]
    per_run = t["bound_commands_per_request"]
    rows = [
        *(
            (
                f"pair {i}: req/s Bearer | bound (ratio)",
                f"{p['bearer']['rps']:.0f} | {p['bound']['rps']:.0f} ({p['ratio']:.3f})",
                "",
                None,
            )
            for i, p in enumerate(t["pairs"], 1)
        ),
        (
            "bound / Bearer req/s (median pair)",
            f"{t['median_ratio']:.3f}",
            f">= {TARGET_RATIO}",
            t["median_ratio"] >= TARGET_RATIO,
        ),
        (
            "req/s Bearer | bound (medians)",
            f"{t['bearer_rps']:.0f} | {t['bound_rps']:.0f}",
            "",
            None,
        ),
        ("p50 / p99 µs Bearer", f"{t['bearer_p50']:.0f} / {t['bearer_p99']:.0f}", "", None),
        ("p50 / p99 µs bound", f"{t['bound_p50']:.0f} / {t['bound_p99']:.0f}", "", None),
        *(
            (
                f"{name} CPU µs per request Bearer | bound",
                f"{t[f'bearer_{name}_cpu_us']:.0f} | {t[f'bound_{name}_cpu_us']:.0f}",
                "",
                None,
            )
            for name in ("workers", "redis")
        ),
        (
            "wrk CPU µs per request Bearer | bound (setup incl.)",
            f"{t['bearer_wrk_cpu_us']:.0f} | {t['bound_wrk_cpu_us']:.0f}",
            "",
            None,
        ),
        ("bound requests, all 2xx, each its own proof", t["bound_requests"], "all", True),
        (
            "Redis round trips, one bound request",
            bound["round_trips"],
            "= 1",
            bound["round_trips"] == 1,
        ),
        (
            "  its server commands",
            ", ".join(f"{c} {n}" for c, n in sorted(bound["commands"].items())),
            "",
            None,
        ),
        (
            "Redis commands per bound request (runs)",
            ", ".join(f"{c} {n:.2f}" for c, n in per_run.items()),
            "",
            None,
        ),
        (
            "Redis round trips, one Bearer request",
            one["bearer"]["round_trips"],
            "",
            None,
        ),
        *(
            (f"{ALG} proof: {name} (median µs)", cost, "", None)
            for name, cost in results["proof_cost_us"].items()
        ),
    ]
    return render(rows, measured=30, target=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dpop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--pairs", type=int, default=6, help="alternating pairs")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run")
    args = parser.parse_args(argv)
    wrk_bin = ensure_wrk()
    started = time.monotonic()
    busy = others_busy()
    if busy:
        print("other test runs are busy on this machine:\n  " + "\n  ".join(busy), flush=True)
    results: dict[str, Any] = {"machine": machine(), "load_average_before": os.getloadavg()}
    results["machine"]["load"] = "wrk -t1 -c8, one authenticated GET returning a small JSON"
    results["others_busy"] = busy
    print(f"1/3 what one {ALG} proof's check costs (bench.proofs)", flush=True)
    results["proof_cost_us"] = proof_cost()
    with redis_server() as url:
        env = {**os.environ, "BENCH_REDIS_URL": url, "BENCH_JWT_KEY": JWT_KEY}
        env["BENCH_PREFIX"] = "bench"
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_JWT_KEY", "BENCH_PREFIX")})
        key = DPoPKey.generate(ALG)
        with gunicorn("ours", env) as base:
            tokens = sessions(base, key)
            print("2/3 one request each way, counted in process", flush=True)
            results["one_request"] = count_one(url, key, tokens)
            print(f"3/3 {args.pairs} alternating pairs of {args.seconds:g} s", flush=True)
            results["throughput"] = measure_pairs(
                wrk_bin, base + "/protected", key, tokens, pairs=args.pairs, seconds=args.seconds
            )
    results["load_average_after"] = os.getloadavg()
    results["seconds"] = round(time.monotonic() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dpop.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\n{results['machine']}\nwritten: bench/results/dpop.json ({results['seconds']} s)")


if __name__ == "__main__":
    main()
