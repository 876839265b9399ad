"""``SessionStore``: sessions, indexes, events and users in Redis."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import redis

from ..models import (
    REASON_CHARS,
    REASON_MAX,
    SecurityEvent,
    Session,
)
from .audit import AuditStore
from .checks import TRAVEL_LIMITS, CheckStore
from .codec import (
    AGENT_REF,
    CREATED_MICROS,
    FIELDS,
    agent_digest,
    agents_of,
    event_from_json,
    merge_events,
    pieces,
    place,
    session_fields,
    session_from_hash,
)
from .connections import (
    client_factory_from_url,
    describe,
)
from .keys import address_group
from .records import (
    Actor,
    Opened,
    ReviewRefused,
    UserChanged,
)
from .users import UserStore

# The scripts write reasons into event JSON as they are: a host app may use
# reasons of its own (see models.REVOCATION_REASONS), in this alphabet.
_REASON_RE = re.compile(f"{REASON_CHARS}{{1,{REASON_MAX}}}")


class SessionStore(CheckStore, UserStore, AuditStore):
    """Sessions, indexes, events and users in Redis (see :class:`StoreBase`)."""

    #: The last creation stamp of this process (every store in it):
    #: see :meth:`_creation_micros`.
    _stamp_lock = threading.Lock()
    _last_stamp = (0, 0)

    # -- sessions -----------------------------------------------------------

    def create(
        self,
        session: Session,
        *,
        max_sessions: int,
        actor: Actor,
        user_version: int | None = None,
    ) -> Opened | None:
        """Store a new session, record ``session.created``, evict over the cap.

        One atomic round trip, which also compares the session's device and
        country with the user's sign-in history (its risk flags). Returns
        ``None`` when the id is already taken (the caller draws a new one).

        :param user_version: the version of the user record (standalone user
            store) the sign-in checked: the session is stored only if the
            record is still the session's account at that version.
        :raises UserChanged: it is not (nothing stored).
        """
        keys, args = self._open_call(
            session, max_sessions=max_sessions, actor=actor, user_version=user_version
        )
        with self._available():
            result = self._run("open", keys, args)
        if result is None:
            return None
        if result == 0:
            raise UserChanged("The user record changed since the sign-in read it.")
        if session.user_agent:
            # What its device asks for next reads it without a second round trip.
            self.agent_texts.learn(
                {agent_digest(session.user_agent): json.dumps(session.user_agent)}
            )
        risk = tuple(flag for flag in str(result[0]).split(",") if flag)
        return Opened(risk, [str(victim) for victim in result[1:]])

    def _open_call(
        self, session: Session, *, max_sessions: int, actor: Actor, user_version: int | None = None
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the open script for one session."""
        named = session_fields(session)
        # Creation order within the second (microseconds): eviction's
        # tie-break. A field of its own, so c stays what every version reads.
        named[CREATED_MICROS] = self._creation_micros(session.created_at)
        fields: list[Any] = []
        for name, value in named.items():
            fields += [name, value]
        uid, sid = session.user_id, session.id
        keys = [
            self.session_key(uid, sid),
            self.index_key(uid),
            self.events_key(uid),
            self.known_key(uid),
            self.activity_events_key(uid),
            *([self.user_key(uid)] if user_version is not None else []),
            *self.event_keys(uid),
        ]
        device = session.device
        # A device the parser cannot name (no user agent, or one it does not
        # know) is a family of its own, "?": new to a user like any other.
        family = f"{device.browser or ''}|{device.os or ''}" if device.browser or device.os else "?"
        args = [
            session.created_at,
            session.expires_at,
            max_sessions,
            self.session_key(uid, ""),
            *self._event_args(session.created_at, actor),
            sid,
            family,
            (session.location.country or "") if session.location else "",
            address_group(session.ip) if session.ip else "",
            place(session.location),
            TRAVEL_LIMITS,
            # The session's user agent is interned with its event's.
            "1" if session.user_agent and session.user_agent == actor.user_agent else "",
            # The user record the sign-in checked.
            "" if user_version is None else user_version,
            session.account or "",
            *fields,
        ]
        return keys, args

    def _creation_micros(self, created_at: int) -> int:
        """The microsecond of ``created_at`` the session opened in: of this
        host's clock when it is in that second, and in this process always
        later than the last one (a frozen or given clock still orders the
        sessions it opens)."""
        real = time.time_ns() // 1000
        micros = real % 1_000_000 if real // 1_000_000 == created_at else 0
        with self._stamp_lock:
            second, last = SessionStore._last_stamp
            if second == created_at and micros <= last:
                micros = min(last + 1, 999_999)
            SessionStore._last_stamp = (created_at, micros)
        return micros

    def signed_in_from(self, user_id: str, group: str, *, since: int) -> bool:
        """Whether the user signed in from ``group`` (see :func:`address_group`) since then."""
        with self._available():
            seen = self.client.hget(self.known_key(user_id), "a:" + group)
        return seen is not None and int(cast(str, seen)) >= since

    def list_sessions(self, user_id: str, *, now: int) -> list[Session]:
        """Every live session of a user (unordered); one round trip.

        With an idle timeout, sessions found idle too long are revoked
        (reason ``idle``) instead of listed.
        """
        args = [
            now,
            self.session_key(user_id, ""),
            self.policy.idle_timeout or 0,
            *self._event_args(now, Actor()),
        ]
        with self._available():
            keys = [self.index_key(user_id), self.events_key(user_id), *self.event_keys(user_id)]
            flat, recorded, interned = self._run("list", keys, args)
        self._recorded(user_id, recorded)
        found = agents_of(interned)
        self.agent_texts.learn(found)
        agents = self.agent_texts.together(found)
        sessions = []
        for i in range(0, len(flat), 2):
            values = flat[i + 1]
            raw = dict(zip(values[::2], values[1::2], strict=True))
            sessions.append(session_from_hash(user_id, str(flat[i]), raw, agents))
        return sessions

    def rename(
        self, user_id: str, session_id: str, name: str | None, *, seen_since: int = 0
    ) -> Session | None:
        """Set or clear a session's name; the session as it is now, or
        ``None`` when there is no such session (or it was last seen before
        ``seen_since``: dead by the idle timeout). One round trip."""
        named = pieces(FIELDS["name"], name) if name is not None else {}
        args = [seen_since, *(item for pair in named.items() for item in pair)]
        keys = [self.session_key(user_id, session_id), self.agents_key(user_id)]
        with self._available():
            result = self._run("rename", keys, args)
        if not result:
            return None
        flat, agent = result
        return self._read_back(user_id, session_id, flat, agent)

    def _read_back(self, user_id: str, session_id: str, flat: list[Any], agent: Any) -> Session:
        """The session a script read back: its HGETALL and its user agent's
        JSON text when it refers to one by digest (else false)."""
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        ref = raw.get(AGENT_REF)
        found = {ref: agent} if ref is not None and agent else {}
        self.agent_texts.learn(found)
        return session_from_hash(user_id, session_id, raw, self.agent_texts.together(found))

    def revoke(
        self,
        user_id: str,
        session_ids: Sequence[str] | None,
        *,
        now: int,
        reason: str,
        actor: Actor,
        keep: str | None = None,
        current: str | None = None,
        current_reason: str = "logout",
    ) -> list[str]:
        """Delete sessions and record ``session.revoked`` for each; atomic.

        :param session_ids: the sessions to revoke; ``None`` for all of them.
        :param keep: a session id to spare (revoke "all others").
        :param current: the caller's own session, recorded with
            ``current_reason`` instead of ``reason``.
        :returns: the ids of the sessions revoked.
        """
        for why in (reason, current_reason):
            # The script writes reasons into event JSON as they are.
            if not _REASON_RE.fullmatch(why):
                raise ValueError(f"a revoke reason is lowercase letters and '_', got {why!r}")
        keys = [self.index_key(user_id), self.events_key(user_id), *self.event_keys(user_id)]
        args = [
            now,
            self.session_key(user_id, ""),
            *self._event_args(now, actor),
            reason,
            keep or "",
            current or "",
            current_reason,
            *(session_ids or ()),
        ]
        if session_ids is not None and not session_ids:
            return []
        with self._available():
            return [str(sid) for sid in self._run("revoke", keys, args)]

    # -- reviews ("Was this you?") ---------------------------------------------

    def confirm(
        self, user_id: str, session_id: str, *, caller: str, now: int, actor: Actor, seen_since: int
    ) -> Session | ReviewRefused:
        """Mark a flagged session confirmed by the user, recording
        ``session.confirmed`` the first time; the session as it is now, or why
        nothing changed. Atomic: one round trip (``confirm.lua``).

        :param caller: the session the answer comes from.
        :param seen_since: sessions last seen before it are dead (idle timeout).
        """
        keys = [
            self.session_key(user_id, session_id),
            self.session_key(user_id, caller),
            self.events_key(user_id),
            self.known_key(user_id),
            *self.event_keys(user_id),
        ]
        args = [now, *self._event_args(now, actor), seen_since, session_id, caller]
        with self._available():
            result = self._run("confirm", keys, args)
        if not isinstance(result, list):
            return ReviewRefused(int(result))
        flat, agent, *recorded = result
        self._recorded(user_id, recorded)
        return self._read_back(user_id, session_id, flat, agent)

    def deny(
        self,
        user_id: str,
        session_id: str,
        *,
        caller: str,
        now: int,
        actor: Actor,
        seen_since: int,
        reason: str,
    ) -> list[str] | ReviewRefused:
        """Revoke a session the user says was not them and every other of
        theirs still pending review, never ``caller``'s; the ids revoked (the
        session's first), or why nothing changed. Atomic (``deny.lua``)."""
        keys = [self.index_key(user_id), self.events_key(user_id), *self.event_keys(user_id)]
        args = [
            now,
            self.session_key(user_id, ""),
            *self._event_args(now, actor),
            seen_since,
            session_id,
            caller,
            reason,
        ]
        with self._available():
            result = self._run("deny", keys, args)
        if not isinstance(result, list):
            return ReviewRefused(int(result))
        return [str(sid) for sid in result]

    # -- events -------------------------------------------------------------

    def events(self, user_id: str, *, limit: int) -> list[SecurityEvent]:
        """A user's security events, newest first: both lists, merged, in one round trip."""
        keys = [
            self.events_key(user_id),
            self.activity_events_key(user_id),
            self.agents_key(user_id),
        ]
        with self._available():
            main, activity, interned = cast(list[list[str]], self._run("history", keys, [limit]))
        found = agents_of(interned)
        self.agent_texts.learn(found)
        agents = self.agent_texts.together(found)
        lists = ([event_from_json(e, agents) for e in entries] for entries in (main, activity))
        return merge_events(*lists)[:limit]


def store_from_url(
    url: str | None,
    *,
    prefix: str,
    timeout: float,
    events_max: int,
    events_ttl: int,
    client: redis.Redis | None = None,
) -> SessionStore:
    """Build the store for a ``SESSIONSVC_REDIS_URL`` (``None``: embedded),
    or on ``client`` when one is given (the URL is then not used)."""
    if client is not None:
        given = client
        return SessionStore(
            lambda: given, prefix=prefix, events_max=events_max, events_ttl=events_ttl
        )
    return SessionStore(
        client_factory_from_url(url, timeout=timeout),
        prefix=prefix,
        events_max=events_max,
        events_ttl=events_ttl,
        where=describe(url),
    )
