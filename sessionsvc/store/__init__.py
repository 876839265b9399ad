"""The session store: the only package that talks to Redis.

Laid out by job, as ``limits`` lays out its storage:

- :mod:`.keys`: where everything lives (the key layout and hash tags);
- :mod:`.scripts`: the Lua scripts, one ``.lua`` file each, and their loader;
- :mod:`.codec`: session hashes and event entries to models, and back;
- :mod:`.connections`: Redis clients from a URL (Cluster, Sentinel) and what
  counts as the store being unavailable;
- :mod:`.devstore`: the embedded development store;
- :mod:`.records`: what the store takes and returns besides the models;
- :mod:`.sessions`: :class:`SessionStore` itself.

Imports run one way inside it: ``sessions`` uses the others; none of them
imports ``sessions``.
"""

from __future__ import annotations

from .connections import (
    SENTINEL_CHECK_INTERVAL,
    UNAVAILABLE_ERRORS,
    ClientFactory,
    client_factory_from_url,
)
from .devstore import DEV_STORE_HOST, DEV_STORE_PORT, PER_WORKER, serve_dev_store
from .keys import Keys, address_group, user_tag
from .records import (
    Actor,
    AdminsLeft,
    CheckResult,
    CheckStatus,
    EventSink,
    Opened,
    Policy,
    ReviewRefused,
    UserChanged,
)
from .sessions import SessionStore, store_from_url

__all__ = [
    "DEV_STORE_HOST",
    "DEV_STORE_PORT",
    "PER_WORKER",
    "SENTINEL_CHECK_INTERVAL",
    "UNAVAILABLE_ERRORS",
    "Actor",
    "AdminsLeft",
    "CheckResult",
    "CheckStatus",
    "ClientFactory",
    "EventSink",
    "Keys",
    "Opened",
    "Policy",
    "ReviewRefused",
    "SessionStore",
    "UserChanged",
    "address_group",
    "client_factory_from_url",
    "serve_dev_store",
    "store_from_url",
    "user_tag",
]
