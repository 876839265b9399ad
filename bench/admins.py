"""What the last-admin rule costs on a large user store.

``python -m bench.admins`` (part of ``make bench``) starts its own
redis-server, writes ``--users`` user records (one admin, ``root``; the
others plain) and, through ``sessionsvc.accounts`` as the admin routes call
it:

- times a refusal (409 ``last_admin``: root demoting itself), which builds
  the registry of admins from a ``SCAN`` of every user record;
- while another thread refuses again and again, changes a user who is no
  admin every 0.05 s for ``--seconds`` and prints that change's median and
  maximum, and how many were answered ``busy`` (a change of a user who is
  no admin takes no lock; one of an admin takes the lock a refusal holds
  for part of its work).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import redis

from bench.commands import redis_server
from sessionsvc import accounts, create_app
from sessionsvc.errors import AdminsLocked, LastAdmin
from sessionsvc.models import User
from sessionsvc.passwords import hash_password
from sessionsvc.state import state_of


def write_users(url: str, count: int) -> None:
    """``count`` plain users and the admin ``root``, written straight to Redis."""
    client = redis.Redis.from_url(url, decode_responses=True)
    app = create_app({"JWT_SECRET_KEY": "b" * 40, "SESSIONSVC_REDIS_URL": url})
    keys = state_of(app).store.keys
    stored = hash_password("a password nobody uses")
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(keys.user(f"user{i}"), mapping={"p": stored, "a": f"a{i}"})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    with app.app_context():
        assert state_of(app).store.create_user(User("root", stored, roles=("admin",), account="r"))
    client.close()


def refuse() -> float:
    """Seconds one refusal of the last admin's demotion took."""
    started = time.perf_counter()
    try:
        accounts.update("root", roles=("auditor",))
    except LastAdmin:
        return time.perf_counter() - started
    raise AssertionError("root was demoted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with redis_server() as url:
        write_users(url, args.users)
        app = create_app({"JWT_SECRET_KEY": "b" * 40, "SESSIONSVC_REDIS_URL": url})
        with app.test_request_context():
            alone = [refuse() for _ in range(3)]
        print(
            f"{args.users} users: a refusal (409 last_admin) alone: median {statistics.median(alone) * 1000:.0f} ms of 3"
        )

        stop = threading.Event()

        def refusing() -> None:
            with app.test_request_context():
                while not stop.is_set():
                    refuse()

        thread = threading.Thread(target=refusing)
        thread.start()
        took: list[float] = []
        busy = 0
        with app.test_request_context():
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    accounts.update("user5", disabled=len(took) % 2 == 0)
                except AdminsLocked:
                    busy += 1
                took.append(time.perf_counter() - started)
                time.sleep(0.05)
        stop.set()
        thread.join()
        print(
            f"a change of a user who is no admin beside refusals: {len(took)} changes, "
            f"median {statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms, "
            f"{busy} busy"
        )


if __name__ == "__main__":
    main()
