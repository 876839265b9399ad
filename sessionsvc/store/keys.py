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
    P:{T}:user      hash    a user of the standalone service's user store
    P:rl:...        string  login rate-limit counters (flask-limiter's keys)

Every key of one user shares the hash tag ``{T}``, so each multi-key
operation of the store is legal on Redis Cluster.

Scripts that walk a user's index build that user's session keys themselves
(``ARGV`` holds the key prefix ``P:{T}:s:``) instead of declaring each in
``KEYS``: the ids are only known inside the script. This is deliberate and
safe on Cluster because every such key carries the declared keys' hash tag,
so it lives in the same slot on the same node.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re


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
    subscriber's; a client picks any address in it)."""
    parsed = ipaddress.ip_address(address)
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


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

    def user(self, user_id: str) -> str:
        """A user record (standalone user store)."""
        return self._user(user_id, "user")

    def known(self, user_id: str) -> str:
        """A user's sign-in history (device families, countries)."""
        return self._user(user_id, "known")

    def user_pattern(self) -> str:
        """A ``SCAN`` pattern that matches every user record under the prefix."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + ":{*}:user"

    def user_id_of(self, key: str) -> str | None:
        """The user id of a user record's key; ``None`` for any other key."""
        head, tail = self.prefix + ":{", "}:user"
        if not key.startswith(head) or not key.endswith(tail):
            return None
        tag = key[len(head) : -len(tail)]
        try:
            raw = base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))
            return raw.decode("utf-8", "surrogatepass")
        except (binascii.Error, UnicodeDecodeError):
            return None
