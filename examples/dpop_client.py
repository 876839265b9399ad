"""A device whose tokens are useless off it: DPoP with ``requests``.

With the service running (``make run``) and a user made, and ``requests``
installed (``.venv/bin/pip install requests``; the test tools have it)::

    .venv/bin/python examples/dpop_client.py --username alice

(the password from a prompt, or from ``$SESSIONSVC_PASSWORD``). The device
makes a key, signs in with a proof (its tokens are bound to the key), lists
its sessions, refreshes and signs out, each call with a fresh proof. A copy
of its access token sent without the key, as a thief would, is refused.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

import requests

# README.md shows this part as it is.
from sessionsvc import DPoPAuth, DPoPKey


def bound_device(base: str, username: str, password: str) -> dict[str, Any]:
    key = DPoPKey.generate()  # ES256; keep it as long as the session
    login = requests.post(
        f"{base}/api/v1/auth/login",
        json={"username": username, "password": password},
        auth=DPoPAuth(key),  # the sign-in's proof: the tokens are bound to key
        timeout=10,
    )
    login.raise_for_status()
    tokens = login.json()  # token_type "DPoP"

    # Every call: Authorization: DPoP <token>, and a new proof signed by key.
    sessions = requests.get(
        f"{base}/api/v1/sessions", auth=DPoPAuth(key, tokens["access_token"]), timeout=10
    ).json()["sessions"]

    # A thief's copy of the token, sent as Bearer: 401 invalid_dpop_proof.
    stolen = requests.get(
        f"{base}/api/v1/sessions",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )

    # Refresh proves the key too; the new pair is bound to the same key.
    refreshed = requests.post(
        f"{base}/api/v1/auth/refresh", auth=DPoPAuth(key, tokens["refresh_token"]), timeout=10
    ).json()
    signed_out = requests.post(
        f"{base}/api/v1/auth/logout", auth=DPoPAuth(key, refreshed["access_token"]), timeout=10
    )
    return {
        "token_type": tokens["token_type"],
        "bound": [s["dpop_bound"] for s in sessions if s["current"]],
        "stolen": (stolen.status_code, stolen.json()["code"]),
        "refreshed": refreshed["token_type"],
        "signed_out": signed_out.status_code,
    }


# README: end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--username", required=True)
    args = parser.parse_args()
    password = os.environ.get("SESSIONSVC_PASSWORD") or getpass.getpass()
    try:
        seen = bound_device(args.url, args.username, password)
    except requests.HTTPError as error:
        print(error, file=sys.stderr)
        return 1
    for name, value in seen.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
