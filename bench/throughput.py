"""Throughput of one authenticated GET under wrk, in alternating pairs.

The host app with sessionsvc mounted (``ours``) is measured against two
others served with the same gunicorn settings and driven with the same wrk
settings: the flask-jwt-extended Redis blocklist recipe (``baseline``), and
the same host app with no revocation check at all (``nocheck``, the limit).
Each round runs one pair of each; a pair's order flips from one round to the
next, so over an even number of rounds each app runs first as often.

``python -m bench --throughput-only`` runs this alone.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask_jwt_extended import create_access_token

from bench.apps import baseline, ours
from bench.commands import CHROME, free_port, redis_server
from sessionsvc import current_manager

ROOT = Path(__file__).resolve().parent.parent
REPORT_LUA = Path(__file__).resolve().parent / "report.lua"
JWT_KEY = "bench-" + secrets.token_urlsafe(32)

#: The apps ``ours`` is compared with, in the order each round runs them.
OTHERS = ("nocheck", "baseline")

#: The figures kept of each wrk run.
KEPT = ("rps", "p50", "p99")


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


def tokens_for(env_url: str) -> tuple[str, str]:
    """An access token of a live session (ours) and a plain one (baseline)."""
    ours_app, base_app = ours(), baseline()
    with ours_app.test_request_context(headers={"User-Agent": CHROME}):
        ours_token = current_manager().open("bench-user").access_token
    with base_app.app_context():
        base_token = create_access_token("bench-user")
    return ours_token, base_token


def pair_order(other: str, round_: int) -> tuple[str, str]:
    """Who runs first in round ``round_``'s pair of ``ours`` and ``other``."""
    return ("ours", other) if round_ % 2 == 0 else (other, "ours")


def compare(run: Callable[[str], dict[str, Any]], *, pairs: int) -> dict[str, Any]:
    """``pairs`` rounds of one pair of ``ours`` with each of :data:`OTHERS`.

    ``run(name)`` drives the app ``name`` once and returns its wrk summary.
    Every pair's figures are kept, and each comparison's median ratio
    (ours' req/s over the other's, pair by pair).
    """
    runs: dict[str, list[dict[str, Any]]] = {other: [] for other in OTHERS}
    for i in range(pairs):
        for other in OTHERS:
            pair = {name: run(name) for name in pair_order(other, i)}
            runs[other].append(
                {
                    "first": pair_order(other, i)[0],
                    "ours": {k: pair["ours"][k] for k in KEPT},
                    other: {k: pair[other][k] for k in KEPT},
                    "ratio": pair["ours"]["rps"] / pair[other]["rps"],
                }
            )

    def median(other: str, name: str, figure: str) -> float:
        return float(statistics.median(r[name][figure] for r in runs[other]))

    def against(other: str, ours_rps: str) -> dict[str, Any]:
        """The medians of the comparison with ``other``: ratio, req/s, latency."""
        return {
            ours_rps: round(median(other, "ours", "rps")),
            f"{other}_rps_median": round(median(other, other, "rps")),
            f"{other}_p50_us": median(other, other, "p50"),
            f"{other}_p99_us": median(other, other, "p99"),
        }

    return {
        # The keys of the recipe's comparison are those results.json always had.
        "pairs": runs["baseline"],
        "median_ratio": round(statistics.median(r["ratio"] for r in runs["baseline"]), 3),
        **against("baseline", "ours_rps_median"),
        "ours_p50_us": median("baseline", "ours", "p50"),
        "ours_p99_us": median("baseline", "ours", "p99"),
        "nocheck_pairs": runs["nocheck"],
        "nocheck_median_ratio": round(statistics.median(r["ratio"] for r in runs["nocheck"]), 3),
        **against("nocheck", "ours_rps_median_vs_nocheck"),
    }


def measure_throughput(
    wrk_bin: str,
    urls: dict[str, str],
    tokens: tuple[str, str],
    *,
    pairs: int,
    seconds: float,
) -> dict[str, Any]:
    """The alternating pairs against the apps served at ``urls`` (by name).

    ``nocheck`` is sent ours' token: the very request ours answers, less the
    check; the recipe gets a plain token of flask-jwt-extended's.
    """
    ours_token, base_token = tokens
    token = {"ours": ours_token, "nocheck": ours_token, "baseline": base_token}
    for name, url in urls.items():
        wrk(wrk_bin, url + "/protected", token[name], 1)  # warm: workers, connections, scripts
    return compare(
        lambda name: wrk(wrk_bin, urls[name] + "/protected", token[name], seconds), pairs=pairs
    )


@contextmanager
def served(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The three apps under gunicorn; yields their base URLs by name."""
    with (
        gunicorn("ours", env) as ours_url,
        gunicorn("baseline", env) as base_url,
        gunicorn("nocheck", env) as nocheck_url,
    ):
        yield {"ours": ours_url, "baseline": base_url, "nocheck": nocheck_url}


def bench_env(url: str) -> dict[str, str]:
    """The environment the apps read (also set in this process's own)."""
    env = {**os.environ, "BENCH_REDIS_URL": url, "BENCH_JWT_KEY": JWT_KEY, "BENCH_PREFIX": "bench"}
    os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_JWT_KEY", "BENCH_PREFIX")})
    return env


def pair_lines(result: dict[str, Any]) -> dict[str, list[str]]:
    """Every pair of both comparisons, one line each, by results.json's key."""
    return {
        key: [
            f"{p['first']} first: ours {p['ours']['rps']:.0f} / {other} {p[other]['rps']:.0f}"
            f" req/s = {p['ratio']:.3f}"
            for p in result[key]
        ]
        for key, other in (("pairs", "baseline"), ("nocheck_pairs", "nocheck"))
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What ``--throughput-only`` prints: both ratios and every pair's."""
    shown = {k: v for k, v in result.items() if not k.endswith("pairs")}
    return {**shown, **pair_lines(result)}


def busy_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy, and this process and its
    waited-for children (wrk, gunicorn and its workers, redis-server)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    own = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    return (sum(fields[:8]) - idle) / ticks, own


def throughput_only(wrk_bin: str, pairs: int, seconds: float) -> dict[str, Any]:
    """The host app against the recipe and against no check: ``--throughput-only``.

    Also says how much of the machine other work took meanwhile
    (``others_cpu_share``: the CPU others used over the cores' time): a run
    that shared the machine is not a figure.
    """
    started, (busy, own) = time.monotonic(), busy_seconds()
    with redis_server() as url:
        env = bench_env(url)
        with served(env) as urls:
            result = measure_throughput(
                wrk_bin, urls, tokens_for(url), pairs=pairs, seconds=seconds
            )
    wall, (busy_after, own_after) = time.monotonic() - started, busy_seconds()
    others = max(0.0, (busy_after - busy) - (own_after - own))
    result["others_cpu_share"] = round(others / (wall * (os.cpu_count() or 1)), 3)
    return result
