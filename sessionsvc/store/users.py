"""The standalone service's user store: each user beside its sessions, under one hash tag.

Every change that ends a user's sessions (delete, disable, new roles, new
password) is one script with the revocation, so it happens whole or not at
all, and re-running it finishes the job.

The admins' listing reads a name index (``P:{users}:names``, see
:mod:`.keys`): one sorted set, every score 0, so ``ZRANGEBYLEX`` pages it in
the ids' UTF-8 byte order. It is in a slot of its own, so on a Cluster no
script can change it with a user record; it is kept right without that, in
this order:

- a create adds the name, runs its script, then adds the name again (a
  listing may have dropped it as stale meanwhile);
- a delete runs its script, drops the name, then adds it back if a record
  exists (the same name was created again meanwhile);
- a listing that meets a name without a record skips it and repairs it as a
  delete does (:meth:`UserStore._repair_names`).

So a name without a record lasts at most until a listing meets it, and a
record is never left without its name once its create returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from ..errors import StoreUnavailable
from ..models import User
from .base import StoreBase
from .codec import roles_of, roles_text, user_fields, user_from_hash
from .records import Actor, AdminsLeft, UserChanged

logger = logging.getLogger("sessionsvc")

#: Rounds of ``ZRANGEBYLEX`` a page reads at most to fill itself past names
#: without a record (each such name is repaired, so they do not come back).
PAGE_ROUNDS = 4
#: Names per ``ZADD`` (and records per pipeline) when the index is built.
BUILD_BATCH = 1000


class UserStore(StoreBase):
    """Users of the standalone service (``P:{T}:user``), each beside its sessions."""

    def _user_keys(self, user_id: str) -> list[str]:
        return [
            self.user_key(user_id),
            self.index_key(user_id),
            self.events_key(user_id),
            self.known_key(user_id),
            self.activity_events_key(user_id),
            self.agents_key(user_id),
        ]

    def get_user(self, user_id: str) -> User | None:
        """A user of the standalone user store, or ``None``."""
        with self._available():
            raw = self._hgetall(self.user_key(user_id))
        return user_from_hash(user_id, raw)

    def create_user(self, user: User) -> bool:
        """Add a user; ``False`` (and nothing changed) when the id is taken.

        Whatever an earlier account of the same name left (sessions of a
        record deleted by hand, events, sign-in history) is deleted with it.
        """
        args = [self.session_key(user.id, ""), *user_fields(user)]
        names = self.keys.names()
        with self._available():
            # Before, so a listing finds the user as soon as it exists; after,
            # in case a listing dropped the name as stale in between.
            self.client.zadd(names, {_member(user.id): 0})
            created = bool(self._run("create_user", self._user_keys(user.id), args))
        with self._after_write(user.id):
            self.client.zadd(names, {_member(user.id): 0})
        return created

    def delete_user(
        self,
        user_id: str,
        *,
        now: int | None = None,
        actor: Actor | None = None,
        expected: User | None = None,
    ) -> list[str] | None:
        """Delete a user with every session, its events and history; atomic.

        Webhooks still hear of each session revoked (``user_deleted``).

        :param expected: the record as the caller read it: deleted only if
            it is still that account at that version.
        :returns: the ids of the sessions revoked; ``None`` for no such user.
        :raises UserChanged: it is not (nothing changed).
        """
        when = int(time.time()) if now is None else now
        args = [
            when,
            self.session_key(user_id, ""),
            *self._event_args(when, actor or Actor()),
            *_expected(expected),
        ]
        keys = [*self._user_keys(user_id), *self.stream_keys(user_id)]
        with self._available():
            revoked = self._run("delete_user", keys, args)
        if revoked == 0:
            raise UserChanged("The user record changed since it was read.")
        with self._after_write(user_id):
            self._repair_names([user_id])
        return None if revoked is None else [str(sid) for sid in revoked]

    def update_user(
        self,
        user_id: str,
        *,
        now: int,
        actor: Actor,
        disabled: bool | None = None,
        roles: tuple[str, ...] | None = None,
        expected: User | None = None,
    ) -> tuple[str, list[str]] | None:
        """Disable, enable or set the roles of a user; atomic with the revocations.

        Disabling revokes every session (``user_disabled``); so does a change
        of roles (``roles_changed``).

        :param expected: the record as the caller read it: changed only if
            it is still that account at that version.
        :returns: the reason sessions were revoked (``""`` for none) and their
            ids; ``None`` for no such user.
        :raises UserChanged: it is not (nothing changed).
        """
        args = [
            now,
            self.session_key(user_id, ""),
            *self._event_args(now, actor),
            "" if disabled is None else "1" if disabled else "0",
            "0" if roles is None else "1",
            roles_text(roles or ()),
            *_expected(expected),
        ]
        keys = [
            self.user_key(user_id),
            self.index_key(user_id),
            self.events_key(user_id),
            *self.event_keys(user_id),
        ]
        with self._available():
            result = self._run("update_user", keys, args)
        if result is None:
            return None
        if result == 0:
            raise UserChanged("The user record changed since it was read.")
        return str(result[0]), [str(sid) for sid in result[1:]]

    def set_password_hash(self, user_id: str, new: str, *, expected: str) -> bool:
        """Store the same password's hash anew (an older scheme upgraded), if the
        hash is still ``expected``; atomic. A new password is :meth:`change_password`.

        :returns: ``False`` (nothing changed) when the user is gone or the
            hash is no longer ``expected``.
        """
        args = [expected, new]
        with self._available():
            return bool(self._run("set_password", [self.user_key(user_id)], args))

    def change_password(
        self, user_id: str, new: str, *, expected: str, now: int, actor: Actor, keep: str | None
    ) -> list[str] | None:
        """A new password hash, and every session but ``keep`` revoked; atomic.

        Records ``password.changed`` (detail ``revoked``) and a
        ``session.revoked`` (``password_changed``) per session.

        :returns: the ids revoked; ``None`` (nothing changed) when the user is
            gone or the hash is no longer ``expected`` (another change won).
        """
        args = [
            now,
            self.session_key(user_id, ""),
            *self._event_args(now, actor),
            expected,
            new,
            keep or "",
        ]
        keys = [
            self.user_key(user_id),
            self.index_key(user_id),
            self.events_key(user_id),
            *self.event_keys(user_id),
        ]
        with self._available():
            revoked = self._run("change_password", keys, args)
        return None if revoked is None else [str(sid) for sid in revoked]

    # -- the registry of admins -------------------------------------------------

    def lock_admins(self, token: str, *, seconds: int) -> bool:
        """Take the lock of changes of a user's admin state for ``token``,
        for at most ``seconds``; ``False`` when another holds it."""
        with self._available():
            return bool(self.client.set(self.keys.admins_lock(), token, nx=True, ex=seconds))

    def admins_lock_left(self) -> float:
        """Seconds until the lock of admin changes is free at the latest (``0``: free)."""
        with self._available():
            left = int(self.client.pttl(self.keys.admins_lock()))
        return max(left, 0) / 1000

    def admins_members(self) -> set[str]:
        """The users the registry of admins holds (none when it is not built)."""
        with self._available():
            # Raw bytes: a lone surrogate's do not decode strictly.
            raw = cast(Any, self.client).execute_command(
                "SMEMBERS", self.keys.admins(), NEVER_DECODE=True
            )
        return {member.decode("utf-8", "surrogatepass") for member in raw} - {""}

    def admins_leave(self, user_id: str, *, token: str, force: bool = False) -> AdminsLeft:
        """Drop a user from the registry of admins, unless it is the last
        (``force``: even then); one atomic step, under the lock ``token``."""
        keys = [self.keys.admins(), self.keys.admins_lock()]
        args = [token, _member(user_id), int(force)]
        with self._available():
            return AdminsLeft(int(self._run("admins_leave", keys, args)))

    def admins_join(
        self,
        user_ids: Sequence[str],
        *,
        token: str,
        rebuild: bool = False,
        start: bool = False,
        release: bool = False,
    ) -> bool:
        """Add users to the registry of admins (``rebuild``: make it hold just
        them; ``start``: make it first if there is none), then release the
        lock if asked; ``False`` (nothing changed) when the lock is not
        ``token``'s."""
        keys = [self.keys.admins(), self.keys.admins_lock()]
        # Lua's unpack() takes some thousands of values at most: in parts.
        members = [_member(user_id) for user_id in user_ids]
        parts = [members[i : i + 1000] for i in range(0, len(members), 1000)] or [[]]
        make = "2" if rebuild else "1" if start else "0"
        with self._available():
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                args = [token, make if i == 0 else "0", int(release and last), *part]
                if not self._run("admins_join", keys, args):
                    return False
        return True

    def enabled_users_with_role(
        self, role: str, *, among: Sequence[str] | None = None
    ) -> list[str]:
        """The ids of the users who hold ``role`` and are not disabled: of
        ``among``, or of every user (a ``SCAN`` of every user record); the
        records are read in pipelined batches."""
        found: list[str] = []
        ids = self.user_ids() if among is None else among
        with self._available():
            for start in range(0, len(ids), 1000):
                batch = ids[start : start + 1000]
                pipe = self.client.pipeline(transaction=False)
                for user_id in batch:
                    pipe.hmget(self.user_key(user_id), "roles", "d")
                for user_id, (roles, disabled) in zip(batch, pipe.execute(), strict=True):
                    if roles is not None and role in roles_of(roles) and disabled != "1":
                        found.append(user_id)
        return found

    def user_ids(self) -> list[str]:
        """Every user id of the user store, sorted (a ``SCAN``: for the CLI, not requests)."""
        with self._available():
            found = cast(Any, self.client).scan_iter(match=self.keys.user_pattern(), count=1000)
            ids = {self.keys.user_id_of(key) for key in found}
        return sorted(user_id for user_id in ids if user_id is not None)

    # -- the name index (the admins' listing) -----------------------------------

    def list_users(
        self, *, prefix: str, after: str | None, limit: int
    ) -> tuple[list[User], str | None]:
        """A page of the users whose ids start with ``prefix``, by id in UTF-8
        byte order, strictly after ``after`` (``None``: from the first).

        One ``ZRANGEBYLEX`` of the name index and one pipelined read of the
        records per round; a name without a record is skipped and repaired,
        and the page reads on (at most :data:`PAGE_ROUNDS` rounds) to fill
        itself. Builds the index first if it never was (:meth:`build_names`).

        :returns: the users, and where the next page starts after (``None``:
            this is the last page).
        """
        self._ensure_names()
        start = _member(prefix)
        # UTF-8 (surrogatepass too) has no 0xff byte: every id that starts
        # with the prefix sorts before the prefix and one.
        high = b"[" + start + b"\xff"
        low = b"[" + start
        if after is not None and _member(after) >= start:
            low = b"(" + _member(after)
        found: list[User] = []
        for _ in range(PAGE_ROUNDS):
            want = limit - len(found) + 1
            names = self._names_between(low, high, want)
            users = self._records(names)
            found += [user for user in users if user is not None]
            stale = [name for name, user in zip(names, users, strict=True) if user is None]
            self._repair_names(stale)
            if len(found) > limit:
                return found[:limit], found[limit - 1].id
            if len(names) < want:
                return found, None
            low = b"(" + _member(names[-1])
        # Still short after as many rounds: the next page starts after what was read.
        return found, low[1:].decode("utf-8", "surrogatepass")

    def build_names(self) -> int:
        """Add every user record's name to the name index (a ``SCAN`` of every
        user record; in batches), then mark it built.

        :returns: the names that were missing.
        """
        added = 0
        ids = self.user_ids()
        with self._available():
            for start in range(0, len(ids), BUILD_BATCH):
                batch = {_member(user_id): 0 for user_id in ids[start : start + BUILD_BATCH]}
                added += cast(int, self.client.zadd(self.keys.names(), cast(Any, batch)))
            self.client.set(self.keys.names_built(), "1")
        return added

    def reindex_names(self) -> tuple[int, int]:
        """Rebuild the name index: add the names of the records it misses,
        drop (and repair, as a delete does) the names without a record.

        :returns: the names added and dropped.
        """
        added = self.build_names()
        dropped, low = 0, b"-"
        while names := self._names_between(low, b"+", BUILD_BATCH):
            users = self._records(names)
            stale = [name for name, user in zip(names, users, strict=True) if user is None]
            dropped += len(stale) - self._repair_names(stale)
            low = b"(" + _member(names[-1])
        return added, dropped

    #: Whether this store has seen the name index built: a page then skips
    #: the check (``reindex-users`` is how one is forced again).
    _names_ready = False

    def _ensure_names(self) -> None:
        """Build the name index if it never was (users of older versions)."""
        if self._names_ready:
            return
        with self._available():
            built = self.client.exists(self.keys.names_built())
        if not built:
            added = self.build_names()
            logger.info("built the user store's name index: %d users added", added)
        self._names_ready = True

    @contextmanager
    def _after_write(self, user_id: str) -> Iterator[None]:
        """The name index's step after a user's script: the change is made, so
        a store that cannot answer now does not fail it (a listing repairs a
        stale name; ``reindex-users`` adds a missing one). Logged."""
        try:
            with self._available():
                yield
        except StoreUnavailable:
            logger.warning(
                "the user store's name index missed a change of user %r "
                "(flask sessions reindex-users repairs it)",
                user_id,
            )

    def _names_between(self, low: bytes, high: bytes, count: int) -> list[str]:
        """Up to ``count`` names of the index in ``[low, high]`` (``ZRANGEBYLEX`` bounds)."""
        with self._available():
            # Raw bytes: a lone surrogate's do not decode strictly.
            raw = cast(Any, self.client).execute_command(
                "ZRANGEBYLEX", self.keys.names(), low, high, "LIMIT", 0, count, NEVER_DECODE=True
            )
        return [member.decode("utf-8", "surrogatepass") for member in raw]

    def _records(self, user_ids: Sequence[str]) -> list[User | None]:
        """The records of ``user_ids`` (``None``: none), in one pipelined read."""
        if not user_ids:
            return []
        with self._available():
            pipe = self.client.pipeline(transaction=False)
            for user_id in user_ids:
                pipe.hgetall(self.user_key(user_id))
            raws = pipe.execute()
        return [user_from_hash(u, raw) for u, raw in zip(user_ids, raws, strict=True)]

    def _repair_names(self, user_ids: Sequence[str]) -> int:
        """Drop names that had no record, then add back those that have one now
        (created again meanwhile).

        :returns: how many were added back.
        """
        if not user_ids:
            return 0
        members = [_member(user_id) for user_id in user_ids]
        with self._available():
            self.client.zrem(self.keys.names(), *members)
            pipe = self.client.pipeline(transaction=False)
            for user_id in user_ids:
                pipe.exists(self.user_key(user_id))
            back = {m: 0 for m, e in zip(members, pipe.execute(), strict=True) if e}
            if back:
                self.client.zadd(self.keys.names(), cast(Any, back))
        return len(back)


def _expected(user: User | None) -> list[Any]:
    """The account and version a script compares the record with ('': none)."""
    return ["", ""] if user is None else [user.account, user.version]


def _member(user_id: str) -> bytes:
    """A user id as a member of the registry of admins: its UTF-8 bytes, a
    lone surrogate too (as in :func:`~.keys.user_tag`), which the client's
    own encoding would refuse."""
    return user_id.encode("utf-8", "surrogatepass")
