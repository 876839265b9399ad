"""Devices: user-agent parsing, its cache, and what a request says about the client."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest
from flask import Flask, request

from sessionsvc.devices import (
    MAX_USER_AGENT,
    client_ip,
    families,
    normalised,
    parse_user_agent,
    user_agent_of,
)
from sessionsvc.models import Device
from tests.clients import CHROME, IPHONE

IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.4.0"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


def test_chrome_on_windows() -> None:
    device = parse_user_agent(CHROME)
    assert device == Device("desktop", "Chrome", "120.0", "Windows", "10")
    assert device.label == "Chrome 120 on Windows 10"


def test_iphone_safari() -> None:
    device = parse_user_agent(IPHONE)
    assert device == Device("mobile", "Mobile Safari", "17.1", "iOS", "17.1")
    assert device.label == "Mobile Safari 17 on iOS 17.1"


def test_ipad_is_a_tablet() -> None:
    device = parse_user_agent(IPAD)
    assert device.type == "tablet"
    assert device.os == "iOS"
    assert device.os_version == "16.6"


def test_googlebot_is_a_bot() -> None:
    device = parse_user_agent(GOOGLEBOT)
    assert device.type == "bot"
    assert device.browser == "Googlebot"


def test_curl_is_other_with_its_name() -> None:
    device = parse_user_agent(CURL)
    assert device.type == "other"
    assert device.browser == "curl"
    assert device.os is None
    assert device.os_version is None
    assert device.label == "curl 8"


def test_os_without_version_is_labelled_by_family() -> None:
    device = parse_user_agent(FIREFOX_LINUX)
    assert device == Device("desktop", "Firefox", "121.0", "Linux", None)
    assert device.label == "Firefox 121 on Linux"


@pytest.mark.parametrize("user_agent", [None, ""])
def test_missing_user_agent_is_an_unknown_device(user_agent: str | None) -> None:
    device = parse_user_agent(user_agent)
    assert device == Device("other", None, None, None, None)
    assert device.label is None
    assert device.to_json() == {
        "type": "other",
        "browser": None,
        "browser_version": None,
        "os": None,
        "os_version": None,
        "label": None,
    }


@pytest.mark.parametrize("user_agent", ["asdfghjkl", "\x00zz;;((not a browser))", "}{" * 300])
def test_garbage_user_agent_is_an_unknown_device(user_agent: str) -> None:
    device = parse_user_agent(user_agent)
    assert device == Device("other", None, None, None, None)
    assert device.label is None


def test_parse_is_cached() -> None:
    user_agent = CHROME + " cache-probe"
    parse_user_agent(user_agent)
    hits = parse_user_agent.cache_info().hits
    first = parse_user_agent(user_agent)
    assert parse_user_agent.cache_info().hits == hits + 1
    assert parse_user_agent(user_agent) is first


@pytest.fixture
def app() -> Flask:
    return Flask(__name__)


def test_user_agent_is_cut_at_the_limit(app: Flask) -> None:
    long = "Mozilla/5.0 " + "x" * 2000
    with app.test_request_context(headers={"User-Agent": long}):
        value = user_agent_of(request)
    assert value == long[:MAX_USER_AGENT]
    assert MAX_USER_AGENT == 512


def test_user_agent_at_the_limit_is_kept_whole(app: Flask) -> None:
    exact = "a" * MAX_USER_AGENT
    with app.test_request_context(headers={"User-Agent": exact}):
        assert user_agent_of(request) == exact


def test_user_agent_is_returned_as_sent(app: Flask) -> None:
    with app.test_request_context(headers={"User-Agent": CHROME}):
        assert user_agent_of(request) == CHROME


@pytest.mark.parametrize("headers", [{}, {"User-Agent": ""}])
def test_missing_or_empty_user_agent_is_none(app: Flask, headers: dict[str, str]) -> None:
    with app.test_request_context(headers=headers):
        assert user_agent_of(request) is None


def test_client_ip_is_the_peer_address(app: Flask) -> None:
    with app.test_request_context(environ_base={"REMOTE_ADDR": "203.0.113.7"}):
        assert client_ip(request) == "203.0.113.7"


def test_client_ip_ignores_forwarded_headers(app: Flask) -> None:
    with app.test_request_context(
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
        headers={"X-Forwarded-For": "1.2.3.4, 5.6.7.8", "X-Real-IP": "9.9.9.9"},
    ):
        assert client_ip(request) == "198.51.100.4"


def test_client_ip_without_peer_address_is_none(app: Flask) -> None:
    with app.test_request_context(environ_base={"REMOTE_ADDR": ""}):
        assert client_ip(request) is None


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("203.0.113.50", "203.0.113.50"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("::ffff:203.0.113.50", "203.0.113.50"),  # a dual-stack proxy's IPv4 client
        ("not-an-ip", None),
        ("", "127.0.0.1"),  # nothing forwarded: the peer address
    ],
)
def test_forwarded_addresses_are_kept_only_when_valid(forwarded: str, expected: str | None) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = Flask(__name__)
    seen: list[str | None] = []

    @app.get("/")
    def index() -> str:
        seen.append(client_ip(request))
        return ""

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    app.test_client().get("/", headers={"X-Forwarded-For": forwarded})
    assert seen == [expected]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # IPv4-mapped IPv6 (an IPv4 client of a dual-stack socket), in both spellings.
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:cb00:7107", "203.0.113.7"),
        ("::ffff:7f00:1", "127.0.0.1"),
        ("0:0:0:0:0:ffff:127.0.0.1", "127.0.0.1"),
        # Plain IPv6 stays IPv6, compressed; so do the look-alikes that are not mapped.
        ("2001:DB8:0::7", "2001:db8::7"),
        ("::1", "::1"),
        ("::7f00:1", "::7f00:1"),  # IPv4-compatible (deprecated), not mapped
        ("64:ff9b::cb00:7107", "64:ff9b::cb00:7107"),  # NAT64: an IPv6 address
        ("::ffff:0:7f00:1", "::ffff:0:7f00:1"),  # IPv4-translated, not mapped
        ("203.0.113.7", "203.0.113.7"),
        # A zone names an interface of the host that saw the address: dropped.
        ("fe80::1%eth0", "fe80::1"),
        ("FE80::0:1%" + "x" * 100, "fe80::1"),
        # Garbage is no address.
        ("::ffff:999.0.0.1", None),
        ("::ffff:", None),
        ("not-an-ip", None),
        ("", None),
        (None, None),
    ],
)
def test_addresses_have_one_text_form(address: str | None, expected: str | None) -> None:
    assert normalised(address) == expected


@pytest.mark.parametrize(
    ("peer", "expected"),
    [("::ffff:203.0.113.7", "203.0.113.7"), ("::ffff:7f00:1", "127.0.0.1"), ("::1", "::1")],
)
def test_client_ip_of_a_dual_stack_socket_is_ipv4(app: Flask, peer: str, expected: str) -> None:
    with app.test_request_context(environ_base={"REMOTE_ADDR": peer}):
        assert client_ip(request) == expected


@pytest.mark.parametrize("address", ['1.2.3.4"><script>', "999.1.1.1", "unix:/x", ""])
def test_addresses_that_are_not_ip_are_none(address: str) -> None:
    app = Flask(__name__)
    with app.test_request_context(environ_base={"REMOTE_ADDR": address}):
        assert client_ip(request) is None


#: User agents of many kinds, for the two parsers to agree on.
AGENTS = [
    CHROME,
    IPHONE,
    FIREFOX_LINUX,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "PostmanRuntime/7.36.0",
    "Mozilla/5.0",
    "zzz",
    "",
    None,
]


@pytest.mark.parametrize("user_agent", AGENTS)
def test_the_request_path_names_families_as_the_full_parse_does(user_agent: str | None) -> None:
    full = parse_user_agent(user_agent)
    assert families(user_agent) == Device(browser=full.browser, os=full.os)


def test_families_of_random_user_agents_agree_with_the_full_parse() -> None:
    rng = random.Random(20261201)
    for _ in range(200):
        base = rng.choice([a for a in AGENTS if a])
        version = f"{rng.randint(1, 999)}.{rng.randint(0, 9999)}"
        cut = rng.randint(0, len(base))
        for agent in (re.sub(r"\d+\.\d+", version, base, count=1), base[:cut]):
            full = parse_user_agent(agent)
            assert families(agent) == Device(browser=full.browser, os=full.os), agent


#: In a process of its own: the app is built, then building a user-agent
#: parser fails; a request that parses its user agent must not need to.
_FIRST_REQUEST = """
import ua_parser.regex
from sessionsvc import create_app, current_manager

app = create_app({"JWT_SECRET_KEY": "k" * 32, "SESSIONSVC_LOGIN_RATE_LIMIT": ""})


def built_during_a_request(*args, **kwargs):
    raise AssertionError("a user-agent parser was built during a request")


ua_parser.regex.Resolver.__init__ = built_during_a_request
agent = AGENT
with app.app_context():
    pair = current_manager().open("alice", ip="127.0.0.1", user_agent=agent)
response = app.test_client().get(
    "/api/v1/sessions",
    headers={"Authorization": "Bearer " + pair.access_token, "User-Agent": agent},
)
print(response.status_code, response.get_json()["sessions"][0]["device"]["browser"])
"""


def test_the_parsers_are_built_at_start_up_not_by_a_first_request() -> None:
    # The first authenticated request of every worker paid for them
    # (~0.2 s), and a fresh process is the only place to see it.
    script = _FIRST_REQUEST.replace("AGENT", repr(FIREFOX_LINUX))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "Firefox"]
