"""The store's Lua scripts, shipped as ``*.lua`` files beside this module.

Every operation that must be atomic is one script, which is also one round
trip. Each file's header says what it does, its ``KEYS`` and ``ARGV`` (by
position) and what it returns. A line ``--@include NAME`` stands for the
file ``NAME.lua``: the security-event, impossible-travel, user-agent and
review helpers that several scripts share.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

#: The scripts the store runs, by name (``open`` is ``open.lua``).
NAMES = (
    "open",
    "activity",
    "bound",
    "list",
    "revoke",
    "rename",
    "confirm",
    "deny",
    "create_user",
    "delete_user",
    "update_user",
    "set_password",
    "change_password",
    "admins_leave",
    "admins_join",
    "history",
    "agent",
    "webhook_take",
    "webhook_done",
    "webhook_failed",
    "webhook_tidy",
    "audit_take",
)

_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The text of script ``name``, its includes expanded."""
    text = resources.files(__name__).joinpath(f"{name}.lua").read_text("utf-8")
    return _INCLUDE.sub(lambda match: source(match.group(1)), text)
