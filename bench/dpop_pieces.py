"""gunicorn settings for ``python -m bench.dpop --pieces``: the benchmark's,
and in each worker the pieces of a bound request's work that
``BENCH_DPOP_SKIP`` names taken out, so that what is left shows what each costs.

- ``signature``: the proof's signature is not checked (the rest of it is);
- ``proof``: no proof is checked at all (each request gets the first proof's
  key and a new ``jti``, so the store still remembers one per request);
- ``proof+script``: that, and the session read with ``HMGET`` as for an
  unbound token instead of ``bound.lua`` (nothing remembered).

For measuring only: a worker with any piece taken out accepts forgeries.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

# gunicorn reads its settings off this module.
from bench.gunicorn_settings import loglevel, threads, worker_class, workers  # noqa: F401

#: The environment variable that names what to take out.
SKIP = "BENCH_DPOP_SKIP"
#: Each takes out more than the one before.
PIECES = ("signature", "proof", "proof+script")
#: What the difference between one step and the next costs: the bound
#: request, each of :data:`PIECES`, then the Bearer request.
PIECE_NAMES = {
    "signature": "the proof's signature check",
    "proof": "the proof's other checks",
    "proof+script": "bound.lua instead of HMGET",
    "bearer": "the rest (scheme, URL, jti, bigger request)",
}


def post_fork(server: Any, worker: Any) -> None:
    take_out(os.environ.get(SKIP, ""))


def take_out(skip: str) -> None:
    from sessionsvc import dpop
    from sessionsvc.store import SessionStore

    if skip == "signature":
        dpop._check_signature = lambda header, signed, signature: None
    if skip.startswith("proof"):
        verify, first = dpop.verify, []

        def same_key(value: str | None, **request: Any) -> dpop.Proof:
            if not first:
                first.append(verify(value, **request))
            return dpop.Proof(first[0].jkt, secrets.token_urlsafe(16), first[0].iat)

        dpop.verify = same_key
    if skip == "proof+script":

        def unbound(self: SessionStore, user_id: str, session_id: str, **check: Any) -> Any:
            for name in ("jkt", "proof", "window"):
                check.pop(name)
            return self.check_access(user_id, session_id, **check)

        SessionStore.check_bound = unbound  # type: ignore[method-assign]
