"""What a request says about the device: parsed user agent and client address.

A user agent is parsed whole (``user-agents``: type, browser, OS, versions)
when a session opens. On every request after that only its browser and OS
family are compared with the session's: :func:`families` asks ua-parser for
just those two, with its compiled resolver (the ``ua-parser-rs`` accelerator
of the ``regex`` extra), about 15 µs for a user agent it has not seen, and
remembers the last 4,096. A client that sends a new user agent with every
request costs little more than one that sends the same.
"""

from __future__ import annotations

import functools

import ua_parser
import user_agents
from flask import Request, has_request_context, request

from .models import Device, clip, parse_ip
from .store import Actor

#: Longest user agent we keep; longer ones are cut (they are never legitimate).
MAX_USER_AGENT = 512


def _known(value: str | None) -> str | None:
    # ua-parser names what it cannot identify "Other". Parsed names come
    # from the user agent: clipped, so that each is one field of the session
    # hash, compared as it is stored.
    return clip(value) if value and value != "Other" else None


@functools.lru_cache(maxsize=1024)
def parse_user_agent(user_agent: str | None) -> Device:
    """Parse a ``User-Agent`` header into a :class:`Device` (cached)."""
    if not user_agent:
        return Device()
    parsed = user_agents.parse(user_agent)
    if parsed.is_bot:
        kind = "bot"
    elif parsed.is_tablet:
        kind = "tablet"
    elif parsed.is_mobile:
        kind = "mobile"
    elif parsed.is_pc:
        kind = "desktop"
    else:
        kind = "other"
    browser = _known(parsed.browser.family)
    system = _known(parsed.os.family)
    version = parsed.browser.version
    return Device(
        type=kind,
        browser=browser,
        browser_version=clip(".".join(str(part) for part in version[:2]))
        if browser and version
        else None,
        os=system,
        os_version=(clip(parsed.os.version_string) or None) if system else None,
    )


@functools.lru_cache(maxsize=4096)
def families(user_agent: str | None) -> Device:
    """The browser and OS family of a ``User-Agent`` header, named as
    :func:`parse_user_agent` names them, and nothing else (cached)."""
    if not user_agent:
        return Device()
    browser = ua_parser.parse_user_agent(user_agent)
    system = ua_parser.parse_os(user_agent)
    return Device(
        browser=_known(browser.family if browser else None),
        os=_known(system.family if system else None),
    )


#: A user agent to build the parsers with (:func:`warm_up`).
_WARM_UP_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def warm_up() -> None:
    """Build the user-agent parsers now, at start-up, rather than in a
    process's first request that needs them.

    ua-parser compiles its resolver on first use (~0.2 s here), and the full
    parse's regular expressions compile on theirs (~0.2 s): without this the
    first authenticated request of every worker took over 100 ms. Both are
    once per process; the parse caches are left empty.
    """
    parse_user_agent.__wrapped__(_WARM_UP_AGENT)
    families.__wrapped__(_WARM_UP_AGENT)


def user_agent_of(request: Request) -> str | None:
    """The request's ``User-Agent``, or ``None`` when it sent none."""
    # The WSGI environ directly: it runs on every authenticated request.
    value: str | None = request.environ.get("HTTP_USER_AGENT")
    if not value:
        return None
    return value[:MAX_USER_AGENT]


def request_actor() -> Actor | None:
    """The current request as the actor of a change, with its device; ``None``
    outside a request (the CLI)."""
    if not has_request_context():
        return None
    user_agent = user_agent_of(request)
    return Actor(ip=client_ip(request), user_agent=user_agent, device=families(user_agent))


def client_ip(request: Request) -> str | None:
    """The client's address, normalised, or ``None`` when it is not one.

    ``X-Forwarded-For`` is honoured only through werkzeug's ``ProxyFix``,
    which the extension installs when ``SESSIONSVC_TRUSTED_PROXIES`` > 0;
    otherwise this is the peer address of the connection. What a proxy
    forwards is text a client may have made up, so only a valid IPv4 or
    IPv6 address is kept. An IPv4 client of a dual-stack socket (gunicorn
    bound to ``[::]``), or one a proxy forwards that way, arrives as
    ``::ffff:a.b.c.d``: it is its IPv4 address (see :func:`normalised`).
    """
    return normalised(request.remote_addr)


@functools.lru_cache(maxsize=4096)
def normalised(address: str | None) -> str | None:
    """``address`` in its one text form (IPv4-mapped IPv6 as IPv4, IPv6
    compressed, lowercase), or ``None`` when it is not an IP address."""
    if not address:
        return None
    try:
        return str(parse_ip(address))
    except ValueError:
        return None
