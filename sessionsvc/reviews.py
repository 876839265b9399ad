"""Reviewing flagged sign-ins ("Was this you?"): the user answers for each
session with risk flags, from a session of theirs that is not in question.

``confirm`` keeps the flags as the record of what was seen and marks the
session confirmed (``Session.review``); an anomaly recorded later asks again.
``deny`` signs out that session and every other one still pending, reason
:data:`DENIED`, in one atomic step. Each checks, inside that step, that the
session is still there and that the caller may answer for it, so a confirm
and a deny racing on one session end the same whichever wins: a confirm
after the deny finds no session (404), a deny after a confirm still revokes
it (the user said so).
"""

from __future__ import annotations

import time
from typing import Any

from . import audit, devices, tokens
from .errors import NothingToReview, ReviewNotAllowed, SessionNotFound
from .models import Session
from .state import current_state
from .store import Actor, ReviewRefused

#: The revocation reason of the sessions a deny signs out.
DENIED = "denied"


def _refused(why: ReviewRefused) -> Exception:
    if why is ReviewRefused.NOT_ALLOWED:
        return ReviewNotAllowed(
            "Answer for a flagged session from another session of yours that is not "
            "awaiting review itself."
        )
    if why is ReviewRefused.NOTHING:
        return NothingToReview("The session has no risk flags to confirm.")
    return SessionNotFound("No such session.")


def _answer(session_id: str, caller: str) -> dict[str, Any]:
    """What the store's ``confirm`` and ``deny`` take besides the ids: the
    caller, now, who answers, the idle cutoff; an id that cannot be a
    session's is 404 at once."""
    if not tokens.is_session_id(session_id):
        raise _refused(ReviewRefused.GONE)
    return {
        "caller": caller,
        "now": int(time.time()),
        "actor": devices.request_actor() or Actor(),
        "seen_since": current_state().settings.seen_since(),
    }


def confirm(user_id: str, session_id: str, *, caller: str) -> Session:
    """Confirm that a flagged session was the user's (``session.confirmed``
    the first time); the session as it is now.

    :param caller: the session the answer comes from.
    :raises SessionNotFound: no such session of the user's (checked first).
    :raises ReviewNotAllowed: it is ``caller``, or ``caller`` is pending itself.
    :raises NothingToReview: it has no risk flags.
    """
    result = current_state().store.confirm(user_id, session_id, **_answer(session_id, caller))
    if isinstance(result, ReviewRefused):
        raise _refused(result)
    return result


def deny(user_id: str, session_id: str, *, caller: str) -> int:
    """Sign out a session the user says was not them, and every other one
    of theirs still pending review, never ``caller``; how many.

    :raises SessionNotFound: no such session of the user's (checked first).
    :raises ReviewNotAllowed: it is ``caller``, or ``caller`` is pending itself.
    """
    answer = _answer(session_id, caller)
    result = current_state().store.deny(user_id, session_id, reason=DENIED, **answer)
    if isinstance(result, ReviewRefused):
        raise _refused(result)
    audit.revoked(user_id, result, DENIED, None)
    return len(result)
