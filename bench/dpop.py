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

``--pieces ROUNDS`` then shows where a bound request's CPU goes: the same
runs against workers that leave out, in turn, the proof's signature check,
the whole proof check, and ``bound.lua`` (``bench/dpop_pieces.py``); each
step's difference is what that piece costs. Results: ``bench/results/dpop.json``.
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
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis
from flask_jwt_extended import decode_token

from bench import proofs
from bench.__main__ import RESULTS, machine, render
from bench.agents import cpu_seconds, serving_pids
from bench.apps import ours
from bench.commands import CHROME, commandstats, measure, redis_server
from bench.dpop_pieces import PIECE_NAMES, PIECES, SKIP
from bench.throughput import JWT_KEY, REPORT_LUA, ROOT, ensure_wrk, gunicorn
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


class Runner:
    """wrk runs of either side against any of the servers, with one Lua script."""

    def __init__(self, wrk_bin: str, key: DPoPKey, tokens: tuple[str, str]) -> None:
        self.wrk_bin, self.key, self.tokens = wrk_bin, key, tokens
        self.admin = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(REPORT_LUA.read_text() + DPOP_LUA.read_text())
        self.script = script.name
        #: The fastest run so far, or a guess before the first.
        self.fastest = 3000.0

    def __call__(self, side: str, url: str, seconds: float) -> Run:
        bearer, bound = self.tokens
        if side == "bearer":
            found = run(self.wrk_bin, self.script, url, f"Bearer {bearer}", seconds, self.admin)
        else:
            count = math.ceil(self.fastest * seconds * PROOF_MARGIN)
            signed = sign(self.key, url, bound, count)
            try:
                found = run(
                    self.wrk_bin, self.script, url, f"DPoP {bound}", seconds, self.admin, signed
                )
            finally:
                os.unlink(signed)
            found["proofs_signed"] = count
        self.fastest = max(self.fastest, found["rps"])
        return found

    def close(self) -> None:
        os.unlink(self.script)
        self.admin.close()


def measure_pairs(runner: Runner, url: str, *, pairs: int, seconds: float) -> dict[str, Any]:
    for side in ("bearer", "bound"):
        runner(side, url, 1)  # warm both: workers, connections, scripts, caches
    runs: list[dict[str, Any]] = []
    for i in range(pairs):
        order = ["bearer", "bound"] if i % 2 == 0 else ["bound", "bearer"]
        pair = {side: runner(side, url, seconds) for side in order}
        runs.append({**pair, "ratio": round(pair["bound"]["rps"] / pair["bearer"]["rps"], 3)})
        print(
            f"  pair {i + 1}: Bearer {pair['bearer']['rps']:.0f} req/s, "
            f"bound {pair['bound']['rps']:.0f} req/s, ratio {runs[-1]['ratio']:.3f}",
            flush=True,
        )

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


def measure_pieces(
    runner: Runner, env: dict[str, str], *, rounds: int, seconds: float
) -> dict[str, Any]:
    """Where a bound request's CPU goes: the same runs against workers that
    leave out, cumulatively, each of :data:`bench.dpop_pieces.PIECES`."""
    variants = ("bearer", "bound", *PIECES)
    samples: dict[str, list[Run]] = {variant: [] for variant in variants}
    with ExitStack() as servers:
        urls = {
            skip: servers.enter_context(
                gunicorn("ours", {**env, SKIP: skip}, settings="bench.dpop_pieces")
            )
            + "/protected"
            for skip in ("", *PIECES)
        }

        def once(variant: str, length: float) -> Run:
            skip = variant if variant in PIECES else ""
            return runner("bearer" if variant == "bearer" else "bound", urls[skip], length)

        for variant in variants:
            once(variant, 1)
        for i in range(rounds):
            for variant in variants if i % 2 == 0 else variants[::-1]:
                samples[variant].append(once(variant, seconds))
    medians = {
        variant: {f: round(statistics.median(r[f] for r in runs), 1) for f in FIELDS}
        for variant, runs in samples.items()
    }
    steps = ("bound", *PIECES, "bearer")
    cost = {
        PIECE_NAMES[taken]: {
            f: round(medians[before][f] - medians[taken][f], 1)
            for f in ("workers_cpu_us", "redis_cpu_us")
        }
        for before, taken in pairwise(steps)
    }
    return {"medians": medians, "cost_us": cost}


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


def pieces_table(pieces: dict[str, Any]) -> str:
    rows = [
        (
            f"{what} (workers | redis)",
            f"{c['workers_cpu_us']:.0f} | {c['redis_cpu_us']:.0f}",
            "",
            None,
        )
        for what, c in pieces["cost_us"].items()
    ]
    rows += [
        (
            f"  {variant}: CPU µs (workers | redis), req/s",
            f"{m['workers_cpu_us']:.0f} | {m['redis_cpu_us']:.0f}, {m['rps']:.0f}",
            "",
            None,
        )
        for variant, m in pieces["medians"].items()
    ]
    return "CPU µs per request a bound request spends on:\n" + render(rows, measured=30, target=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dpop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--pairs", type=int, default=6, help="alternating pairs")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--pieces",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="then where a bound request's CPU goes: ROUNDS alternating rounds against "
        "workers with pieces of its work taken out (bench/dpop_pieces.py)",
    )
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
            runner = Runner(wrk_bin, key, tokens)
            try:
                results["throughput"] = measure_pairs(
                    runner, base + "/protected", pairs=args.pairs, seconds=args.seconds
                )
                if args.pieces:
                    print(f"and where the CPU goes: {args.pieces} rounds", flush=True)
                    results["pieces"] = measure_pieces(
                        runner, env, rounds=args.pieces, seconds=args.seconds
                    )
            finally:
                runner.close()
    results["load_average_after"] = os.getloadavg()
    results["seconds"] = round(time.monotonic() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dpop.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    if "pieces" in results:
        print()
        print(pieces_table(results["pieces"]))
    print(f"\n{results['machine']}\nwritten: bench/results/dpop.json ({results['seconds']} s)")


if __name__ == "__main__":
    main()
