"""The session and security-event models and their JSON shapes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Longest stored text value, in UTF-8 bytes. Redis keeps a hash compact
#: (listpack) only while every value is at most ``hash-max-listpack-value``
#: bytes (64 by default): parsed device names are cut to it, longer text
#: (a user agent, a name) is stored in pieces of it.
MAX_FIELD_BYTES = 64

#: Why a session was revoked, as ``session.revoked`` events and the
#: ``session_revoked`` signal say: by the user (``user``, ``others`` for
#: "sign out the others", ``logout`` for the calling session itself), by an
#: admin or the CLI (``admin``), over the cap (``evicted``), a refresh token
#: presented twice (``refresh_reuse``), an anomaly that revokes
#: (``anomaly``), unused too long (``idle``), a flagged sign-in the user
#: answered "this wasn't me" for (``denied``); and, in the standalone
#: service, a password change, a disabled or deleted user, changed roles.
#: A host app may pass reasons of its own to ``revoke`` and ``revoke_all``
#: (lowercase letters and ``_``, see :data:`REASON_CHARS`).
REVOCATION_REASONS = (
    "user",
    "logout",
    "others",
    "admin",
    "evicted",
    "refresh_reuse",
    "anomaly",
    "idle",
    "denied",
    "password_changed",
    "user_disabled",
    "user_deleted",
    "roles_changed",
)

#: The characters of a revocation reason (lowercase letters and ``_``), at most
#: REASON_MAX of them (the scripts write it into event JSON as it is).
REASON_CHARS, REASON_MAX = "[a-z_]", 32

#: Longest session name, in characters (after trimming).
MAX_NAME = 64

#: How many security events one page lists: by default, and at most.
EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX = 50, 200

#: How many users one page of the admins' listing holds: by default, and at most.
USERS_LIMIT_DEFAULT, USERS_LIMIT_MAX = 100, 500

#: How many audit rows one page of the admin API holds: by default, and at most.
AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX = 100, 500

#: The types of security events.
EVENT_TYPES = (
    "session.created",
    "session.revoked",
    "session.ip_changed",
    "session.anomaly",
    "session.confirmed",
    "password.changed",
)

#: A session's risk flags: a browser/OS family or a country the user never
#: signed in with before, an anomaly while in use, and a place that the
#: user's previous located activity could not have reached in time.
RISK_FLAGS = ("new_device", "new_country", "anomaly", "impossible_travel")

#: A session's review ("Was this you?"): none while it has no risk flags,
#: else pending until the user confirms it.
REVIEW_PENDING, REVIEW_CONFIRMED = "pending", "confirmed"

#: Impossible travel: from the user's previous located activity, faster than
#: this (km/h) over more than this distance (km).
TRAVEL_MAX_KMH, TRAVEL_MIN_KM = 1000, 500

#: What kind of device a user agent names.
DEVICE_TYPES = ("desktop", "mobile", "tablet", "bot", "other")


def clip(text: str) -> str:
    """At most :data:`MAX_FIELD_BYTES` of ``text``, cut at a character boundary."""
    return text.encode("utf-8", "surrogatepass")[:MAX_FIELD_BYTES].decode("utf-8", "ignore")


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address as sessions keep it: an IPv4 client seen through a
    dual-stack socket (``::ffff:a.b.c.d``, IPv4-mapped IPv6) is its IPv4
    address, so that it is one client of its own, wherever it is counted,
    remembered, located or shown. An IPv6 zone (``fe80::1%eth0``) is
    dropped: it names an interface of the host that saw the address, and
    what a proxy forwards is text a client may have made up, of any length
    (the audit table keeps 64 characters of an address).

    :raises ValueError: ``text`` is not an IPv4 or IPv6 address.
    """
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def isotime(epoch: int | None) -> str | None:
    """UTC, ISO 8601, second precision, ``Z`` suffix."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Device:
    """What the user agent said, parsed once when the session opened."""

    type: str = "other"
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    os_version: str | None = None

    @property
    def label(self) -> str | None:
        """A short human label such as ``Chrome 120 on Windows 10``."""
        browser = self.browser
        if browser and self.browser_version:
            browser = f"{browser} {self.browser_version.split('.')[0]}"
        system = self.os
        if system and self.os_version:
            system = f"{system} {self.os_version}"
        if browser and system:
            return f"{browser} on {system}"
        return browser or system

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "browser": self.browser,
            "browser_version": self.browser_version,
            "os": self.os,
            "os_version": self.os_version,
            "label": self.label,
        }


@dataclass(frozen=True)
class Location:
    """Where an address is, as far as the GeoIP database knows."""

    country: str | None
    city: str | None
    #: Degrees, where the database has them (both or neither).
    latitude: float | None = None
    longitude: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "country": self.country,
            "city": self.city,
            "latitude": self.latitude,
            "longitude": self.longitude,
        }


@dataclass(frozen=True)
class Session:
    """One signed-in device of one user."""

    id: str
    user_id: str
    created_at: int
    last_seen_at: int
    expires_at: int
    ip: str | None
    created_ip: str | None
    user_agent: str | None
    device: Device = field(default_factory=Device)
    location: Location | None = None
    name: str | None = None
    #: The ``jti`` of the one refresh token that may still be used.
    refresh_jti: str | None = None
    #: ``new_device``, ``new_country`` (from the sign-in), ``anomaly``.
    risk: tuple[str, ...] = ()
    #: The account it was opened for (standalone service; see ``User.account``).
    account: str | None = None
    #: The RFC 7638 thumbprint of the key its tokens are bound to (DPoP), or ``None``.
    dpop_jkt: str | None = None
    #: When the user confirmed it was them (epoch s), or ``None``; an anomaly
    #: recorded later clears it.
    confirmed_at: int | None = None

    @property
    def review(self) -> str | None:
        """``None`` without risk flags, else ``"confirmed"`` or ``"pending"``."""
        if not self.risk:
            return None
        return REVIEW_CONFIRMED if self.confirmed_at is not None else REVIEW_PENDING

    def to_json(self, *, current: bool = False, idle_timeout: int | None = None) -> dict[str, Any]:
        """The Session object of the API.

        :param current: whether this is the session of the calling token.
        :param idle_timeout: seconds of allowed inactivity, if configured.
        """
        idle_expires = None
        if idle_timeout is not None:
            idle_expires = min(self.last_seen_at + idle_timeout, self.expires_at)
        return {
            "id": self.id,
            "current": current,
            "created_at": isotime(self.created_at),
            "last_seen_at": isotime(self.last_seen_at),
            "expires_at": isotime(self.expires_at),
            "ip": self.ip,
            "created_ip": self.created_ip,
            "user_agent": self.user_agent,
            "device": self.device.to_json(),
            "location": self.location.to_json() if self.location else None,
            "name": self.name,
            "idle_expires_at": isotime(idle_expires),
            "risk": list(self.risk),
            "review": self.review,
            "dpop_bound": self.dpop_jkt is not None,
        }


@dataclass(frozen=True)
class SecurityEvent:
    """One entry of a user's security history."""

    id: str
    type: str
    at: int
    session_id: str
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "at": isotime(self.at),
            "session_id": self.session_id,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class TokenPair:
    """What a login or a refresh hands back."""

    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str
    #: ``"DPoP"`` when both tokens are bound to the client's key, else ``"Bearer"``.
    token_type: str = "Bearer"  # noqa: S105 (a scheme name)

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "session_id": self.session_id,
        }


@dataclass(frozen=True)
class User:
    """A user of the standalone service's own user store."""

    id: str
    password_hash: str
    roles: tuple[str, ...] = ()
    #: The account behind the name: random, made when the user is created.
    #: Sessions carry it, so a name deleted and created again is another
    #: account, and nothing of the old one's reaches it.
    account: str = ""
    disabled: bool = False
    created_at: int | None = None
    password_changed_at: int | None = None
    #: Bumped by every change of the password, the roles or the disabled
    #: state (not by a hash upgraded to a newer scheme: the same password).
    #: A sign-in opens its session only if the record is still at the
    #: version it checked (see ``store/scripts/open.lua``).
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        """The API's User object."""
        return {
            "id": self.id,
            "roles": list(self.roles),
            "disabled": self.disabled,
            "created_at": isotime(self.created_at),
            "password_changed_at": isotime(self.password_changed_at),
        }
