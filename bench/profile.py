"""Where an authenticated request's time goes: ``python -m bench.profile``.

Two profiles of the protected route of a host app (``bench.apps``):

1. **under gunicorn**: the app served by one gunicorn worker (the bench's
   settings), driven by wrk as ``python -m bench`` drives it, while py-spy
   samples the worker without stopping it. Listed by own time (the
   innermost frame), with each package's share beside. py-spy leaves out a
   thread asleep on a socket, but counts one that is runnable and waiting
   for a core, so the shares of system calls that wake another process (a
   send to Redis, a socket's close) move with the scheduler from run to
   run; the worker's CPU per request, read from ``/proc``, is the steady
   figure;
2. **on the test client**: cProfile over ``--requests`` requests in this
   process, by own time, and the function calls per request.

The figures, with the commit they were taken at, go to
``bench/results/profile-<app>.json``. A profile of an older commit is this
module run in a checkout of it (``git worktree add``), the file copied in.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import apps
from bench.commands import CHROME, redis_server
from bench.throughput import ROOT, bench_env, ensure_wrk, gunicorn, tokens_for

RESULTS = ROOT / "bench" / "results"

#: The packages a frame's file is put under (the first found in its path);
#: anything else is ``other`` (the standard library, mostly).
PACKAGES = (
    "sessionsvc",
    "bench",
    "flask_jwt_extended",
    "jwt",
    "flask",
    "werkzeug",
    "redis",
    "gunicorn",
    "prometheus_client",
    "json",
    "socket",
    "ipaddress",
)

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> tuple[str, str]:
    """``function (file:line)``, py-spy's frame, as (function, file) without the line."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["function"], match["file"]


def package_of(file: str) -> str:
    """The package of :data:`PACKAGES` a file belongs to, by its path."""
    for part in Path(file).parts:
        if Path(part).stem in PACKAGES:
            return Path(part).stem
    return "other"


def short(file: str) -> str:
    """A file's path from its package on (``sessionsvc/store/connections.py``)."""
    parts = Path(file).parts
    for i, part in enumerate(parts):
        if Path(part).stem in PACKAGES:
            return "/".join(parts[i:])
    return parts[-1] if parts else file


def own_time(raw: str) -> tuple[Counter[tuple[str, str]], int]:
    """py-spy's raw output (``frame;frame;... count`` a line) as samples by
    innermost function, and the number of samples."""
    leaves: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaves[frame_name(stack.rsplit(";", 1)[-1])] += int(count)
        total += int(count)
    return leaves, total


def summarize(leaves: Counter[tuple[str, str]], total: int, top: int) -> dict[str, Any]:
    """The top functions by own time and each package's share, in %."""
    packages: Counter[str] = Counter()
    for (_, file), count in leaves.items():
        packages[package_of(file)] += count

    def share(count: int) -> float:
        return round(100 * count / total, 2) if total else 0.0

    return {
        "samples": total,
        "top": [
            {"function": function, "file": short(file), "share": share(count)}
            for (function, file), count in leaves.most_common(top)
        ],
        "packages": {name: share(count) for name, count in packages.most_common()},
    }


def worker_pids(factory: str) -> list[int]:
    """The gunicorn workers serving ``bench.apps:<factory>()``: processes
    with that command line whose parent has it too (the master)."""
    mark = f"bench.apps:{factory}()".encode()

    def cmdline(pid: str) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    def parent(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            return ""

    return [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and mark in cmdline(pid) and mark in cmdline(parent(pid))
    ]


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def under_gunicorn(factory: str, *, seconds: float, rate: int, top: int) -> dict[str, Any]:
    """py-spy on the one worker of ``factory`` while wrk drives it."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        sys.exit("py-spy is missing: pip install -e '.[bench]'")
    wrk_bin = ensure_wrk()
    with redis_server() as url:
        env = {**bench_env(url), "BENCH_WORKERS": "1", "BENCH_THREADS": "1"}
        ours_token, base_token = tokens_for(url)
        token = base_token if factory == "baseline" else ours_token
        with gunicorn(factory, env) as base:
            (pid,) = worker_pids(factory)
            cpu_before = cpu_seconds(pid)
            load = subprocess.Popen(
                [
                    *(wrk_bin, "-t1", "-c8", f"-d{seconds + 3:g}s", "--timeout", "5s"),
                    *("-H", f"Authorization: Bearer {token}", "-H", f"User-Agent: {CHROME}"),
                    base + "/protected",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)  # the worker warm
            with tempfile.NamedTemporaryFile(suffix=".txt") as out:
                subprocess.run(
                    [
                        *(str(spy), "record", "--pid", str(pid), "--duration", f"{seconds:g}"),
                        *("--rate", str(rate), "--format", "raw", "--nonblocking"),
                        *("--output", out.name),
                    ],
                    check=True,
                    capture_output=True,
                )
                raw = Path(out.name).read_text()
            wrk_out, _ = load.communicate()
            cpu = cpu_seconds(pid) - cpu_before
    rate_seen = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out)
    served = re.search(r"(\d+) requests in", wrk_out)
    leaves, total = own_time(raw)
    return {
        **summarize(leaves, total, top),
        "rate_hz": rate,
        "seconds": seconds,
        "requests_per_second": float(rate_seen[1]) if rate_seen else None,
        # Not skewed by waits for a core, as a sample's share can be: a
        # sample of a thread that is runnable counts as on the CPU.
        "worker_cpu_us_per_request": round(1e6 * cpu / int(served[1]), 1) if served else None,
    }


def on_test_client(factory: str, *, requests: int, top: int) -> dict[str, Any]:
    """cProfile of ``requests`` requests through the test client, in this process."""
    with redis_server() as url:
        bench_env(url)
        ours_token, base_token = tokens_for(url)
        app = getattr(apps, factory)()
        client = app.test_client()
        headers = {
            "Authorization": f"Bearer {base_token if factory == 'baseline' else ours_token}",
            "User-Agent": CHROME,
        }
        for _ in range(200):  # warm: caches, connections
            assert client.get("/protected", headers=headers).status_code == 200
        began = time.process_time()
        for _ in range(requests):
            client.get("/protected", headers=headers)
        cpu = time.process_time() - began
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            client.get("/protected", headers=headers)
        profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    own = sum(row[2] for row in entries.values())
    calls = sum(row[1] for row in entries.values())
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "requests": requests,
        "cpu_us_per_request": round(1e6 * cpu / requests, 1),  # measured without the profiler
        "calls_per_request": round(calls / requests),
        "top": [
            {
                "function": function,
                "file": short(file) if file != "~" else "(built-in)",
                "share": round(100 * row[2] / own, 2),
                "calls_per_request": round(row[1] / requests, 2),
            }
            for (file, _line, function), row in ranked
        ],
    }


def commit() -> str:
    """The commit (and whether the tree differs from it) the profile is of."""
    head = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() or "unknown"


def report(figures: dict[str, Any]) -> str:
    """Both profiles as tables."""
    spied = figures["gunicorn"]
    lines = [
        f"{figures['app']} at {figures['commit']}",
        f"under gunicorn (1 sync worker, wrk -c8, {spied['requests_per_second']} req/s, "
        f"{spied['worker_cpu_us_per_request']} µs of the worker's CPU a request): "
        f"py-spy, {spied['samples']} samples on the CPU, by own time",
    ]
    lines += [
        f"{i:>3}. {row['share']:>5.1f} %  {row['function']}  ({row['file']})"
        for i, row in enumerate(spied["top"], 1)
    ]
    lines.append(
        "     by package: "
        + ", ".join(f"{name} {share:.1f} %" for name, share in spied["packages"].items())
    )
    profiled = figures["test_client"]
    lines.append(
        f"test client ({profiled['cpu_us_per_request']} µs of CPU a request), cProfile over "
        f"{profiled['requests']:,} requests ({profiled['calls_per_request']:,} calls a request),"
        " by own time"
    )
    lines += [
        f"{i:>3}. {row['share']:>5.1f} %  {row['function']}  ({row['file']}, "
        f"{row['calls_per_request']:g} a request)"
        for i, row in enumerate(profiled["top"], 1)
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "--app", choices=("ours", "nocheck", "baseline"), default="ours", help="which app"
    )
    parser.add_argument("--seconds", type=float, default=20, help="seconds py-spy samples")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples a second")
    parser.add_argument("--requests", type=int, default=20_000, help="test-client requests")
    parser.add_argument("--top", type=int, default=10, help="functions listed")
    args = parser.parse_args(argv)
    figures = {
        "app": args.app,
        "commit": commit(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gunicorn": under_gunicorn(args.app, seconds=args.seconds, rate=args.rate, top=args.top),
        "test_client": on_test_client(args.app, requests=args.requests, top=args.top),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"profile-{args.app}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(report(figures))
    print(f"written: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
