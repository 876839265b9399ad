"""The session store: the only module that talks to Redis.

Layout (``P`` is the key prefix, ``T`` the user's hash tag, see :func:`user_tag`)::

    P:{T}:s:<sid>   hash    one session; TTL = time left until it expires
    P:{T}:idx       zset    the user's session ids scored by expiry; pruned
                            on every write, expires with its last session
    P:{T}:ev        list    the user's security events (JSON), newest first, capped
    P:{T}:known     hash    the user's sign-in history (device families,
                            countries) behind the risk flags; bounded
    P:{T}:user      hash    a user of the standalone service's user store
    P:rl:...        string  login rate-limit counters (flask-limiter's keys)

Every key of one user shares the hash tag ``{T}``, so each multi-key
operation below is legal on Redis Cluster. Every operation that must be
atomic is one Lua script, which is also one round trip.

Scripts that walk a user's index build that user's session keys themselves
(``ARGV`` holds the key prefix ``P:{T}:s:``) instead of declaring each in
``KEYS``: the ids are only known inside the script. This is deliberate and
safe on Cluster because every such key carries the declared keys' hash tag,
so it lives in the same slot on the same node.
"""

from __future__ import annotations

import base64
import builtins
import enum
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from . import metrics
from .errors import StoreUnavailable
from .models import Device, Location, SecurityEvent, Session, User
from .settings import ConfigError

logger = logging.getLogger("sessionsvc")

#: Redis errors that mean "the store cannot answer now": connection loss,
#: time-outs, failover, but also OOM, ACL or persistence refusals. Whatever
#: Redis says, a session that cannot be checked is not served: 503.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)
# Errors that are expected in an outage; anything else is also logged with
# its message, since it may point at a bug or a misconfiguration.
_OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# What the access-token check reads: last seen, address, browser and OS
# family, anomaly signature.
_HOT_FIELDS = ("t", "ip", "b", "o", "an")

# Session hash fields: short names keep a session hash small in Redis.
_FIELDS: dict[str, str] = {
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
}

# An event is one JSON string in the user's capped list, newest first. Python
# encodes what it knows (EVENT_HEAD: '{"t":<epoch>,"ip":...,"ua":...,') and
# the script appends what only it knows: type, session id, reason (fixed
# vocabularies and our own ids, nothing to escape), an id made of EVENT_ID
# and a counter, and a detail object the script builds with cjson. A list
# rather than a stream: a new stream costs Redis 7 a preallocated 4 KiB node
# per user, a short list a few hundred bytes. Every event a script records
# is also returned (`recorded`), so the caller can log and signal it.
_EVENT_LUA = """
local event_seq = 0
local recorded = {}
local function event(kind, sid, reason, detail)
  event_seq = event_seq + 1
  local e = EVENT_HEAD .. '"k":"' .. kind .. '","s":"' .. sid .. '","i":"'
    .. EVENT_ID .. '-' .. event_seq .. '"'
  if reason ~= '' then e = e .. ',"r":"' .. reason .. '"' end
  if detail and detail ~= '' then e = e .. ',"d":' .. detail end
  e = e .. '}'
  redis.call('LPUSH', KEYS[EV], e)
  recorded[#recorded+1] = e
end
-- Capped, and kept EVENTS_TTL after the last one: events outlive sessions.
local function keep_events()
  redis.call('LTRIM', KEYS[EV], 0, tonumber(EVENTS_MAX) - 1)
  redis.call('EXPIRE', KEYS[EV], EVENTS_TTL)
end
-- A JSON string, or null for a missing or empty value.
local function json_str(s)
  if not s or s == '' then return 'null' end
  return cjson.encode(s)
end
local function from_to(before, after)
  return '{"from":' .. json_str(before) .. ',"to":' .. json_str(after) .. '}'
end
"""


_REASON_RE = re.compile(r"[a-z_]{1,32}")


def _script(body: str, *, ev: int, argv: dict[str, int]) -> str:
    """Prefix a script with the named ARGV slots the event helper reads."""
    head = [f"local EV = {ev}"]
    head += [f"local {name} = ARGV[{index}]" for name, index in argv.items()]
    return "\n".join(head) + "\n" + _EVENT_LUA + body


# KEYS: session, index, events, known devices.
# ARGV: now, expires_at, max sessions, session key prefix, events max,
#       events ttl, event head, event id, sid, device family or '', country
#       or '', field/value pairs...
# Returns false on an id clash, else {risk flags, evicted session ids...}.
_OPEN = _script(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local sid = ARGV[9]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', NOW)
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
-- Risk: a browser/OS family or a country this user never signed in with
-- (a user's very first sign-in has nothing to compare with). The history
-- is small and bounded: one field per family or country.
local risk = {}
local history = redis.call('EXISTS', KEYS[4]) == 1
local function remember(field, flag)
  if redis.call('HEXISTS', KEYS[4], field) == 1 then return end
  if history then risk[#risk+1] = flag end
  if redis.call('HLEN', KEYS[4]) < KNOWN_MAX then redis.call('HSET', KEYS[4], field, NOW) end
end
if ARGV[10] ~= '' then remember('d:' .. ARGV[10], 'new_device') end
if ARGV[11] ~= '' then remember('c:' .. ARGV[11], 'new_country') end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('EXPIRE', KEYS[4], EVENTS_TTL) end
local risk_text = table.concat(risk, ',')
if risk_text ~= '' then redis.call('HSET', KEYS[1], 'rk', risk_text) end
redis.call('EXPIREAT', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], sid)
if risk_text ~= '' then
  event('session.created', sid, '', '{"risk":["' .. table.concat(risk, '","') .. '"]}')
else
  event('session.created', sid, '', '')
end
local evicted = {}
local max = tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[2]) > max then
  local live = {}
  for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if other ~= sid then
      local seen = redis.call('HGET', ARGV[4] .. other, 't')
      if seen then live[#live+1] = {tonumber(seen), other}
      else redis.call('ZREM', KEYS[2], other) end
    end
  end
  table.sort(live, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i = 1, #live + 1 - max do
    local victim = live[i][2]
    redis.call('DEL', ARGV[4] .. victim)
    redis.call('ZREM', KEYS[2], victim)
    event('session.revoked', victim, 'evicted', '')
    evicted[#evicted+1] = victim
  end
end
keep_events()
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[2], last[2])
return {risk_text, unpack(evicted)}
""",
    ev=3,
    argv={"NOW": 1, "EVENTS_MAX": 5, "EVENTS_TTL": 6, "EVENT_HEAD": 7, "EVENT_ID": 8},
).replace("KNOWN_MAX", "100")

# Activity on a session: the revocation check's slow path (a write is due,
# the address or the device changed, the idle timeout may have passed) and
# every refresh-token check, in one atomic round trip. It never recreates a
# session that is gone.
# KEYS: session, index, events.
# ARGV: now, touch interval, ip or '', browser, os (the request's families;
#       both '' when there is no request to compare), '1' when location is
#       on, the request's country, city, anomaly signature, '1' to revoke on
#       an anomaly, idle timeout (0: none), sid, events max, events ttl,
#       event head, event id, presented refresh jti or '', new refresh jti
#       or '', '1' when the request's device is known (compare families).
# Returns {status, expires_at, events recorded...}; status 0 gone, 1 alive,
# 2 refresh token reused, 3 idle, 4 anomaly (the last three: now revoked).
_ACTIVITY = _script(
    """
local v = redis.call('HMGET', KEYS[1], 't', 'ip', 'b', 'o', 'cc', 'oc', 'an', 'x', 'r')
if not v[1] then return {0, 0} end
local sid = ARGV[12]
local function revoke(status, reason)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], sid)
  event('session.revoked', sid, reason, '')
  keep_events()
  return {status, 0, unpack(recorded)}
end
if ARGV[17] ~= '' and v[9] ~= ARGV[17] then return revoke(2, 'refresh_reuse') end
local idle = tonumber(ARGV[11])
if idle > 0 and tonumber(NOW) - tonumber(v[1]) >= idle then return revoke(3, 'idle') end
local write = {}
-- Anomaly: another browser/OS family than the session opened with, or
-- another country than it was first seen in. Each distinct change is
-- recorded once (the signature of the last one is kept in 'an').
local changed = {}
if ARGV[19] == '1' and (v[3] or v[4]) then
  if (v[3] or '') ~= ARGV[4] then
    changed[#changed+1] = '"browser":' .. from_to(v[3], ARGV[4])
  end
  if (v[4] or '') ~= ARGV[5] then
    changed[#changed+1] = '"os":' .. from_to(v[4], ARGV[5])
  end
end
local origin = v[6] or v[5]
if ARGV[6] == '1' and ARGV[7] ~= '' and origin and origin ~= ARGV[7] then
  changed[#changed+1] = '"country":' .. from_to(origin, ARGV[7])
end
if #changed > 0 and v[7] ~= ARGV[9] then
  event('session.anomaly', sid, '', '{' .. table.concat(changed, ',') .. '}')
  if ARGV[10] == '1' then return revoke(4, 'anomaly') end
  write[#write+1] = 'an'; write[#write+1] = ARGV[9]
end
if ARGV[3] ~= '' and ARGV[3] ~= v[2] then
  event('session.ip_changed', sid, '', from_to(v[2], ARGV[3]))
  write[#write+1] = 'ip'; write[#write+1] = ARGV[3]
  if ARGV[6] == '1' and ARGV[7] ~= v[5] then
    -- The location follows the address; the first one is kept to compare.
    if v[5] and not v[6] then write[#write+1] = 'oc'; write[#write+1] = v[5] end
    local gone = {}
    if ARGV[7] ~= '' then write[#write+1] = 'cc'; write[#write+1] = ARGV[7]
    else gone[#gone+1] = 'cc' end
    if ARGV[8] ~= '' then write[#write+1] = 'cy'; write[#write+1] = ARGV[8]
    else gone[#gone+1] = 'cy' end
    if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
  end
end
if ARGV[18] ~= '' then
  write[#write+1] = 'r'; write[#write+1] = ARGV[18]
  write[#write+1] = 't'; write[#write+1] = NOW
elseif tonumber(NOW) - tonumber(v[1]) >= tonumber(ARGV[2]) then
  write[#write+1] = 't'; write[#write+1] = NOW
end
if #write > 0 then redis.call('HSET', KEYS[1], unpack(write)) end
if #recorded > 0 then keep_events() end
return {1, tonumber(v[8]), unpack(recorded)}
""",
    ev=3,
    argv={"NOW": 1, "EVENTS_MAX": 13, "EVENTS_TTL": 14, "EVENT_HEAD": 15, "EVENT_ID": 16},
)

# KEYS: index, events. ARGV: now, session key prefix, idle timeout (0: none),
# events max, events ttl, event head, event id.
# Returns {{sid, {field, value, ...}, sid, ...}, {events recorded...}}: every
# live session; a session found idle too long is revoked (reason 'idle').
_LIST = _script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', NOW)
local idle = tonumber(ARGV[3])
local out = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. sid
  local h = redis.call('HGETALL', key)
  if #h == 0 then redis.call('ZREM', KEYS[1], sid)
  elseif idle > 0 and tonumber(NOW) - tonumber(redis.call('HGET', key, 't')) >= idle then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], sid)
    event('session.revoked', sid, 'idle', '')
  else out[#out+1] = sid; out[#out+1] = h end
end
if #recorded > 0 then keep_events() end
return {out, recorded}
""",
    ev=2,
    argv={"NOW": 1, "EVENTS_MAX": 4, "EVENTS_TTL": 5, "EVENT_HEAD": 6, "EVENT_ID": 7},
)

# KEYS: index, events.
# ARGV: now, session key prefix, events max, events ttl, event head, event id,
#       reason, sid to keep or '', current sid or '', reason for the current
#       session, then the sids to revoke (none: every session in the index).
# Returns the ids of the sessions it revoked.
_REVOKE = _script(
    """
local targets
if #ARGV >= 11 then targets = {unpack(ARGV, 11)}
else targets = redis.call('ZRANGE', KEYS[1], 0, -1) end
local revoked = {}
for _, sid in ipairs(targets) do
  if sid ~= ARGV[8] then
    redis.call('ZREM', KEYS[1], sid)
    if redis.call('DEL', ARGV[2] .. sid) == 1 then
      revoked[#revoked+1] = sid
      if sid == ARGV[9] then event('session.revoked', sid, ARGV[10], '')
      else event('session.revoked', sid, ARGV[7], '') end
    end
  end
end
if #revoked > 0 then keep_events() end
return revoked
""",
    ev=2,
    argv={"NOW": 1, "EVENTS_MAX": 3, "EVENTS_TTL": 4, "EVENT_HEAD": 5, "EVENT_ID": 6},
)


# HSET on a missing key would create it: only live sessions are renamed.
# KEYS: session. ARGV: the name's pieces as field/value pairs (none clears
# it; a 64-character name is at most 256 bytes: 4 pieces). Returns 1 when found.
_RENAME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'n', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7')
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
"""


# A user record is written whole or not at all. KEYS: user. ARGV: fields.
_CREATE_USER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


@functools.lru_cache(maxsize=4096)
def user_tag(user_id: str) -> str:
    """The hash tag of a user: URL-safe base64 of the id's bytes.

    Base64 is injective and has no ``{``, ``}`` or ``:``, so distinct user
    ids never share keys and the tag is always a whole Cluster hash tag.
    ``surrogatepass`` keeps ids with lone surrogates (valid JSON strings)
    encodable, and still injective.
    """
    raw = user_id.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


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


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    #: The session's absolute expiry, when it is active (refresh checks only).
    expires_at: int | None = None


_ALIVE = CheckResult(CheckStatus.ACTIVE)
_GONE = CheckResult(CheckStatus.GONE)


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


ClientFactory = Callable[[], "redis.Redis"]
#: Receives the security events a script recorded: ``(user_id, events)``.
EventSink = Callable[[str, "builtins.list[SecurityEvent]"], None]


#: What the rate limiter's own cluster client takes over from the store's:
#: where and as whom to connect, and how long to wait (``ssl_*`` too).
#: Not the store's decoding, nor the callbacks bound to its client.
_LIMITER_CLUSTER_OPTIONS = frozenset(
    (
        "username",
        "password",
        "credential_provider",
        "ssl",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
    )
)


class SessionStore:
    """Sessions, indexes, events and users in Redis.

    The client is created lazily, on first use in each process, so a
    gunicorn master can build the app before forking workers.

    :param client_factory: builds the Redis client (``decode_responses=True``).
    :param prefix: namespace of every key.
    :param events_max: security events kept per user.
    :param events_ttl: seconds a user's events (and sign-in history)
        outlive their last change.
    :param policy: what activity does (touch interval, idle timeout,
        anomalies, location).
    :param on_events: called with the events that activity or a listing
        recorded (ip changes, anomalies, idle revocations), to log and
        signal them.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        prefix: str,
        events_max: int = 1000,
        events_ttl: int = 30 * 86400,
        policy: Policy | None = None,
        on_events: EventSink | None = None,
    ) -> None:
        self._factory = client_factory
        self._prefix = prefix
        self._events_max = events_max
        self._events_ttl = events_ttl
        self.policy = policy or Policy()
        self.on_events = on_events
        self._client: redis.Redis | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._scripts: dict[str, Any] = {}

    # -- plumbing -----------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """The process's Redis client, created on first use after a fork."""
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    client = self._factory()
                    self._scripts = {
                        "open": client.register_script(_OPEN),
                        "activity": client.register_script(_ACTIVITY),
                        "list": client.register_script(_LIST),
                        "revoke": client.register_script(_REVOKE),
                        "rename": client.register_script(_RENAME),
                        "create_user": client.register_script(_CREATE_USER),
                    }
                    self._client, self._pid = client, pid
        assert self._client is not None
        return self._client

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = self.client
        script = self._scripts[name]
        try:
            # EVALSHA straight away: redis-py's Script wrapper costs more than
            # the script itself on the hot path.
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # A new, restarted or failed-over server has not cached it yet.
            client.script_load(script.script)
            return client.evalsha(script.sha, len(keys), *keys, *args)

    @contextmanager
    def _available(self) -> Iterator[None]:
        """Turn "the store cannot answer" into :class:`StoreUnavailable`."""
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc

    def _hgetall(self, key: str) -> dict[str, str]:
        # The client decodes responses: every value is a str.
        return cast(dict[str, str], self.client.hgetall(key))

    def _key(self, user_id: str, suffix: str) -> str:
        return f"{self._prefix}:{{{user_tag(user_id)}}}:{suffix}"

    def session_key(self, user_id: str, session_id: str) -> str:
        """The key of one session hash."""
        return self._key(user_id, "s:" + session_id)

    def index_key(self, user_id: str) -> str:
        """The key of a user's session index."""
        return self._key(user_id, "idx")

    def events_key(self, user_id: str) -> str:
        """The key of a user's security-event list."""
        return self._key(user_id, "ev")

    def user_key(self, user_id: str) -> str:
        """The key of a user record (standalone user store)."""
        return self._key(user_id, "user")

    def known_key(self, user_id: str) -> str:
        """The key of a user's sign-in history (device families, countries)."""
        return self._key(user_id, "known")

    def _event_args(self, now: int, actor: Actor) -> list[Any]:
        return [self._events_max, self._events_ttl, *_event_head(now, actor)]

    # -- sessions -----------------------------------------------------------

    def create(self, session: Session, *, max_sessions: int, actor: Actor) -> Opened | None:
        """Store a new session, record ``session.created``, evict over the cap.

        One atomic round trip, which also compares the session's device and
        country with the user's sign-in history (its risk flags). Returns
        ``None`` when the id is already taken (the caller draws a new one).
        """
        keys, args = self._open_call(session, max_sessions=max_sessions, actor=actor)
        with self._available():
            result = self._run("open", keys, args)
        if result is None:
            return None
        risk = tuple(flag for flag in str(result[0]).split(",") if flag)
        return Opened(risk, [str(victim) for victim in result[1:]])

    def _open_call(
        self, session: Session, *, max_sessions: int, actor: Actor
    ) -> tuple[builtins.list[str], builtins.list[Any]]:
        """The KEYS and ARGV of the open script for one session."""
        fields: builtins.list[Any] = []
        for name, value in _session_fields(session).items():
            fields += [name, value]
        uid, sid = session.user_id, session.id
        keys = [
            self.session_key(uid, sid),
            self.index_key(uid),
            self.events_key(uid),
            self.known_key(uid),
        ]
        device = session.device
        family = f"{device.browser or ''}|{device.os or ''}" if device.browser or device.os else ""
        args = [
            session.created_at,
            session.expires_at,
            max_sessions,
            self.session_key(uid, ""),
            *self._event_args(session.created_at, actor),
            sid,
            family,
            (session.location.country or "") if session.location else "",
            *fields,
        ]
        return keys, args

    def touch(
        self, user_id: str, session_id: str, *, now: int, actor: Actor | None = None
    ) -> CheckResult:
        """The access-token check: is the session alive? Records activity.

        Steady state is one plain ``HMGET``, as cheap as a blocklist ``GET``,
        which also reads what the request is compared with. Only when
        something is to be written or judged (the touch interval passed, a
        new address, another browser/OS family, the idle timeout) a second
        round trip runs the activity script, which decides atomically and
        never recreates a session that is gone.
        """
        key = self.session_key(user_id, session_id)
        client = self._client if self._pid == os.getpid() else None
        try:
            # The steady state, kept free of context managers: it runs on
            # every authenticated request.
            # execute_command straight away: hmget() only adds argument juggling.
            seen, last_ip, browser, system, mark = (client or self.client).execute_command(  # type: ignore[no-untyped-call]
                "HMGET", key, *_HOT_FIELDS
            )
        except UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc
        if seen is None:
            return _GONE
        policy = self.policy
        elapsed = now - int(seen)
        ip = actor.ip if actor is not None else None
        if (
            elapsed < policy.touch_interval
            and (policy.idle_timeout is None or elapsed < policy.idle_timeout)
            and (not ip or ip == last_ip)
        ):
            device = actor.device if actor is not None else None
            if (
                device is None
                or (browser is None and system is None)
                or (browser == device.browser and system == device.os)
                or (mark is not None and mark == _signature(device, self._country(ip)))
            ):
                return _ALIVE
        return self._activity(user_id, session_id, now=now, actor=actor)

    def check(
        self,
        user_id: str,
        session_id: str,
        *,
        now: int,
        actor: Actor | None = None,
        presented_jti: str | None = None,
        new_jti: str | None = None,
    ) -> CheckResult:
        """The refresh-token check: :meth:`touch` in one atomic round trip.

        :param presented_jti: the refresh token's ``jti``: if it is not the
            session's current one, the token was used before, and the whole
            session is revoked (reason ``refresh_reuse``).
        :param new_jti: rotate the session's refresh token to this ``jti``
            (atomically with the check above).
        """
        return self._activity(
            user_id,
            session_id,
            now=now,
            actor=actor,
            presented_jti=presented_jti or "",
            new_jti=new_jti or "",
        )

    def _activity(
        self,
        user_id: str,
        session_id: str,
        *,
        now: int,
        actor: Actor | None,
        presented_jti: str = "",
        new_jti: str = "",
    ) -> CheckResult:
        policy = self.policy
        actor = actor or Actor()
        device = actor.device
        location = self._locate(actor.ip)
        country = (location.country or "") if location else ""
        keys = [
            self.session_key(user_id, session_id),
            self.index_key(user_id),
            self.events_key(user_id),
        ]
        args = [
            now,
            policy.touch_interval,
            actor.ip or "",
            (device.browser or "") if device else "",
            (device.os or "") if device else "",
            "1" if policy.locate else "0",
            country,
            _short((location.city or "") if location else ""),
            _signature(device, country) if device else "",
            "1" if policy.revoke_on_anomaly else "0",
            policy.idle_timeout or 0,
            session_id,
            *self._event_args(now, actor),
            presented_jti,
            new_jti,
            "1" if device else "0",
        ]
        with self._available():
            result = self._run("activity", keys, args)
        status = CheckStatus(int(result[0]))
        self._recorded(user_id, result[2:])
        if status is not CheckStatus.ACTIVE:
            return _GONE if status is CheckStatus.GONE else CheckResult(status)
        return CheckResult(status, int(result[1]))

    def _locate(self, ip: str | None) -> Location | None:
        """Where an address is, when location lookup is on."""
        locate = self.policy.locate
        return locate(ip) if locate and ip else None

    def _country(self, ip: str | None) -> str:
        location = self._locate(ip)
        return (location.country or "") if location else ""

    def _recorded(self, user_id: str, entries: Sequence[str]) -> None:
        """Hand the events a script recorded to the sink, oldest first."""
        if entries and self.on_events is not None:
            self.on_events(user_id, [_event_from_json(entry) for entry in entries])

    def get(self, user_id: str, session_id: str) -> Session | None:
        """One session of one user, or ``None``."""
        with self._available():
            raw = self._hgetall(self.session_key(user_id, session_id))
        return _session_from_hash(user_id, session_id, raw) if raw else None

    def list(self, user_id: str, *, now: int) -> list[Session]:
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
            flat, recorded = self._run(
                "list", [self.index_key(user_id), self.events_key(user_id)], args
            )
        self._recorded(user_id, recorded)
        sessions = []
        for i in range(0, len(flat), 2):
            values = flat[i + 1]
            raw = dict(zip(values[::2], values[1::2], strict=True))
            sessions.append(_session_from_hash(user_id, str(flat[i]), raw))
        return sessions

    def rename(self, user_id: str, session_id: str, name: str | None) -> bool:
        """Set or clear a session's name; ``False`` when there is no such session."""
        with self._available():
            pieces = _pieces(_FIELDS["name"], name) if name is not None else {}
            args = [item for pair in pieces.items() for item in pair]
            found = self._run("rename", [self.session_key(user_id, session_id)], args)
        return bool(found)

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
    ) -> builtins.list[str]:
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
        keys = [self.index_key(user_id), self.events_key(user_id)]
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

    # -- events -------------------------------------------------------------

    def events(self, user_id: str, *, limit: int) -> builtins.list[SecurityEvent]:
        """A user's security events, newest first."""
        with self._available():
            entries = cast(
                builtins.list[str], self.client.lrange(self.events_key(user_id), 0, limit - 1)
            )
        return [_event_from_json(entry) for entry in entries]

    # -- users (standalone service) -------------------------------------------

    def get_user(self, user_id: str) -> User | None:
        """A user of the standalone user store, or ``None``."""
        with self._available():
            raw = self._hgetall(self.user_key(user_id))
        if not raw or "p" not in raw:
            return None
        roles = tuple(role for role in raw.get("roles", "").split(",") if role)
        return User(id=user_id, password_hash=raw["p"], roles=roles)

    def create_user(self, user: User) -> bool:
        """Add a user; ``False`` (and nothing changed) when the id is taken."""
        fields = ["p", user.password_hash]
        if user.roles:
            fields += ["roles", ",".join(user.roles)]
        with self._available():
            return bool(self._run("create_user", [self.user_key(user.id)], fields))

    # -- rate-limit counters ---------------------------------------------------

    def limiter_storage(self) -> tuple[str, dict[str, Any]]:
        """Flask-Limiter's ``storage_uri`` and ``storage_options`` for counters here.

        limits' Redis storage on this process's connection pool: the same
        server, credentials and timeouts as the sessions, also for an injected
        client, a Sentinel primary or the embedded store; keys under ``P:rl:``.
        redis-py's pool reconnects by itself in a forked worker.

        On Redis Cluster, limits' cluster storage, which always builds a
        cluster client of its own (and, like ours, connects when it is built,
        here at ``init_app``): given our client's startup nodes, credentials,
        TLS settings, timeouts and retries. A fixed-window counter is one key
        per command, so nothing it sends spans two slots.
        """
        client = self.client
        key_prefix = f"{self._prefix}:rl"
        if isinstance(client, RedisCluster):
            kwargs = client.get_connection_kwargs()
            options = {
                name: value
                for name, value in kwargs.items()
                if name in _LIMITER_CLUSTER_OPTIONS or name.startswith("ssl_")
            }
            startup = [ClusterNode(node.host, node.port) for node in client.startup_nodes]
            # The URL only selects limits' cluster storage; the options say where it is.
            return "redis+cluster://", {
                **options,
                "startup_nodes": startup,
                "retry": client.retry,
                "key_prefix": key_prefix,
            }
        # The URL only selects limits' Redis storage; the pool says where it is.
        pool = client.connection_pool
        return "redis://", {"connection_pool": pool, "key_prefix": key_prefix}

    # -- health -------------------------------------------------------------

    def close(self) -> None:
        """Close this process's connections, if any were made."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def load_scripts(self) -> None:
        """Cache every script on the server now (otherwise done on first use)."""
        client = self.client
        with self._available():
            for script in self._scripts.values():
                client.script_load(script.script)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        with self._available():
            self.client.ping()


def _unavailable(exc: Exception) -> StoreUnavailable:
    """Log why the store could not answer; the error to fail closed with."""
    if isinstance(exc, _OUTAGE_ERRORS):
        metrics.STORE_ERRORS.labels("outage").inc()
        logger.warning("session store unavailable: %s", type(exc).__name__)
    else:
        metrics.STORE_ERRORS.labels("refused").inc()
        logger.error("session store refused: %s: %s", type(exc).__name__, exc)
    return StoreUnavailable("The session store is unavailable; try again shortly.")


def _session_fields(session: Session) -> dict[str, Any]:
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
    }
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:  # a missing field stands for None
            continue
        if isinstance(value, str):
            fields.update(_pieces(_FIELDS[name], value))
        else:
            fields[_FIELDS[name]] = value
    return fields


#: Redis keeps a hash compact (listpack) only while every value is at most
#: ``hash-max-listpack-value`` bytes (64 by default); one longer user agent
#: would turn the whole hash into a hashtable of three times the size. Long
#: strings are therefore stored in pieces: ``ua``, ``ua1``, ``ua2``...
_PIECE_BYTES = 64


def _pieces(field: str, value: str) -> dict[str, str]:
    pieces: dict[str, str] = {}
    piece: builtins.list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8", "surrogatepass"))
        if size + width > _PIECE_BYTES:
            pieces[f"{field}{len(pieces) or ''}"] = "".join(piece)
            piece, size = [], 0
        piece.append(char)
        size += width
    pieces[f"{field}{len(pieces) or ''}"] = "".join(piece)
    return pieces


def _joined(raw: dict[str, str], field: str) -> str | None:
    if field not in raw:
        return None
    parts, i = [raw[field]], 1
    while f"{field}{i}" in raw:
        parts.append(raw[f"{field}{i}"])
        i += 1
    return "".join(parts)


def _session_from_hash(user_id: str, session_id: str, raw: dict[str, str]) -> Session:
    def get(name: str) -> str | None:
        return _joined(raw, _FIELDS[name])

    ip = get("ip")
    location = None
    if get("country") or get("city"):
        location = Location(country=get("country"), city=get("city"))
    return Session(
        id=session_id,
        user_id=user_id,
        created_at=int(raw[_FIELDS["created_at"]]),
        last_seen_at=int(raw[_FIELDS["last_seen_at"]]),
        expires_at=int(raw[_FIELDS["expires_at"]]),
        ip=ip,
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
    )


def _risk(raw: dict[str, str]) -> tuple[str, ...]:
    """A stored session's risk flags: from its sign-in, and ``anomaly`` once seen."""
    flags = tuple(flag for flag in raw.get("rk", "").split(",") if flag)
    return (*flags, "anomaly") if "an" in raw else flags


def _signature(device: Device, country: str) -> str:
    """What a request's device and country look like, in 12 characters.

    Kept on a session after an anomaly, so the same change is recorded once
    and then costs no more than a plain read.
    """
    text = f"{device.browser or ''}\0{device.os or ''}\0{country}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def _short(text: str) -> str:
    """At most 64 UTF-8 bytes: one piece of a hash field, see :func:`_pieces`."""
    return text.encode("utf-8", "surrogatepass")[:_PIECE_BYTES].decode("utf-8", "ignore")


def _event_head(now: int, actor: Actor) -> tuple[str, str]:
    """The JSON start of the events a script records, and their id base."""
    head: dict[str, Any] = {"t": now}
    if actor.ip:
        head["ip"] = actor.ip
    if actor.user_agent:
        head["ua"] = actor.user_agent
    text = json.dumps(head, separators=(",", ":"))
    # Microseconds and a little randomness: ids stay unique across processes.
    event_id = f"{time.time_ns() // 1000}{secrets.token_hex(2)}"
    return text[:-1] + ",", event_id


def _event_from_json(entry: str) -> SecurityEvent:
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


# -- building a store from a URL ----------------------------------------------


def _retry() -> Retry:
    # One immediate retry on a broken connection (a pooled socket that died
    # with a Redis restart); no backoff and no retry of timeouts, so an
    # outage answers 503 within the configured timeout.
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def _client_options(timeout: float) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": _retry(),
        "health_check_interval": 30,
    }


#: Seconds between two questions to the sentinels about where the primary
#: is, besides the one asked for every new connection.
SENTINEL_CHECK_INTERVAL = 1.0


class _SentinelPrimaryPool(SentinelConnectionPool):
    """A pool of connections to the Sentinel primary that notices a failover.

    redis-py asks the sentinels for the primary only when it opens a
    connection. After ``SENTINEL FAILOVER`` the old primary stays a primary
    until Sentinel reconfigures it as a replica (and closes its clients),
    about 10 s later; meanwhile pooled connections to it read stale sessions
    and write revocations that the resync then discards. Asking at most once
    per :data:`SENTINEL_CHECK_INTERVAL` closes idle connections to the old
    primary as soon as the sentinels name another (busy ones on release).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        # The first connection asks anyway.
        self._next_check = time.monotonic() + SENTINEL_CHECK_INTERVAL

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + SENTINEL_CHECK_INTERVAL
            try:
                self.get_master_address()  # type: ignore[no-untyped-call]
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                # Sentinels that cannot answer cannot name another primary:
                # keep the one we have, which answers for itself.
                logger.warning("sentinels unavailable: %s", type(exc).__name__)
        return super().get_connection(*args, **kwargs)


def client_factory_from_url(url: str | None, *, timeout: float) -> ClientFactory:
    """A factory of Redis clients for a ``SESSIONSVC_REDIS_URL``.

    ``redis://``, ``rediss://`` and ``unix://`` go to redis-py as they are;
    ``redis+cluster://host:port[,host:port...]`` builds a cluster client and
    ``redis+sentinel://host:port[,host:port...]/service[/db]`` asks the
    sentinels for the current primary. ``None`` is the embedded store.
    """
    if url is None:
        return _embedded_factory()
    scheme = urlsplit(url).scheme
    options = _client_options(timeout)
    if scheme in ("redis", "rediss", "unix"):
        try:
            parsed = parse_url(url)  # type: ignore[no-untyped-call]  # fail now, not on first use
        except ValueError as exc:
            raise ConfigError(f"SESSIONSVC_REDIS_URL is not a valid Redis URL: {exc}") from None
        if scheme != "unix" and urlsplit(url).path.strip("/") and "db" not in parsed:
            raise ConfigError("SESSIONSVC_REDIS_URL: the database must be a number")
        return lambda: redis.Redis.from_url(url, **options)
    if scheme in ("redis+cluster", "rediss+cluster"):
        hosts = _parse_multi_host(url)
        startup = [ClusterNode(host, port) for host, port in hosts.nodes]  # type: ignore[no-untyped-call]

        def cluster() -> redis.Redis:
            # A cluster client serves the same commands; scripts and
            # pipelines stay within one user's hash slot.
            return RedisCluster(  # type: ignore[return-value]
                startup_nodes=startup,
                username=hosts.username,
                password=hosts.password,
                ssl=scheme.startswith("rediss"),
                **options,
            )

        return cluster
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        hosts = _parse_multi_host(url)
        parts = [part for part in hosts.path.split("/") if part]
        if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ConfigError(
                "SESSIONSVC_REDIS_URL: a Sentinel URL is "
                "redis+sentinel://host:port[,host:port...]/service_name[/db]"
            )
        service, db = parts[0], int(parts[1]) if len(parts) == 2 else 0

        def sentinel() -> redis.Redis:
            sentinels = Sentinel(  # type: ignore[no-untyped-call]
                hosts.nodes,
                socket_timeout=timeout,
                # redis-py's default retries a sentinel ten times with backoff:
                # seconds, not the timeout, before a 503.
                sentinel_kwargs={
                    "socket_timeout": timeout,
                    "socket_connect_timeout": timeout,
                    "retry": _retry(),
                },
            )
            return sentinels.master_for(  # type: ignore[no-any-return,no-untyped-call]
                service,
                connection_pool_class=_SentinelPrimaryPool,
                db=db,
                username=hosts.username,
                password=hosts.password,
                ssl=scheme.startswith("rediss"),
                **options,
            )

        return sentinel
    raise ConfigError(
        f"SESSIONSVC_REDIS_URL has an unknown scheme {scheme!r}: use redis://, rediss://, "
        "unix://, redis+cluster:// or redis+sentinel://"
    )


@dataclass(frozen=True)
class _MultiHost:
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: str


def _parse_multi_host(url: str) -> _MultiHost:
    # As redis-py reads redis:// URLs: user:password@, :password@ or user@.
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, secret = auth.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    nodes = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"SESSIONSVC_REDIS_URL: {item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if parse_qs(parts.query):
        raise ConfigError("SESSIONSVC_REDIS_URL: cluster and sentinel URLs take no query options")
    return _MultiHost(nodes, username, password, parts.path)


#: Where ``gunicorn.conf.py`` serves the embedded store to its workers (and
#: to ``flask sessions ...`` run beside it).
DEV_STORE_HOST, DEV_STORE_PORT = "127.0.0.1", 6390
_DEV_STORE_MARK = "sessionsvc:dev-store"


def serve_dev_store(port: int = DEV_STORE_PORT) -> str:
    """Serve one embedded store on loopback from a daemon thread; returns its URL.

    Every process that builds an app without ``SESSIONSVC_REDIS_URL`` on
    this machine then shares it, as gunicorn workers must.
    """
    import fakeredis  # the "embedded" extra: only the development store needs it

    server = fakeredis.TcpFakeServer((DEV_STORE_HOST, port), server_type="redis")
    threading.Thread(target=server.serve_forever, name="sessionsvc-dev-store", daemon=True).start()
    url = f"redis://{DEV_STORE_HOST}:{port}/0"
    redis.Redis.from_url(url).set(_DEV_STORE_MARK, "1")
    return url


def _dev_store_url() -> str | None:
    """The URL of a dev store served on this machine, if one answers."""
    url = f"redis://{DEV_STORE_HOST}:{DEV_STORE_PORT}/0"
    probe = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        return url if probe.get(_DEV_STORE_MARK) == b"1" else None
    except redis.exceptions.RedisError:
        return None
    finally:
        probe.close()


def _embedded_factory() -> ClientFactory:
    url = _dev_store_url()
    if url is not None:
        logger.warning("using the embedded development store served at %s", url)
        return lambda: redis.Redis.from_url(url, **_client_options(1.0))
    import fakeredis  # the "embedded" extra: only the development store needs it

    logger.warning(
        "SESSIONSVC_REDIS_URL is not set: using an in-process embedded development store, "
        "which keeps nothing across restarts and is not shared with other processes"
    )
    server = fakeredis.FakeServer()
    return lambda: fakeredis.FakeRedis(server=server, decode_responses=True)


def store_from_url(
    url: str | None, *, prefix: str, timeout: float, events_max: int, events_ttl: int
) -> SessionStore:
    """Build the store for a ``SESSIONSVC_REDIS_URL`` (``None``: embedded)."""
    return SessionStore(
        client_factory_from_url(url, timeout=timeout),
        prefix=prefix,
        events_max=events_max,
        events_ttl=events_ttl,
    )
