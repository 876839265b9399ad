"""Drive sessionsvc through a Python client generated from its OpenAPI document.

Generate the client once, with the service running (``make run``)::

    make client        # openapi-python-client, into clients/python/sessionsvc_client

then walk through what a user does with two devices::

    python examples/generated_client.py --username alice

(the password from a prompt, or from ``$SESSIONSVC_PASSWORD``).

A laptop and a phone sign in, the laptop with its tokens bound to a key
only it holds (DPoP: ``sessionsvc.DPoPKey`` signs a proof for every call,
through httpx's ``auth=``); the laptop lists both, reads the phone's
session, names itself and signs the phone out; the phone's next call is the
service's 401 problem document (``session_revoked``), parsed by the client
into a ``Problem``; the laptop reads the security events that recorded it.
Every call is the generated client's own function, named by the document's
``operationId`` (``login``, ``list_sessions``, ``revoke_other_sessions``...).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# Where `make client` writes the package, unless it is installed.
sys.path.append(str(Path(__file__).resolve().parent.parent / "clients" / "python"))

from sessionsvc_client import AuthenticatedClient, Client
from sessionsvc_client.api.auth import login
from sessionsvc_client.api.sessions import (
    get_session,
    list_events,
    list_sessions,
    rename_session,
    revoke_other_sessions,
)
from sessionsvc_client.models import (
    Credentials,
    Problem,
    RevokeOtherSessionsIncludeCurrent,
    SessionName,
)

from sessionsvc import DPoPAuth, DPoPKey

LAPTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)

T = TypeVar("T")


class ServiceError(Exception):
    """The service answered with a problem document."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.code}: {problem.detail}")
        self.problem = problem


def answer(result: T | Problem | None) -> T:
    """A call's parsed answer, or the problem it got raised as ServiceError."""
    if isinstance(result, Problem):
        raise ServiceError(result)
    if result is None:
        raise RuntimeError("the service gave an answer the document does not describe")
    return result


def sign_in(
    base_url: str, username: str, password: str, user_agent: str, key: DPoPKey | None = None
) -> AuthenticatedClient:
    """A device: signs in and returns a client that sends its access token
    (use it in a ``with`` block, which closes its connections). With a
    ``key``, the sign-in carries a proof, so the tokens are bound to it, and
    every call sends ``Authorization: DPoP <token>`` with a fresh proof."""
    headers = {"User-Agent": user_agent}
    proofs = {"auth": DPoPAuth(key)} if key else {}
    with Client(base_url=base_url, headers=headers, httpx_args=proofs) as anonymous:
        credentials = Credentials(username=username, password=password)
        tokens = answer(login.sync(client=anonymous, body=credentials))
    if key is None:
        return AuthenticatedClient(base_url=base_url, token=tokens.access_token, headers=headers)
    return AuthenticatedClient(
        base_url=base_url,
        token=tokens.access_token,
        prefix="DPoP",
        headers=headers,
        httpx_args={"auth": DPoPAuth(key, tokens.access_token)},
    )


@dataclass
class Walkthrough:
    """What each step saw, for whoever runs it (and for the tests)."""

    devices: list[str] = field(default_factory=list)
    #: Whether each device's session is bound to a key ("*" marks the caller's).
    bound: dict[str, bool] = field(default_factory=dict)
    phone_session: dict[str, Any] = field(default_factory=dict)
    laptop_name: str | None = None
    revoked: int = 0
    phone_problem: Problem | None = None
    events: list[tuple[str, str | None]] = field(default_factory=list)


def walk(base_url: str, username: str, password: str, say: Any = print) -> Walkthrough:
    seen = Walkthrough()
    with (
        sign_in(base_url, username, password, LAPTOP, DPoPKey.generate()) as laptop,
        sign_in(base_url, username, password, PHONE) as phone,
    ):
        sessions = answer(list_sessions.sync(client=laptop)).sessions
        seen.devices = [f"{'*' if s.current else ' '} {s.device.label}" for s in sessions]
        seen.bound = {d: s.dpop_bound for d, s in zip(seen.devices, sessions, strict=True)}
        say("Signed in on:", *seen.devices, sep="\n  ")

        phone_id = next(s.id for s in sessions if not s.current)
        laptop_id = next(s.id for s in sessions if s.current)
        phone_session = answer(get_session.sync(phone_id, client=laptop))
        seen.phone_session = phone_session.to_dict()
        say(f"The phone: {phone_session.device.label}, from {phone_session.ip}")

        name = SessionName(name="Laptop")
        renamed = answer(rename_session.sync(laptop_id, client=laptop, body=name))
        seen.laptop_name = renamed.name
        say(f"This device is now called {renamed.name!r}")

        others = RevokeOtherSessionsIncludeCurrent.FALSE
        revoked = answer(revoke_other_sessions.sync(client=laptop, include_current=others))
        seen.revoked = revoked.revoked
        say(f"Signed out {seen.revoked} other device(s)")

        try:
            answer(list_sessions.sync(client=phone))
        except ServiceError as refused:
            seen.phone_problem = refused.problem
            say(f"The phone's next call: {refused}")

        events = answer(list_events.sync(client=laptop, limit=10)).events
        seen.events = [(e.type_, e.detail.to_dict().get("reason")) for e in events]
        lines = (f"{kind} {reason or ''}".rstrip() for kind, reason in seen.events)
        say("Security events, newest first:", *lines, sep="\n  ")
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--username", required=True)
    args = parser.parse_args()
    password = os.environ.get("SESSIONSVC_PASSWORD") or getpass.getpass()
    try:
        walk(args.url, args.username, password)
    except ServiceError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
