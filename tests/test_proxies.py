"""SESSIONSVC_TRUSTED_PROXIES in the standalone service: X-Forwarded-For only when trusted.

Both the session's addresses and the login rate limiter's per-address
counter follow it.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import config
from sessionsvc import create_app, current_manager
from tests.backends import AppFactory, Backend
from tests.clients import CHROME, JWT_KEY, Auth, assert_problem

LOGIN = "/api/v1/auth/login"
SESSIONS = "/api/v1/sessions"
PEER = "10.0.0.1"


def request_headers(forwarded: str | None) -> dict[str, str]:
    headers = {"User-Agent": CHROME}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return headers


def login(client: FlaskClient, forwarded: str | None, username: str = "alice") -> Any:
    return client.post(
        LOGIN,
        json={"username": username, "password": "pw"},
        headers=request_headers(forwarded),
        environ_base={"REMOTE_ADDR": PEER},
    )


def session_addresses(app: Flask, forwarded: str | None) -> tuple[Any, Any]:
    """Sign alice in through a proxy that forwards ``forwarded``; her session's addresses."""
    Auth(app).create_user("alice", "pw")
    client = app.test_client()
    response = login(client, forwarded)
    assert response.status_code == 200, response.get_data(as_text=True)
    tokens = response.get_json()
    headers = {**request_headers(forwarded), "Authorization": f"Bearer {tokens['access_token']}"}
    listed = client.get(SESSIONS, headers=headers, environ_base={"REMOTE_ADDR": PEER})
    assert listed.status_code == 200, listed.get_data(as_text=True)
    (session,) = listed.get_json()["sessions"]
    return session["ip"], session["created_ip"]


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, None, PEER),
        (0, "203.0.113.50", PEER),  # not trusted: the peer, whatever is forwarded
        (0, "not-an-ip", PEER),
        (1, None, PEER),  # nothing forwarded: the peer
        (1, "203.0.113.50", "203.0.113.50"),
        (1, "198.51.100.7, 203.0.113.50", "203.0.113.50"),  # the hop our proxy added
        (2, "198.51.100.7, 203.0.113.50", "198.51.100.7"),
        (1, "2001:DB8::0:1", "2001:db8::1"),
        # A dual-stack proxy forwards its IPv4 clients IPv4-mapped: each is its IPv4 address.
        (1, "::ffff:203.0.113.50", "203.0.113.50"),
        (1, "198.51.100.7, ::ffff:cb00:7132", "203.0.113.50"),
        (1, "not-an-ip", None),  # garbage is no address, and no error
        (1, "198.51.100.7, <script>", None),
    ],
)
def test_session_address_follows_forwarded_for_only_when_trusted(
    make_app: AppFactory, hops: int, forwarded: str | None, expected: str | None
) -> None:
    app = make_app(SESSIONSVC_TRUSTED_PROXIES=hops)
    assert session_addresses(app, forwarded) == (expected, expected)


ADDRESSES = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
CHAINS = ["198.51.100.7, 203.0.113.1", "198.51.100.8, 203.0.113.1", "198.51.100.7, 203.0.113.2"]
GARBAGE = ["not-an-ip", "also not", "<script>"]
#: One IPv4 client, forwarded plain and IPv4-mapped (by a dual-stack proxy), and another.
MAPPED = ["::ffff:203.0.113.1", "203.0.113.1", "::ffff:cb00:7101", "::ffff:203.0.113.2"]


@pytest.mark.parametrize(
    ("hops", "forwarded", "counted", "statuses"),
    [
        # Not trusted: one client, whatever it forwards.
        (0, ADDRESSES, {PEER: 3}, [401, 401, 429]),
        (1, ADDRESSES, {"203.0.113.1": 1, "203.0.113.2": 1, "203.0.113.3": 1}, [401] * 3),
        # The last hop, the one our proxy added, is the client.
        (1, CHAINS, {"203.0.113.1": 2, "203.0.113.2": 1}, [401] * 3),
        # Addresses that are none share one counter rather than escape it.
        (1, GARBAGE, {"unknown": 3}, [401, 401, 429]),
        # Mapped or not, one IPv4 client is one counter, and not everyone's ::/64.
        (1, MAPPED, {"203.0.113.1": 3, "203.0.113.2": 1}, [401, 401, 429, 401]),
    ],
    ids=["untrusted", "trusted", "chain", "garbage", "mapped"],
)
def test_login_limit_counts_the_forwarded_address_only_when_trusted(
    make_app: AppFactory,
    backend: Backend,
    hops: int,
    forwarded: list[str],
    counted: dict[str, int],
    statuses: list[int],
) -> None:
    app = make_app(SESSIONSVC_TRUSTED_PROXIES=hops, SESSIONSVC_LOGIN_RATE_LIMIT="2/minute")
    client = app.test_client()
    # A new name each time: only the per-address limit can refuse.
    seen = [login(client, value, f"user{i}").status_code for i, value in enumerate(forwarded)]
    assert seen == statuses
    store = backend.client()
    head = f"{backend.prefix}:rl:LIMITER/"
    found = {
        key.removeprefix(head).removesuffix("/login:ip/2/1/minute"): int(store.get(key))
        for key in store.scan_iter(match=head + "*/login:ip/*")
    }
    assert found == counted


def test_refused_login_behind_a_proxy_is_the_spec_problem(make_app: AppFactory) -> None:
    app = make_app(SESSIONSVC_TRUSTED_PROXIES=1, SESSIONSVC_LOGIN_RATE_LIMIT="1/minute")
    client = app.test_client()
    assert login(client, "203.0.113.1").status_code == 401
    assert_problem(login(client, "203.0.113.1", "bob"), 429, "rate_limited")


@pytest.mark.parametrize(("value", "expected"), [("1", "203.0.113.50"), (None, PEER)])
def test_service_reads_trusted_proxies_from_the_environment(
    backend: Backend, value: str | None, expected: str
) -> None:
    environ = {
        "JWT_SECRET_KEY": JWT_KEY,
        "SESSIONSVC_KEY_PREFIX": backend.prefix,
        "SESSIONSVC_LOGIN_RATE_LIMIT": "",
        **({"SESSIONSVC_REDIS_URL": backend.url} if backend.url else {}),
        **({"SESSIONSVC_TRUSTED_PROXIES": value} if value else {}),
    }
    app = create_app({"TESTING": True, **config.from_env(environ)}, **backend.app_kwargs())
    try:
        assert session_addresses(app, "203.0.113.50") == (expected, expected)
    finally:
        with app.app_context():
            current_manager().store.close()
