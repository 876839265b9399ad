"""What a user agent never seen before costs a request, from outside.

``python -m bench.agents``: the benchmark's host app (sessionsvc mounted,
gunicorn with 2 sync workers, its own redis-server) under ``wrk -c8``, in
alternating pairs of runs: one sends the signed-in browser's user agent with
every request, the other a new one each time (``bench/random_ua.lua``: the
same browser and OS family, another build). The workers' CPU time
(``/proc/<pid>/stat``) over the requests answered is the CPU per request;
the figure is the median of the pairs' ratios, new over repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench.commands import redis_server
from bench.throughput import JWT_KEY, ROOT, ensure_wrk, gunicorn, tokens_for
from tests.clients import CHROME

RANDOM_UA = ROOT / "bench" / "random_ua.lua"
REPORT = ROOT / "bench" / "report.lua"
_TICKS = os.sysconf("SC_CLK_TCK")


def serving_pids(port: str) -> list[int]:
    """gunicorn's master and workers listening on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"gunicorn" in command and f"127.0.0.1:{port}".encode() in command:
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def run(wrk_bin: str, url: str, token: str, seconds: float, *, random_ua: bool) -> dict[str, Any]:
    pids = serving_pids(url.rsplit(":", 1)[1].split("/")[0])
    before = cpu_seconds(pids)
    script = RANDOM_UA if random_ua else REPORT
    result = subprocess.run(
        [
            *(wrk_bin, "-t1", "-c8", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script)),
            *("-H", f"Authorization: Bearer {token}", "-H", f"User-Agent: {CHROME}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    used = cpu_seconds(pids) - before
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if summary["non2xx"] or summary["errors"]:
        raise SystemExit(f"wrk saw failures: {summary}")
    return {
        "requests": summary["requests"],
        "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        "cpu_us_per_request": used / summary["requests"] * 1e6,
    }


def measure(pairs: int, seconds: float) -> dict[str, Any]:
    wrk_bin = ensure_wrk()
    with redis_server() as url:
        env = {**os.environ, "BENCH_REDIS_URL": url, "BENCH_JWT_KEY": JWT_KEY, "BENCH_PREFIX": "b"}
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_JWT_KEY", "BENCH_PREFIX")})
        with gunicorn("ours", env) as base:
            token, _ = tokens_for(url)
            target = base + "/protected"
            run(wrk_bin, target, token, 1, random_ua=True)  # warm
            rows = []
            for i in range(pairs):
                order = [False, True] if i % 2 == 0 else [True, False]
                pair = {
                    flag: run(wrk_bin, target, token, seconds, random_ua=flag) for flag in order
                }
                rows.append(
                    {
                        "repeated_us": round(pair[False]["cpu_us_per_request"], 1),
                        "new_us": round(pair[True]["cpu_us_per_request"], 1),
                        "ratio": round(
                            pair[True]["cpu_us_per_request"] / pair[False]["cpu_us_per_request"], 3
                        ),
                    }
                )
    return {
        "pairs": rows,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "repeated_us_median": statistics.median(r["repeated_us"] for r in rows),
        "new_us_median": statistics.median(r["new_us"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    result = measure(args.pairs, args.seconds)
    for row in result["pairs"]:
        print(
            f"CPU per request: repeated user agent {row['repeated_us']:.0f} us, "
            f"new each time {row['new_us']:.0f} us: {row['ratio']:.2f}x"
        )
    print(
        f"median of {args.pairs} alternating pairs: {result['median_ratio']:.2f}x "
        f"({result['new_us_median']:.0f} vs {result['repeated_us_median']:.0f} us of CPU "
        "per request)"
    )


if __name__ == "__main__":
    main()
