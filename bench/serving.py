"""The shipped gunicorn.conf.py against slow clients, and what it costs in throughput.

``python -m bench.serving`` (part of ``make bench``) starts its own
redis-server and serves the standalone service with ``gunicorn -c
gunicorn.conf.py wsgi:app`` twice: as shipped, and with plain sync workers
(``-k sync``, the configuration before the threaded worker). For each it
measures

1. how long ``GET /healthz`` takes, sampled every 0.25 s from 127.0.0.1,
   while ``--slow`` clients (100), each from an address of its own
   (127.1.x.y), send their request headers a byte a second (slowloris);
2. the same while ``--silent`` connections (3,000), all from 127.0.0.2, are
   opened and send nothing;
3. the same while ``--slow-bodies`` clients (100), each from an address of
   its own, send a whole sign-in head and then its body a byte a second;
4. the same while ``--readers`` clients (100), each from an address of its
   own, ask for the Swagger UI bundle (1.7 MB) four times at once and read
   nothing;
5. the throughput of an authenticated ``GET /api/v1/sessions`` under
   ``wrk -c8``, in alternating pairs (the ratio is only meaningful side by
   side; ``--pairs 0`` skips it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import redis
from werkzeug.security import generate_password_hash

from bench.commands import CHROME, free_port, redis_server
from bench.throughput import ensure_wrk, wrk
from sessionsvc.models import User
from sessionsvc.store import SessionStore

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"shipped": [], "sync": ["--worker-class", "sync", "--threads", "1"]}
PASSWORD = "bench-" + secrets.token_urlsafe(12)


@contextmanager
def service(redis_url: str, extra: list[str]) -> Iterator[tuple[str, int]]:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` (plus ``extra``) on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "SESSIONSVC_REDIS_URL": redis_url,
        "SESSIONSVC_KEY_PREFIX": "bench-serving",
        "SESSIONSVC_BIND": f"127.0.0.1:{port}",
        "SESSIONSVC_LOGIN_RATE_LIMIT": "",
        "JWT_SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
    }
    env.pop("WEB_CONCURRENCY", None)  # the shipped default worker count
    log = tempfile.NamedTemporaryFile(prefix="bench-serving-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *extra]
    command += ["--access-logfile", "/dev/null", "wsgi:app"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while get("127.0.0.1", port, "/healthz", timeout=1) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("gunicorn did not start:\n" + Path(log.name).read_text())
            time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        os.unlink(log.name)


def get(host: str, port: int, path: str, *, timeout: float) -> float | None:
    """Seconds one GET took, or None when it failed or took longer than ``timeout``."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return time.perf_counter() - started if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


#: What a slow client sends at once, and then a byte a second.
SLOW_HEAD = (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4000)
SLOW_BODY = (
    b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4000\r\n\r\n",
    b'{"padding": "' + b"a" * 3980 + b'"}',
)
#: What a client that reads nothing sends, all at once.
UNREAD = b"GET /docs/assets/swagger-ui/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n" * 4


def slow_client(
    host: str, port: int, source: str, sent: tuple[bytes, bytes], stop: threading.Event
) -> None:
    """Send ``sent[0]`` and then ``sent[1]`` a byte a second, from ``source``,
    until told to stop."""
    try:
        with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as sock:
            sock.sendall(sent[0])
            for byte in sent[1]:
                if stop.wait(1.0):
                    return
                sock.sendall(bytes([byte]))
    except OSError:
        return  # cut off by the server: the point of the exercise


def reader(host: str, port: int, source: str, stop: threading.Event) -> None:
    """Ask for large answers, from ``source``, and read nothing until told to stop."""
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind((source, 0))
            sock.settimeout(5)
            sock.connect((host, port))
            sock.sendall(UNREAD)
            stop.wait()
    except OSError:
        return


@contextmanager
def slow_clients(
    host: str, port: int, clients: int, sent: tuple[bytes, bytes] | None = SLOW_HEAD
) -> Iterator[None]:
    """``clients`` slow clients, each from its own loopback address, while the
    block runs: sending ``sent`` slowly, or (None) reading nothing."""
    stop = threading.Event()
    sources = [f"127.1.{n // 250}.{n % 250 + 1}" for n in range(clients)]
    threads = [
        threading.Thread(
            target=partial(reader, host, port, source, stop)
            if sent is None
            else partial(slow_client, host, port, source, sent, stop),
            daemon=True,
        )
        for source in sources
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()


@contextmanager
def silent_connections(host: str, port: int, count: int) -> Iterator[None]:
    """``count`` connections from 127.0.0.2 that send nothing, while the block runs.

    Connected without waiting (a full listen queue would hold each connect
    for seconds); whatever the server does with them, they stay open here.
    """
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.2", 0))
            sock.setblocking(False)
            sock.connect_ex((host, port))
        yield
    finally:
        for sock in socks:
            sock.close()


def healthz_while(
    load: AbstractContextManager[None], host: str, port: int, seconds: float
) -> dict[str, Any]:
    """GET /healthz every 0.25 s for ``seconds`` under ``load``."""
    with load:
        time.sleep(1.5)  # every client is connected (and sending)
        times: list[float | None] = []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            times.append(get(host, port, "/healthz", timeout=10))
            time.sleep(0.25)
    done = [t for t in times if t is not None]
    return {
        "samples": len(times),
        "failed": len(times) - len(done),
        "median_ms": round(statistics.median(done) * 1000, 1) if done else None,
        "max_ms": round(max(done) * 1000, 1) if done else None,
    }


def token(host: str, port: int) -> str:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    body = f'{{"username": "bench", "password": "{PASSWORD}"}}'
    connection.request(
        "POST",
        "/api/v1/auth/login",
        body=body,
        headers={"Content-Type": "application/json", "User-Agent": CHROME},
    )
    response = connection.getresponse()
    access: str = json.loads(response.read())["access_token"]
    connection.close()
    return access


def shown(figures: dict[str, Any]) -> str:
    return (
        f"median {figures['median_ms']} ms, max {figures['max_ms']} ms, "
        f"{figures['failed']}/{figures['samples']} failed"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--slow", type=int, default=100, help="slow clients")
    parser.add_argument("--silent", type=int, default=3000, help="silent connections")
    parser.add_argument("--slow-bodies", type=int, default=100, help="slow-body clients")
    parser.add_argument("--readers", type=int, default=100, help="clients reading nothing")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--pairs", type=int, default=3, help="alternating throughput pairs")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    args = parser.parse_args(argv)
    wrk_bin = ensure_wrk() if args.pairs else ""
    results: dict[str, dict[str, Any]] = {name: {"rps": []} for name in CONFIGS}
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        SessionStore(lambda: client, prefix="bench-serving").create_user(
            User("bench", generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"))
        )
        for name, extra in CONFIGS.items():
            print(f"{name}: /healthz under {args.slow} slow clients", flush=True)
            with service(url, extra) as (host, port):
                load = slow_clients(host, port, args.slow)
                results[name]["slow"] = healthz_while(load, host, port, args.seconds)
            print(f"{name}: /healthz beside {args.silent} silent connections", flush=True)
            with service(url, extra) as (host, port):
                load = silent_connections(host, port, args.silent)
                results[name]["silent"] = healthz_while(load, host, port, args.seconds)
            print(f"{name}: /healthz under {args.slow_bodies} slow-body clients", flush=True)
            with service(url, extra) as (host, port):
                load = slow_clients(host, port, args.slow_bodies, SLOW_BODY)
                results[name]["bodies"] = healthz_while(load, host, port, args.seconds)
            print(f"{name}: /healthz beside {args.readers} clients reading nothing", flush=True)
            with service(url, extra) as (host, port):
                load = slow_clients(host, port, args.readers, None)
                results[name]["readers"] = healthz_while(load, host, port, args.seconds)
        for pair in range(args.pairs):
            for name, extra in CONFIGS.items():
                with service(url, extra) as (host, port):
                    summary = wrk(
                        wrk_bin,
                        f"http://{host}:{port}/api/v1/sessions",
                        token(host, port),
                        args.seconds,
                        connections=args.connections,
                    )
                    results[name]["rps"].append(round(summary["rps"]))
            print(f"throughput pair {pair + 1}/{args.pairs} done", flush=True)
    print()
    for name, figures in results.items():
        print(f"{name}: GET /healthz")
        print(f"  under {args.slow} slow clients (one address each): {shown(figures['slow'])}")
        print(
            f"  beside {args.silent} silent connections (one address): {shown(figures['silent'])}"
        )
        print(f"  under {args.slow_bodies} slow-body clients: {shown(figures['bodies'])}")
        print(f"  beside {args.readers} clients reading nothing: {shown(figures['readers'])}")
    if not args.pairs:
        return
    print(f"\nGET /api/v1/sessions, req/s (wrk -c{args.connections})")
    for name, figures in results.items():
        print(f"  {name:<8} {figures['rps']} (median {statistics.median(figures['rps'])})")
    ratios = [s / b for s, b in zip(results["shipped"]["rps"], results["sync"]["rps"], strict=True)]
    print(f"\nshipped / sync throughput, by pair: {[round(r, 3) for r in ratios]}")
    print(f"median ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
