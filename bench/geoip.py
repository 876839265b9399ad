"""What a GeoIP City database costs in memory per gunicorn worker.

``python -m bench.geoip`` builds a City database in the GeoLite2 layout with
mmdb-writer (``--networks`` /24 networks, each with a city, a country and
coordinates), serves the shipped ``gunicorn.conf.py`` (default worker count) with
``SESSIONSVC_GEOIP_DB`` on a redis-server of its own, signs one user in, and
moves that session across ``--requests`` addresses of the database (each new
address is a lookup), so the workers touch the file's pages. It then reads
``/proc/<pid>/smaps`` for the database's mapping in every process that maps
it and prints its Rss (pages in memory), Pss (its fair share) and the
private part: the file is memory-mapped read-only, so workers share one copy
in the page cache and a worker's own cost is its private pages.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import tempfile
import time
from pathlib import Path

import redis
from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet

from bench.commands import redis_server
from bench.serving import service
from sessionsvc.accounts import new_user
from sessionsvc.store import SessionStore

PASSWORD = "correct horse battery staple"
#: The first /24 of the synthetic database: 11.0.0.0, a public range.
FIRST = 11 << 24


def build(path: Path, networks: int) -> None:
    writer = MMDBWriter(
        ip_version=6,
        database_type="GeoLite2-City",
        languages=["en"],
        description={"en": "sessionsvc bench"},
        ipv4_compatible=True,
    )
    rnd = random.Random(7)
    for i in range(networks):
        net = IPNetwork(f"{_address(i)}/24")
        record = {
            "city": {"names": {"en": f"City {i % 40_000}"}},
            "country": {"iso_code": "DE", "names": {"en": "Germany"}},
            "location": {"latitude": rnd.uniform(-60, 60), "longitude": rnd.uniform(-170, 170)},
        }
        writer.insert_network(IPSet([net]), record)
    writer.to_db_file(str(path))


def _address(i: int) -> str:
    n = FIRST + i * 256
    return ".".join(str((n >> shift) & 255) for shift in (24, 16, 8, 0))


def mapping_of(pid: int, path: Path) -> dict[str, int] | None:
    """kB figures of the mapping of ``path`` in process ``pid``, or None."""
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return None
    figures: dict[str, int] = {}
    inside = False
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and line.endswith(" kB"):
            name = fields[0].rstrip(":")
            figures[name] = figures.get(name, 0) + int(fields[1])
    return figures or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.geoip", description=__doc__)
    parser.add_argument("--networks", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="sessionsvc-geoip-"))
    database = folder / "City.mmdb"
    started = time.monotonic()
    build(database, args.networks)
    size_mb = database.stat().st_size / 1e6
    print(f"database: {args.networks} networks, {size_mb:.1f} MB "
          f"(built in {time.monotonic() - started:.0f} s)")  # fmt: skip
    os.environ["SESSIONSVC_GEOIP_DB"] = str(database)
    os.environ["SESSIONSVC_TRUSTED_PROXIES"] = "1"
    rnd = random.Random(11)
    with redis_server() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        SessionStore(lambda: client, prefix="bench-serving").create_user(
            new_user("bench", PASSWORD)
        )
        with service(url, []) as (host, port):
            connection = http.client.HTTPConnection(host, port, timeout=10)
            body = json.dumps({"username": "bench", "password": PASSWORD})
            connection.request("POST", "/api/v1/auth/login", body, {
                "Content-Type": "application/json", "X-Forwarded-For": _address(0),
            })  # fmt: skip
            token = json.loads(connection.getresponse().read())["access_token"]
            connection.close()
            for _ in range(args.requests):
                # A connection per request, so that every worker takes some.
                connection = http.client.HTTPConnection(host, port, timeout=10)
                where = _address(rnd.randrange(args.networks))
                connection.request("GET", "/api/v1/sessions", headers={
                    "Authorization": f"Bearer {token}", "X-Forwarded-For": where,
                })  # fmt: skip
                response = connection.getresponse()
                response.read()
                connection.close()
                if response.status != 200:
                    raise SystemExit(f"GET /api/v1/sessions: {response.status}")
            rows = []
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and (figures := mapping_of(int(entry.name), database)):
                    rows.append((int(entry.name), figures))
            print(f"{len(rows)} processes map the database after {args.requests} lookups:")
            for pid, figures in sorted(rows):
                private = figures.get("Private_Clean", 0) + figures.get("Private_Dirty", 0)
                # A file just written is still dirty in the page cache: shared either way.
                shared = figures.get("Shared_Clean", 0) + figures.get("Shared_Dirty", 0)
                print(
                    f"  pid {pid}: Rss {figures.get('Rss', 0) / 1024:.1f} MiB, "
                    f"Pss {figures.get('Pss', 0) / 1024:.1f} MiB, "
                    f"shared {shared / 1024:.1f} MiB, "
                    f"private {private / 1024:.2f} MiB"
                )
    database.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
