"""The standalone service's accounts: create, change a password, disable, set roles, delete.

What the auth and admin routes and the CLI do with a user. Each change that
ends sessions ends them in the same atomic script as the change itself
(see :mod:`sessionsvc.store.users`), and is reported like every other
revocation (:mod:`sessionsvc.audit`).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TypeVar

from flask import has_request_context, request

from . import audit, devices, passwords
from .errors import (
    AdminsLocked,
    InvalidCredentials,
    LastAdmin,
    StoreUnavailable,
    UserDisabled,
    UserNotFound,
    WeakPassword,
)
from .models import TokenPair, User
from .state import current_manager, current_state
from .store import Actor, AdminsLeft, UserChanged, address_group

T = TypeVar("T")


def new_user(user_id: str, password: str, *, admin: bool = False) -> User:
    """A user record for the user store, with a new account.

    :raises WeakPassword: the password breaks the policy.
    """
    passwords.check_policy(user_id, password)
    return User(
        id=user_id,
        password_hash=passwords.hash_password(password),
        roles=(ADMIN_ROLE,) if admin else (),
        account=secrets.token_urlsafe(12),
        created_at=int(time.time()),
    )


def get(user_id: str) -> User:
    """A user of the user store.

    :raises UserNotFound: no such user.
    """
    user = current_state().store.get_user(user_id)
    if user is None:
        raise UserNotFound("No such user.")
    return user


def signed_in_here(user_id: str) -> bool:
    """Whether ``user_id`` signed in from the request's client address (its
    group: an IPv4 address, an IPv6 /64) within a session lifetime."""
    address = devices.client_ip(request) if has_request_context() else None
    if address is None:
        return False
    state = current_state()
    since = int(time.time()) - state.settings.refresh_expires
    return state.store.signed_in_from(user_id, address_group(address), since=since)


def authenticate(
    user_id: str, password: str, *, matched: Collection[str] = (), signed_in: bool = False
) -> tuple[User, str | None]:
    """The user whose password this is, and a hash to store instead of an
    older scheme's (see :func:`passwords.verify`).

    An unknown user costs one hash check, as a wrong password does, and is
    refused the same way; either waits for one of the process's hash slots,
    ahead of the others when the user signed in from this address before.

    :param matched: stored hashes this password was found to match already
        (a sign-in checking again after a change of the record): such a
        hash is not checked again, and a user gone since is refused at once.
    :param signed_in: the request comes from a session of this user (its
        token checked): it waits for a slot as a returning user does.
    :raises InvalidCredentials: no such user, or not its password.
    :raises Busy: no hash slot came free in time (nothing was checked).
    """
    state = current_state()
    user = state.store.get_user(user_id) if user_id else None
    if matched and user is None:
        # Deleted since the password matched: no name to hide.
        raise InvalidCredentials("Wrong username or password.")
    if user is not None and user.password_hash in matched:
        return user, None

    # Asked for every name, existing or not, and only when the slots are
    # full: the answer says nothing of which names exist, except to a client
    # behind an address the user signed in from (see passwords.HashSlots).
    def known() -> bool:
        return signed_in or (bool(user_id) and signed_in_here(user_id))

    if user is None:
        with state.hash_slots.held(known=known):
            passwords.waste_time(password)
        raise InvalidCredentials("Wrong username or password.")
    with state.hash_slots.held(known=known):
        matches, upgraded = passwords.verify(user.password_hash, password)
    if not matches:
        raise InvalidCredentials("Wrong username or password.")
    return user, upgraded


#: How many times a sign-in checks the credentials against the user record
#: as it is now, when the record changed between a check and the session's
#: opening (see :func:`sign_in`).
SIGN_IN_TRIES = 3


def sign_in(user_id: str, password: str) -> TokenPair:
    """Open a session for the user whose password this is, with its roles.

    The user record is read and the password checked (~30 ms of argon2id)
    before the session opens; the session opens only if the record is still
    as checked (:meth:`SessionManager.open`'s ``user_version``), so a change
    that revoked the user's sessions meanwhile leaves none behind. When it
    changed, the credentials are checked again against the record as it is
    now: a new password refuses this one, new roles are the session's roles.
    A hash of an older scheme is upgraded (argon2id from now on, unless a
    change came first); that is not a change of the record's version.

    :raises InvalidCredentials: no such user, or not its password (or the
        record changed on every try).
    :raises UserDisabled: the user is disabled (said only with the right password).
    """
    # The hashes this password matched: a try after a change of the roles
    # or the disabled state finds the same hash and checks it no more (no
    # second ~30 ms, no second wait for a hash slot, never busy).
    matched: set[str] = set()
    for _ in range(SIGN_IN_TRIES):
        user, upgraded = authenticate(user_id, password, matched=matched)
        matched.add(user.password_hash)
        if user.disabled:
            raise UserDisabled("This user is disabled.")
        if upgraded is not None:
            current_state().store.set_password_hash(user.id, upgraded, expected=user.password_hash)
            matched.add(upgraded)
        claims = {"roles": list(user.roles)} if user.roles else None
        try:
            return current_manager().open(
                user.id, claims=claims, account=user.account, user_version=user.version
            )
        except UserChanged:
            continue
    raise InvalidCredentials("The user changed during the sign-in; try again.")


def all_users() -> list[User]:
    """Every user, by id (users deleted meanwhile left out)."""
    store = current_state().store
    found = (store.get_user(user_id) for user_id in store.user_ids())
    return [user for user in found if user is not None]


def page(prefix: str, after: str | None, limit: int) -> tuple[list[User], str | None]:
    """A page of the users whose ids start with ``prefix`` (see :meth:`UserStore.list_users`)."""
    return current_state().store.list_users(prefix=prefix, after=after, limit=limit)


def _actor() -> Actor:
    return devices.request_actor() or Actor()


# -- the last admin -----------------------------------------------------------------
#
# No change through the API may leave the user store without an admin who
# is not disabled: recovering from that takes the CLI. Users live each in
# their own hash slot (Redis Cluster), so no one script sees them all; a
# registry in a slot of its own (the users who hold the admin role and are
# not disabled) is what the decision reads. A change that takes a user out
# of the admins first drops it from the registry, atomically and only if
# another remains (admins_leave.lua): of two admins removing each other at
# once, one is refused. Then the user's own script makes the change. A
# change that makes an admin adds the user after it.
#
# Every change of a user's admin state holds one lock (beside the registry,
# with a lease) from its read of the record to its registry update. Without
# it, a promotion racing a demotion of the same user could add the user to
# the registry after the demotion (a member who is no admin: the next
# decision would let the real last admin go); with it, the registry never
# holds a member who is not an admin. A change of a user who is no admin
# before or after it takes no lock: it is made only if the record is still
# the version it read, which a promotion meanwhile raised (then it is
# decided under the lock). The registry may lack an admin (a change that failed
# half-way, a user added by SessionManager.add_user, a holder whose lease
# ran out, which adds no one), which can only refuse: so a refusal is
# answered only after the registry was built anew from the user records and
# asked again. A deployment from before the registry builds it the same way
# on first use. The SCAN of the records runs with the lock free; under it
# the admins found and the members are read again (see _build_admins).

#: The role of the admin routes.
ADMIN_ROLE = "admin"

#: Seconds a change of an admin state holds the lock at most: one that
#: died frees it then.
ADMIN_LOCK_SECONDS = 10

#: Seconds a change waits for the lock before it is answered 503 ``busy``
#: (``Retry-After``: the holder's lease left). A holder keeps it for a few
#: round trips; only one that died keeps it longer, up to its lease, and
#: waiting that out would hold a request thread for 10 s.
ADMIN_LOCK_WAIT = 2.0


def is_admin(user: User | None) -> bool:
    """Whether a user counts as an admin: the admin role, not disabled."""
    return user is not None and ADMIN_ROLE in user.roles and not user.disabled


@contextmanager
def _admins_locked() -> Iterator[str]:
    """Hold the lock of admin changes; its token.

    :raises AdminsLocked: another change held it throughout the wait.
    """
    store = current_state().store
    token = secrets.token_urlsafe(16)
    deadline = time.monotonic() + ADMIN_LOCK_WAIT
    pause = 0.005
    while not store.lock_admins(token, seconds=ADMIN_LOCK_SECONDS):
        if time.monotonic() > deadline:
            raise AdminsLocked(
                "Another change of the admins is in progress; try again.",
                retry_after=math.ceil(store.admins_lock_left()),
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    try:
        yield token
    finally:
        store.admins_join([], token=token, release=True)


#: A change of the admins whose lock's lease ran out: nothing more is done.
_TOO_LONG = "The change of the admins took too long; try again."


class _RegistryIncomplete(Exception):
    """The registry must be built from the user records before this decision."""


def _admin_change(change: Callable[[str, Collection[str] | None], T]) -> T:
    """Run ``change(token, candidates)`` under the lock of admin changes.

    ``candidates`` is ``None``, then, if the change raised
    :class:`_RegistryIncomplete`, the admins a ``SCAN`` of every user record
    found, made with the lock free (a ``SCAN`` of 10,000 users takes ~80 ms
    of real Redis; held meanwhile, the lock would stop every change of a
    user, and past the lease it would never end); the change runs again with
    them, under the lock, and checks them (:func:`_build_admins`).
    """
    try:
        with _admins_locked() as token:
            return change(token, None)
    except _RegistryIncomplete:
        pass
    candidates = current_state().store.enabled_users_with_role(ADMIN_ROLE)
    with _admins_locked() as token:
        return change(token, candidates)


def _start_admins(token: str) -> None:
    """Make the registry of admins if there is none (its members stay)."""
    store = current_state().store
    if not store.admins_join([], token=token, start=True):
        raise StoreUnavailable(_TOO_LONG)


def _build_admins(token: str, candidates: Collection[str]) -> None:
    """Build the registry of admins anew, under the lock, from the users
    ``candidates`` (read without it) and its members: each is in if its
    record is an admin's now. A user made an admin after the ``SCAN``
    read its record joined the registry, so it is a member; one that was
    an admin then and is not now is read again here, so it is left out."""
    store = current_state().store
    among = sorted({*candidates, *store.admins_members()})
    admins = store.enabled_users_with_role(ADMIN_ROLE, among=among)
    if not store.admins_join(admins, token=token, rebuild=True):
        raise StoreUnavailable(_TOO_LONG)


def _leave_admins(
    user_id: str, token: str, *, force: bool, candidates: Collection[str] | None
) -> None:
    """Drop an admin from the registry before the change that ends it.

    :raises LastAdmin: it is the last admin (and not ``force``).
    :raises _RegistryIncomplete: not decided on the registry as it is, and
        no ``candidates`` to build it from.
    """
    store = current_state().store
    for built in (False, True):
        left = store.admins_leave(user_id, token=token, force=force)
        if left in (AdminsLeft.LEFT, AdminsLeft.LEFT_LAST):
            return
        if left is AdminsLeft.LOCK_LOST:
            raise StoreUnavailable(_TOO_LONG)
        if built:
            break
        # No registry yet, or a would-be "last" on one that may lack an
        # admin: ask again of one built from the records.
        if candidates is None:
            if left is AdminsLeft.UNDECIDED:
                # Made now, empty: an admin made while the records are read
                # joins it. Lacking admins, it can only make others ask again.
                _start_admins(token)
            raise _RegistryIncomplete
        _build_admins(token, candidates)
    raise LastAdmin("This is the last admin: make another admin first.")


def create(user: User) -> bool:
    """Add a user to the user store; ``False`` (nothing changed) when the id is taken."""
    store = current_state().store
    if not is_admin(user):
        return store.create_user(user)
    with _admins_locked() as token:
        created = store.create_user(user)
        if created:
            store.admins_join([user.id], token=token)
    return created


def update(
    user_id: str,
    *,
    disabled: bool | None = None,
    roles: tuple[str, ...] | None = None,
    force: bool = False,
) -> User:
    """Disable or enable a user, or set its roles; sessions end as the store says.

    :param force: even if it takes the last admin away (the CLI's ``--force``).
    :raises UserNotFound: no such user.
    :raises LastAdmin: the user is the last admin, and the change would end that.
    :raises AdminsLocked: another change held the lock of admin changes too long.
    """
    store = current_state().store

    def after(before: User) -> User:
        return dataclasses.replace(
            before,
            disabled=before.disabled if disabled is None else disabled,
            roles=before.roles if roles is None else roles,
        )

    def apply(expected: User | None) -> User:
        changed = store.update_user(
            user_id,
            now=int(time.time()),
            actor=_actor(),
            disabled=disabled,
            roles=roles,
            expected=expected,
        )
        if changed is None:
            raise UserNotFound("No such user.")
        reason, revoked = changed
        audit.revoked(user_id, revoked, reason, None)
        return get(user_id)

    before = get(user_id)
    if not is_admin(before) and not is_admin(after(before)):
        # No admin before or after: no lock, if the record is still as read
        # (a promotion of the user meanwhile raised its version).
        try:
            return apply(expected=before)
        except UserChanged:
            pass

    def change(token: str, candidates: Collection[str] | None) -> User:
        before = get(user_id)
        if is_admin(before) and not is_admin(after(before)):
            _leave_admins(user_id, token, force=force, candidates=candidates)
        user = apply(expected=None)
        if is_admin(user):
            store.admins_join([user_id], token=token)
        return user

    return _admin_change(change)


def delete(user_id: str, *, force: bool = False) -> int:
    """Delete a user with all its sessions; how many sessions ended.

    :param force: even the last admin (the CLI's ``--force``).
    :raises UserNotFound: no such user.
    :raises LastAdmin: the user is the last admin.
    :raises AdminsLocked: another change held the lock of admin changes too long.
    """

    store = current_state().store

    def change(token: str, candidates: Collection[str] | None) -> list[str] | None:
        if is_admin(get(user_id)):
            _leave_admins(user_id, token, force=force, candidates=candidates)
        return store.delete_user(user_id, now=int(time.time()), actor=_actor())

    before = get(user_id)
    revoked: list[str] | None
    if is_admin(before):
        revoked = _admin_change(change)
    else:
        # No lock, if the record is still as read (see update).
        try:
            revoked = store.delete_user(
                user_id, now=int(time.time()), actor=_actor(), expected=before
            )
        except UserChanged:
            revoked = _admin_change(change)
    if revoked is None:
        raise UserNotFound("No such user.")
    audit.revoked(user_id, revoked, "user_deleted", None)
    return len(revoked)


def any_admin() -> bool:
    """Whether the user store has an admin (read from every record: for the CLI)."""
    return bool(current_state().store.enabled_users_with_role(ADMIN_ROLE))


def change_password(
    user_id: str, current_password: str, new_password: str, *, keep: str | None
) -> int:
    """Check the current password, store the new one, end every session but ``keep``.

    :returns: how many sessions ended.
    :raises InvalidCredentials: the current password is wrong, or another
        change came first (nothing changed).
    :raises WeakPassword: the new password breaks the policy, or is the
        current one (nothing changed, and nothing checked: the policy comes
        first, as it needs no hash).
    """
    passwords.check_policy(user_id, new_password, current=current_password)
    user, _ = authenticate(user_id, current_password, signed_in=True)
    return _store_new_password(user, new_password, keep=keep)


def set_password(user_id: str, new_password: str) -> int:
    """Set a user's password (the CLI): every session ends.

    :raises UserNotFound: no such user.
    :raises WeakPassword: the new password breaks the policy, or is the current one.
    """
    user = get(user_id)
    passwords.check_policy(user_id, new_password)
    if passwords.verify(user.password_hash, new_password)[0]:
        raise WeakPassword(passwords.SAME_AS_CURRENT)
    return _store_new_password(user, new_password, keep=None)


def _store_new_password(user: User, new_password: str, *, keep: str | None) -> int:
    # For a user who proved the current password (or the CLI's operator):
    # it waits as a returning user's sign-in does, not as a stranger's.
    with current_state().hash_slots.held(known=lambda: True):
        new = passwords.hash_password(new_password)
    store = current_state().store
    revoked = store.change_password(
        user.id, new, expected=user.password_hash, now=int(time.time()), actor=_actor(), keep=keep
    )
    if revoked is None:
        # A sign-in may have upgraded an older scheme's hash meanwhile: the
        # same password, which leaves the version as it was (every change
        # of the password raises it). Then the change goes ahead.
        now = store.get_user(user.id)
        if now is not None and (now.account, now.version) == (user.account, user.version):
            revoked = store.change_password(
                user.id,
                new,
                expected=now.password_hash,
                now=int(time.time()),
                actor=_actor(),
                keep=keep,
            )
    if revoked is None:
        raise InvalidCredentials("The password was changed meanwhile.")
    audit.revoked(user.id, revoked, "password_changed", None)
    audit.password_changed(user.id, keep, len(revoked))
    return len(revoked)
