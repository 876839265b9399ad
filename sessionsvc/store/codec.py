"""Session hashes and event entries to models, and back.

Field names are short: they are stored once per session. Text longer than
:data:`~sessionsvc.models.MAX_FIELD_BYTES` is stored in pieces (``ua``,
``ua1``, ``ua2``...): Redis keeps a hash compact (listpack) only while every
value is at most ``hash-max-listpack-value`` bytes (64 by default), and one
longer user agent would turn the whole hash into a hashtable of three times
the size.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from ..models import MAX_FIELD_BYTES, Device, Location, SecurityEvent, Session, User

#: What the access-token check reads: last seen, address, browser and OS
#: family, anomaly signature.
HOT_FIELDS = ("t", "ip", "b", "o", "an")

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
    "name": "n",
    "refresh_jti": "r",
    "account": "a",
}


def session_fields(session: Session) -> dict[str, Any]:
    """The hash fields of a new session (a missing field stands for ``None``)."""
    values: dict[str, Any] = {
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
        "expires_at": session.expires_at,
        "ip": session.ip,
        "created_ip": session.created_ip,
        "user_agent": session.user_agent,
        "device_type": session.device.type,
        "browser": session.device.browser,
        "browser_version": session.device.browser_version,
        "os": session.device.os,
        "os_version": session.device.os_version,
        "country": session.location.country if session.location else None,
        "city": session.location.city if session.location else None,
        "name": session.name,
        "refresh_jti": session.refresh_jti,
        "account": session.account,
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


def session_from_hash(user_id: str, session_id: str, raw: dict[str, str]) -> Session:
    """The session stored in hash ``raw``."""

    def get(name: str) -> str | None:
        return _joined(raw, FIELDS[name])

    location = None
    if get("country") or get("city"):
        location = Location(country=get("country"), city=get("city"))
    return Session(
        id=session_id,
        user_id=user_id,
        created_at=int(raw[FIELDS["created_at"]]),
        last_seen_at=int(raw[FIELDS["last_seen_at"]]),
        expires_at=int(raw[FIELDS["expires_at"]]),
        ip=get("ip"),
        created_ip=get("created_ip"),
        user_agent=get("user_agent"),
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
    )


def _risk(raw: dict[str, str]) -> tuple[str, ...]:
    """A stored session's risk flags: from its sign-in, and ``anomaly`` once seen."""
    flags = tuple(flag for flag in raw.get("rk", "").split(",") if flag)
    return (*flags, "anomaly") if "an" in raw else flags


def signature(device: Device, country: str) -> str:
    """What a request's device and country look like, in 12 characters.

    Kept on a session after an anomaly, so the same change is recorded once
    and then costs no more than a plain read.
    """
    text = f"{device.browser or ''}\0{device.os or ''}\0{country}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def event_head(now: int, ip: str | None, user_agent: str | None) -> tuple[str, str]:
    """The JSON start of the events a script records, and their id base.

    The scripts complete each event (see ``scripts/events.lua``).
    """
    head: dict[str, Any] = {"t": now}
    if ip:
        head["ip"] = ip
    if user_agent:
        head["ua"] = user_agent
    text = json.dumps(head, separators=(",", ":"))
    # Microseconds and a little randomness: ids stay unique across processes.
    event_id = f"{time.time_ns() // 1000}{secrets.token_hex(2)}"
    return text[:-1] + ",", event_id


def event_from_json(entry: str) -> SecurityEvent:
    """The event stored as ``entry`` in a user's event list."""
    fields: dict[str, Any] = json.loads(entry)
    return SecurityEvent(
        id=fields["i"],
        type=fields["k"],
        at=int(fields["t"]),
        session_id=fields["s"],
        ip=fields.get("ip"),
        user_agent=fields.get("ua"),
        detail={**fields.get("d", {}), **({"reason": fields["r"]} if "r" in fields else {})},
    )


def user_fields(user: User) -> list[Any]:
    """A user record as field/value pairs: hash, roles, account, times, disabled."""
    fields: list[Any] = ["p", user.password_hash, "a", user.account]
    if user.roles:
        fields += ["roles", roles_text(user.roles)]
    if user.created_at is not None:
        fields += ["c", user.created_at]
    if user.password_changed_at is not None:
        fields += ["pc", user.password_changed_at]
    if user.disabled:
        fields += ["d", "1"]
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
    )
