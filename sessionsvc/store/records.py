"""What the store takes and returns besides the models: who acts, the
policy activity follows, and what a check or an opening found."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..models import Device, Location, SecurityEvent, Session


class CheckStatus(enum.Enum):
    """What the revocation check found."""

    ACTIVE = 1
    GONE = 0
    #: The refresh token was used before: the session is now revoked.
    REFRESH_REUSED = 2
    #: The session was unused longer than the idle timeout: now revoked.
    IDLE = 3
    #: The device or country changed and anomalies revoke: now revoked.
    ANOMALY = 4
    #: The session's user was deleted (or the name is another account now),
    #: or disabled: now revoked (refresh checks of the standalone service).
    USER_GONE = 5
    #: The DPoP proof was accepted before (its ``jti``): refused, nothing changed.
    PROOF_REPLAYED = 6
    #: A bound token used without its key (as Bearer or with another key's
    #: proof): refused; recorded as an anomaly, revoked if anomalies revoke.
    DPOP_MISMATCH = 7


class ReviewRefused(enum.Enum):
    """Why a review of a session (confirm, deny) changed nothing."""

    #: No such session (unknown, revoked, expired, dead by the idle timeout).
    GONE = 0
    #: The caller's own session, or the caller's session is pending itself.
    NOT_ALLOWED = 1
    #: Confirm of a session without risk flags.
    NOTHING = 2


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    #: The session's absolute expiry, when it is active (refresh checks only).
    expires_at: int | None = None
    #: The user's roles as stored now (refresh checks with the user record).
    roles: tuple[str, ...] | None = None
    #: The session as the check read it (checks asked for the whole session).
    session: Session | None = None


#: The answers that carry nothing but their status.
ALIVE = CheckResult(CheckStatus.ACTIVE)
GONE = CheckResult(CheckStatus.GONE)


class Actor(NamedTuple):
    """Who caused a change (recorded on the security event), or who uses a session.

    A named tuple: one is made for every authenticated request, and a tuple
    is the cheapest immutable record to make.

    :param device: the request's parsed user agent, compared with the
        session's on every use; ``None`` when there is no request to compare.
    """

    ip: str | None = None
    user_agent: str | None = None
    device: Device | None = None


@dataclass(frozen=True)
class Policy:
    """What activity on a session does, from the app's settings."""

    #: At most one last-seen write per session per this many seconds.
    touch_interval: int = 60
    #: A session unused this long is revoked on its next use (``idle``).
    idle_timeout: int | None = None
    #: Revoke a session on an anomaly instead of only recording it.
    revoke_on_anomaly: bool = False
    #: The location of an address, when location lookup is on.
    locate: Callable[[str], Location | None] | None = None


@dataclass(frozen=True)
class Opened:
    """What opening a session did."""

    #: Risk flags of the new session (``new_device``, ``new_country``).
    risk: tuple[str, ...]
    #: Sessions evicted to stay within the cap.
    evicted: list[str]


class AdminsLeft(enum.IntEnum):
    """What dropping a user from the registry of admins did (``admins_leave.lua``)."""

    #: The lock is not the caller's any more (its lease ran out): nothing changed.
    LOCK_LOST = -2
    #: The registry cannot decide: there is none (a deployment from before
    #: it), or it lacks the user and holds no other admin (one made behind
    #: its back). Build it, ask again.
    UNDECIDED = -1
    #: The user is the last admin: nothing changed.
    LAST = 0
    #: Dropped, or it was not a member.
    LEFT = 1
    #: Dropped although the last (forced).
    LEFT_LAST = 2


class UserChanged(Exception):
    """The user record is not what the caller read any more: deleted (or
    another account under the name), or its password, roles or disabled
    state changed. Nothing was done (no session opened, no change made):
    read it again."""


#: Receives the security events a script recorded: ``(user_id, events)``.
EventSink = Callable[[str, list[SecurityEvent]], None]
