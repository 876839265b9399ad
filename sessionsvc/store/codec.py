"""Session hashes and event entries to models, and back.

Field names are short: they are stored once per session. Text longer than
:data:`~sessionsvc.models.MAX_FIELD_BYTES` is stored in pieces (``ua``,
``ua1``, ``ua2``...): Redis keeps a hash compact (listpack) only while every
value is at most ``hash-max-listpack-value`` bytes (64 by default), and one
longer user agent would turn the whole hash into a hashtable of three times
the size.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import threading
import time
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from ..models import (
    MAX_FIELD_BYTES,
    RISK_FLAGS,
    Device,
    Location,
    SecurityEvent,
    Session,
    User,
    clip,
)

#: What the access-token check reads: last seen, address, browser and OS
#: family, anomaly signature.
HOT_FIELDS = ("t", "ip", "b", "o", "an")

#: The microsecond of its second a session opened in: the order of sessions
#: opened in the same second, which eviction goes by (``open.lua``).
CREATED_MICROS = "cu"

#: When the user confirmed the session was them (epoch s): see ``Session.review``.
CONFIRMED = "rv"

#: Session attributes and their hash fields.
FIELDS: dict[str, str] = {
    "created_at": "c",
    "last_seen_at": "t",
    "expires_at": "x",
    "ip": "ip",
    "created_ip": "cip",
    "user_agent": "ua",
    "device_type": "dt",
    "browser": "b",
    "browser_version": "bv",
    "os": "o",
    "os_version": "ov",
    "country": "cc",
    "city": "cy",
    "coordinates": "ll",
    "name": "n",
    "refresh_jti": "r",
    "account": "a",
    "dpop_jkt": "k",
}


def session_fields(session: Session) -> dict[str, Any]:
    """The hash fields of a new session (a missing field stands for ``None``).

    ``cip`` is stored only when it is not the session's address, as it is
    when a session opens: a hash without it reads ``created_ip`` from ``ip``,
    and ``activity.lua`` writes it (the address before; ``''`` for none)
    before it changes ``ip``.
    """
    values: dict[str, Any] = {
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
        "expires_at": session.expires_at,
        "ip": session.ip,
        "created_ip": _created_ip(session),
        "user_agent": session.user_agent,
        "device_type": session.device.type,
        "browser": session.device.browser,
        "browser_version": session.device.browser_version,
        "os": session.device.os,
        "os_version": session.device.os_version,
        "country": session.location.country if session.location else None,
        "city": session.location.city if session.location else None,
        "coordinates": coordinates(session.location),
        "name": session.name,
        "refresh_jti": session.refresh_jti,
        "account": session.account,
        "dpop_jkt": session.dpop_jkt,
    }
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):
            fields.update(pieces(FIELDS[name], value))
        else:
            fields[FIELDS[name]] = value
    return fields


def _created_ip(session: Session) -> str | None:
    """What a new session's hash keeps in ``cip``: nothing when it is the
    session's address, ``""`` for none beside one."""
    if session.created_ip == session.ip:
        return None
    return session.created_ip or ""


def pieces(field: str, value: str) -> dict[str, str]:
    """``value`` as fields ``field``, ``field1``... of at most MAX_FIELD_BYTES each."""
    result: dict[str, str] = {}
    piece: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8", "surrogatepass"))
        if size + width > MAX_FIELD_BYTES:
            result[f"{field}{len(result) or ''}"] = "".join(piece)
            piece, size = [], 0
        piece.append(char)
        size += width
    result[f"{field}{len(result) or ''}"] = "".join(piece)
    return result


def _joined(raw: dict[str, str], field: str) -> str | None:
    if field not in raw:
        return None
    parts, i = [raw[field]], 1
    while f"{field}{i}" in raw:
        parts.append(raw[f"{field}{i}"])
        i += 1
    return "".join(parts)


#: A session's or an event's user agent by digest, when it is interned (see
#: :func:`agent_digest`).
AGENT_REF = "uh"

#: The user agents interned per user at most (``scripts/events.lua`` keeps
#: more whole where they are used): bounds what a client that changes its
#: user agent can make a user's agents hash hold.
AGENTS_MAX = 24

#: The longest user agent interned, as JSON text (bytes; 5 pieces of 64):
#: longer ones stay whole where they are used, so a user's agents hash holds
#: at most 121 fields (24 user agents and the time of the last look for
#: ones to drop) and stays a listpack (``hash-max-listpack-entries``, 128).
#: Browsers' user agents are 100-200 bytes, in-app browsers' up to ~300.
AGENT_TEXT_MAX = 320


def session_from_hash(
    user_id: str, session_id: str, raw: dict[str, str], agents: Mapping[str, str] | None = None
) -> Session:
    """The session stored in hash ``raw``; ``agents`` holds the user's
    interned user agents (digest to JSON text), at least the session's."""

    def get(name: str) -> str | None:
        return _joined(raw, FIELDS[name])

    user_agent = get("user_agent")
    if user_agent is None and AGENT_REF in raw:
        user_agent = agent_of(agents, raw[AGENT_REF])

    location = None
    if get("country") or get("city"):
        latitude, longitude = _point(get("coordinates"))
        location = Location(get("country"), get("city"), latitude, longitude)
    return Session(
        id=session_id,
        user_id=user_id,
        created_at=int(raw[FIELDS["created_at"]]),
        last_seen_at=int(raw[FIELDS["last_seen_at"]]),
        expires_at=int(raw[FIELDS["expires_at"]]),
        ip=get("ip"),
        created_ip=_stored_created_ip(raw),
        user_agent=user_agent,
        device=Device(
            type=get("device_type") or "other",
            browser=get("browser"),
            browser_version=get("browser_version"),
            os=get("os"),
            os_version=get("os_version"),
        ),
        location=location,
        name=get("name"),
        refresh_jti=get("refresh_jti"),
        risk=_risk(raw),
        account=get("account"),
        dpop_jkt=get("dpop_jkt"),
        confirmed_at=int(raw[CONFIRMED]) if CONFIRMED in raw else None,
    )


def _stored_created_ip(raw: dict[str, str]) -> str | None:
    """The address a stored session opened from: ``cip`` (``""`` for none),
    or without it the session's address, never changed since it opened."""
    if FIELDS["created_ip"] not in raw:
        return _joined(raw, FIELDS["ip"])
    return _joined(raw, FIELDS["created_ip"]) or None


def _point_of(location: Location | None) -> tuple[float, float] | None:
    """A location's latitude and longitude, when it has both."""
    if location is None or location.latitude is None or location.longitude is None:
        return None
    return location.latitude, location.longitude


def coordinates(location: Location | None) -> str | None:
    """A location's coordinates as stored (``"lat,lon"``), or ``None`` without them."""
    point = _point_of(location)
    return None if point is None else f"{point[0]:.4f},{point[1]:.4f}"


def _point(text: str | None) -> tuple[float | None, float | None]:
    try:
        latitude, longitude = (float(part) for part in (text or "").split(","))
    except ValueError:
        return None, None
    return latitude, longitude


def place(location: Location | None) -> str:
    """What the scripts compare for impossible travel: a located place with
    coordinates as compact JSON, or ``""``."""
    point = _point_of(location)
    if location is None or point is None:
        return ""
    values: dict[str, float | str] = {"la": point[0], "lo": point[1]}
    if location.country:
        values["cc"] = location.country
    if location.city:
        values["cy"] = clip(location.city)
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def _risk(raw: dict[str, str]) -> tuple[str, ...]:
    """A stored session's risk flags, in :data:`RISK_FLAGS` order: from its
    sign-in, ``anomaly`` once a change was seen, ``impossible_travel`` once
    the session was used from a place too far from the last one."""
    flags = {flag for flag in raw.get("rk", "").split(",") if flag}
    if "an" in raw:
        flags.add("anomaly")
    if "at" in raw:
        flags.add("impossible_travel")
    return tuple(flag for flag in RISK_FLAGS if flag in flags)


def signature(device: Device, country: str) -> str:
    """What a request's device and country look like, in 12 characters.

    Kept on a session after an anomaly, so the same change is recorded once
    and then costs no more than a plain read.
    """
    text = f"{device.browser or ''}\0{device.os or ''}\0{country}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def agent_digest(user_agent: str) -> str:
    """The digest that stands for a user agent where it is interned: 16
    characters (96 bits of BLAKE2b), so that no two user agents share one
    by chance, anywhere: a digest stands for one text, and a process may
    keep what it has read (:class:`AgentTexts`). Two texts with one digest
    can only be made on purpose (some 2**48 tries), and both by whoever
    sends them; the scripts still check the text behind a digest before
    they use it, so one taken by another text in the user's hash never
    stands for it (the text is kept whole)."""
    raw = hashlib.blake2b(user_agent.encode("utf-8", "surrogatepass"), digest_size=12).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii")


class AgentTexts:
    """The user agents this process knows by digest (JSON text), at most
    ``size``: a session read whole (``HGETALL``) is answered without a
    second read once its user agent was seen. Only a text whose digest is
    the one it is kept under enters, so what it holds is true for every
    user; the oldest entry leaves first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._texts: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, ref: str) -> str | None:
        """The JSON text of digest ``ref``, if this process knows it."""
        return self._texts.get(ref)

    def together(self, found: Mapping[str, str]) -> Mapping[str, str]:
        """``found`` (what a script read), then what this process knows: a
        reader answers the same whichever way it read."""
        return ChainMap(dict(found), self._texts)

    def learn(self, agents: Mapping[str, str]) -> None:
        """Keep these texts (digest to JSON text), those that are what their digest says."""
        for ref, text in agents.items():
            if ref in self._texts:
                continue
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if not isinstance(value, str) or agent_digest(value) != ref:
                continue
            with self._lock:
                while len(self._texts) >= self._size:
                    del self._texts[next(iter(self._texts))]
                self._texts[ref] = text


def agent_of(agents: Mapping[str, str] | None, ref: str) -> str | None:
    """The user agent interned under ``ref``; ``None`` when it is not there
    (the hash lost by hand or to eviction: the only way, see ``events.lua``)
    or not a JSON string (written by hand)."""
    text = agents.get(ref) if agents else None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def agents_of(flat: list[str]) -> dict[str, str]:
    """Interned user agents as a script returns them: digest, text, ..."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


#: This process's count of script runs that record events (see event_head).
_RUNS = itertools.count(1)

#: Event types as stored (``"k"``): one letter each (``scripts/events.lua``
#: keeps the same table). Events stored before carry the type whole, which
#: reads as itself.
TYPE_CODES: dict[str, str] = {
    "session.created": "c",
    "session.revoked": "r",
    "session.ip_changed": "i",
    "session.anomaly": "a",
    "session.confirmed": "v",
    "password.changed": "p",
}
_TYPES = {code: kind for kind, code in TYPE_CODES.items()}


def event_head(now: int, ip: str | None, user_agent: str | None) -> tuple[str, str]:
    """The JSON start of the events a script records, and their id base.

    The scripts complete each event (see ``scripts/events.lua``). The id
    starts with the microseconds it was made at: when their second is
    ``now``, as it is but for a caller's own clock, the event keeps no
    ``"t"`` of its own (:func:`event_time`).
    """
    # Microseconds, this process's count (orders runs of one process even
    # within one microsecond), and a little randomness: ids stay unique
    # across processes.
    micros = time.time_ns() // 1000
    event_id = f"{micros}.{next(_RUNS):x}{secrets.token_hex(2)}"
    head: dict[str, Any] = {} if micros // 1_000_000 == now else {"t": now}
    if ip:
        head["ip"] = ip
    if user_agent:
        # The user agent last, its digest right before it: the scripts
        # intern it by cutting the head there (see events.lua).
        if len(json.dumps(user_agent)) <= AGENT_TEXT_MAX:
            head[AGENT_REF] = agent_digest(user_agent)
        head["ua"] = user_agent
    text = json.dumps(head, separators=(",", ":"))
    return text[:-1] + ("," if head else ""), event_id


def event_time(fields: Mapping[str, Any]) -> int:
    """When a stored event was recorded (epoch s): its ``"t"``, or without
    one the second its id was made in (see :func:`event_head`)."""
    if "t" in fields:
        return int(fields["t"])
    micros = str(fields["i"]).partition(".")[0]
    return int(micros) // 1_000_000


def event_from_json(entry: str, agents: Mapping[str, str] | None = None) -> SecurityEvent:
    """The event stored as ``entry`` in a user's event list or a stream, in
    either format (type whole and ``"t"``, or a type code and the time in the
    id); ``agents`` holds the user's interned user agents (digest to JSON text)."""
    fields: dict[str, Any] = json.loads(entry)
    user_agent = fields.get("ua")
    if user_agent is None and AGENT_REF in fields:
        user_agent = agent_of(agents, fields[AGENT_REF])
    return SecurityEvent(
        id=fields["i"],
        type=_TYPES.get(fields["k"], fields["k"]),
        at=event_time(fields),
        session_id=fields["s"],
        ip=fields.get("ip"),
        user_agent=user_agent,
        detail={**fields.get("d", {}), **({"reason": fields["r"]} if "r" in fields else {})},
    )


def _stamp(event: SecurityEvent) -> tuple[tuple[int, int], str, int]:
    """An event id's parts (see :func:`event_head`): when its script ran
    (microseconds, and the process's count of runs), the run, and the
    event's number within the run."""
    run, _, seq = event.id.rpartition("-")
    micros, dot, rest = run.partition(".")
    count = int(rest[:-4], 16) if dot and rest[:-4] else 0
    if not dot:  # ids of older releases: microseconds, then 4 hex digits
        micros = run[:-4]
    when = (int(micros) if micros.isdigit() else 0, count)
    return when, run, (int(seq) if seq.isdigit() else 0)


def _newer(a: SecurityEvent, b: SecurityEvent) -> bool:
    """Whether ``a`` was recorded after ``b``: by time, then by when its script
    ran, and within one run by its number; a tie keeps ``b`` first."""
    if a.at != b.at:
        return a.at > b.at
    (a_when, a_run, a_seq), (b_when, b_run, b_seq) = _stamp(a), _stamp(b)
    if a_when != b_when:
        return a_when > b_when
    return a_run == b_run and a_seq > b_seq


def merge_events(main: list[SecurityEvent], activity: list[SecurityEvent]) -> list[SecurityEvent]:
    """A user's two event lists (each newest first) as one, newest first."""
    merged: list[SecurityEvent] = []
    i = j = 0
    while i < len(main) and j < len(activity):
        if _newer(activity[j], main[i]):
            merged.append(activity[j])
            j += 1
        else:
            merged.append(main[i])
            i += 1
    return merged + main[i:] + activity[j:]


def user_fields(user: User) -> list[Any]:
    """A user record as field/value pairs: hash, roles, account, times, disabled, version."""
    fields: list[Any] = ["p", user.password_hash, "a", user.account]
    if user.roles:
        fields += ["roles", roles_text(user.roles)]
    if user.created_at is not None:
        fields += ["c", user.created_at]
    if user.password_changed_at is not None:
        fields += ["pc", user.password_changed_at]
    if user.disabled:
        fields += ["d", "1"]
    if user.version:
        fields += ["v", user.version]
    return fields


def roles_text(roles: tuple[str, ...] | list[str]) -> str:
    """Roles as stored: comma-separated."""
    return ",".join(roles)


def roles_of(text: str) -> tuple[str, ...]:
    return tuple(role for role in text.split(",") if role)


def user_from_hash(user_id: str, raw: dict[str, str]) -> User | None:
    """The user stored in hash ``raw``; ``None`` for no (or no whole) record."""
    if not raw or "p" not in raw:
        return None
    return User(
        id=user_id,
        password_hash=raw["p"],
        roles=roles_of(raw.get("roles", "")),
        account=raw.get("a", ""),
        disabled=raw.get("d") == "1",
        created_at=int(raw["c"]) if "c" in raw else None,
        password_changed_at=int(raw["pc"]) if "pc" in raw else None,
        version=int(raw.get("v", 0)),
    )
