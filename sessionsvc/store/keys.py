"""Where everything lives in Redis: the key layout.

Layout (``P`` is the key prefix, ``T`` the user's hash tag, see :func:`user_tag`)::

    P:{T}:s:<sid>   hash    one session; TTL = time left until it expires
    P:{T}:idx       zset    the user's session ids scored by expiry; pruned
                            on every write, expires with its last session
    P:{T}:ev        list    the user's security events (JSON), newest first, capped:
                            sign-ins, sign-outs, password changes
    P:{T}:ea        list    the same for what activity records (anomalies, address
                            changes), capped on its own: a flood of those never
                            pushes a sign-in or a sign-out out of ``ev``
    P:{T}:known     hash    the user's sign-in history (device families,
                            countries) behind the risk flags, and the place and
                            time of the last located activity; bounded
    P:{T}:ag        hash    the user's user agents, interned: JSON text by digest,
                            which sessions (``uh``) and events refer to; at
                            most 24, kept as long as anything refers to them
    P:{T}:user      hash    a user of the standalone service's user store
    P:{T}:j:<d>     string  a DPoP proof accepted for the user (``d``: a digest
                            of its key and ``jti``); expires when the proof
                            could no longer be accepted, so a replay is refused
    P:{admins}:admins       set     the user store's users who hold the admin
                            role and are not disabled, and '' (the mark that
                            it was built); what "the last admin" is decided on
    P:{admins}:admins:lock  string  the token of the one change of a user's
                            admin state in progress; expires by itself
    P:{users}:names zset    the user store's user ids (UTF-8 bytes), every score 0,
                            for the admins' listing by prefix (``ZRANGEBYLEX``);
                            kept beside the user records, not atomically with
                            them (another slot): see :mod:`.users`
    P:{users}:names:built  string  the mark that the name index was built
                            from the user records (users of older versions)
    P:rl:...        string  login rate-limit counters (flask-limiter's keys)

Webhooks (when ``SESSIONSVC_WEBHOOK_URLS`` or ``SESSIONSVC_AUDIT_URL`` is
set; ``W`` is a stream's tag, see :func:`stream_tag`, ``E`` an endpoint's
id, see :func:`endpoint_id`)::

    P:{W}:wh        stream  the security events to deliver, written by the
                            scripts that record them; bounded by age and
                            length; one consumer group per endpoint (``E``)
    P:{W}:wh:E:r    zset    the endpoint's deliveries waiting for a retry,
                            scored by when they are due (ms)
    P:{W}:wh:E:p    hash    their attempts so far and the event, by entry id
    P:{W}:wh:E:c    hash    counters: delivered, failed
    P:{W}:wh:E:f    list    the last deliveries parked as failed (JSON), capped
    P:{wh}:streams  set     on Redis Cluster: the tags of the streams in use

The audit trail (when ``SESSIONSVC_AUDIT_URL`` is set) reads the same
streams, with consumer group ``audit`` on each (see :mod:`.audit`)::

    P:{W}:wh:audit:c    hash    the group's counters: entries handed out or
                                lost (``read``), lost to trimming (``lost``)
    P:{wh}:audit:prune  string  the daily prune's lock; expires by itself

Every key of one user shares the hash tag ``{T}``, so each multi-key
operation of the store is legal on Redis Cluster. A script that records an
event also appends it to a webhook stream in the same step, so that stream
must be in the user's slot too: on one Redis server (or Sentinel) there is
one stream, ``P:{wh}:wh``; on a Cluster there is one per slot in use, whose
tag ``W`` is the shortest text that hashes to the user's slot.

Scripts that walk a user's index build that user's session keys themselves
(``ARGV`` holds the key prefix ``P:{T}:s:``) instead of declaring each in
``KEYS``: the ids are only known inside the script. This is deliberate and
safe on Cluster because every such key carries the declared keys' hash tag,
so it lives in the same slot on the same node. For the same reason, a
script that finds a user's agents hash full finds the keys that refer to it
(index, sessions, event lists) beside it, by name (``events.lua``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import re
import string
from itertools import product

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..models import parse_ip

#: The tag of the admin registry and its lock: a slot of their own (no user
#: key ends in ``:admins``, so even a user whose tag this is has no key there).
ADMINS_TAG = "admins"

#: The tag of the user store's name index. No user key can have it: a user's
#: tag is unpadded base64url (:func:`user_tag`), whose length is never 1 more
#: than a multiple of 4, and this one has 5 characters.
NAMES_TAG = "users"

#: The tag of the one webhook stream on a single server (not a user's tag:
#: no user id encodes to it, since ``base64("wh")`` is not UTF-8).
SINGLE_STREAM_TAG = "wh"


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


@functools.lru_cache(maxsize=4096)
def address_group(address: str) -> str:
    """One client, for counting login attempts and for the addresses a user
    signed in from: an IPv4 address, or the /64 network of an IPv6 one (one
    subscriber's; a client picks any address in it). An IPv4-mapped IPv6
    address is its IPv4 address (:func:`~sessionsvc.models.parse_ip`): every
    IPv4 client of a dual-stack socket would otherwise share ``::/64``."""
    parsed = parse_ip(address)
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def user_of_tag(tag: str) -> str | None:
    """The user id of a hash tag (see :func:`user_tag`); ``None`` if it is none."""
    try:
        raw = base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != tag:
            return None
        return raw.decode("utf-8", "surrogatepass")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each Cluster slot, the shortest text (letters and digits) in it."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    left = REDIS_CLUSTER_HASH_SLOTS
    alphabet = string.ascii_lowercase + string.digits
    for length in range(1, 5):
        for letters in product(alphabet, repeat=length):
            text = "".join(letters)
            slot = key_slot(text.encode("ascii"))
            if tags[slot] is None:
                tags[slot] = text
                left -= 1
                if not left:
                    return tuple(t for t in tags if t is not None)
    raise AssertionError("every slot has a tag of at most 4 characters")  # pragma: no cover


def stream_tag(user_id: str, *, cluster: bool) -> str:
    """The tag of the webhook stream a user's events go to.

    On a single server, :data:`SINGLE_STREAM_TAG`; on a Cluster, the tag of
    the slot that holds the user's keys, so the script that records an event
    can append it to the stream in the same atomic step.
    """
    if not cluster:
        return SINGLE_STREAM_TAG
    return _slot_tags()[key_slot(user_tag(user_id).encode("ascii"))]


def endpoint_id(url: str) -> str:
    """A webhook endpoint's id in keys and consumer-group names: a digest of its URL."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def proof_digest(jkt: str, jti: str) -> str:
    """A DPoP proof's name in its key: a digest of its key's thumbprint and its
    ``jti`` (which the client chooses: any length, any characters), 128 bits."""
    digest = hashlib.sha256(f"{jkt}.{jti}".encode("utf-8", "surrogatepass")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Keys:
    """The keys under one prefix.

    :param prefix: the namespace of every key (``SESSIONSVC_KEY_PREFIX``).
    """

    def __init__(self, prefix: str) -> None:
        #: The namespace of every key.
        self.prefix = prefix
        #: Where flask-limiter keeps the login counters.
        self.limiter = f"{prefix}:rl"

    def _user(self, user_id: str, suffix: str) -> str:
        return f"{self.prefix}:{{{user_tag(user_id)}}}:{suffix}"

    def session(self, user_id: str, session_id: str) -> str:
        """One session hash; with ``session_id=""``, the prefix of them all."""
        return self._user(user_id, "s:" + session_id)

    def index(self, user_id: str) -> str:
        """A user's session index."""
        return self._user(user_id, "idx")

    def events(self, user_id: str) -> str:
        """A user's security-event list."""
        return self._user(user_id, "ev")

    def activity_events(self, user_id: str) -> str:
        """A user's list of the security events activity records (anomalies, address changes)."""
        return self._user(user_id, "ea")

    def agents(self, user_id: str) -> str:
        """A user's interned user agents (see ``scripts/events.lua``)."""
        return self._user(user_id, "ag")

    def user(self, user_id: str) -> str:
        """A user record (standalone user store)."""
        return self._user(user_id, "user")

    def admins(self) -> str:
        """The registry of the user store's admins (see ``scripts/admins_leave.lua``)."""
        return f"{self.prefix}:{{{ADMINS_TAG}}}:admins"

    def admins_lock(self) -> str:
        """The lock of changes of a user's admin state, beside the registry."""
        return self.admins() + ":lock"

    def names(self) -> str:
        """The user store's name index (see :mod:`.users`)."""
        return f"{self.prefix}:{{{NAMES_TAG}}}:names"

    def names_built(self) -> str:
        """The mark that the name index was built, beside it."""
        return self.names() + ":built"

    def proof(self, user_id: str, digest: str) -> str:
        """A DPoP proof the user's tokens were accepted with (see :mod:`sessionsvc.dpop`)."""
        return self._user(user_id, "j:" + digest)

    def known(self, user_id: str) -> str:
        """A user's sign-in history (device families, countries)."""
        return self._user(user_id, "known")

    def webhook_stream(self, tag: str) -> str:
        """A webhook stream (see :func:`stream_tag`)."""
        return f"{self.prefix}:{{{tag}}}:wh"

    def webhook_endpoint(self, stream: str, endpoint: str, part: str) -> str:
        """One endpoint's delivery state beside ``stream`` (``r``, ``p``, ``c`` or ``f``)."""
        return f"{stream}:{endpoint}:{part}"

    def audit_counters(self, stream: str) -> str:
        """The audit writers' counters beside ``stream`` (``read``, ``lost``)."""
        return f"{stream}:audit:c"

    def audit_prune(self) -> str:
        """The lock that lets one audit writer prune per day."""
        return f"{self.prefix}:{{{SINGLE_STREAM_TAG}}}:audit:prune"

    def webhook_streams(self) -> str:
        """On Redis Cluster, the set of the tags of the streams in use."""
        return f"{self.prefix}:{{{SINGLE_STREAM_TAG}}}:streams"

    def webhook_stream_pattern(self) -> str:
        """A ``SCAN`` pattern that matches every webhook stream under the prefix."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + ":{*}:wh"

    def user_pattern(self) -> str:
        """A ``SCAN`` pattern that matches every user record under the prefix."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + ":{*}:user"

    def user_id_of(self, key: str) -> str | None:
        """The user id of a user record's key; ``None`` for any other key."""
        head, tail = self.prefix + ":{", "}:user"
        if not key.startswith(head) or not key.endswith(tail):
            return None
        return user_of_tag(key[len(head) : -len(tail)])
