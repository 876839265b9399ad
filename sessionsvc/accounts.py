"""The standalone service's accounts: create, change a password, disable, set roles, delete.

What the auth and admin routes and the CLI do with a user. Each change that
ends sessions ends them in the same atomic script as the change itself
(see :mod:`sessionsvc.store.users`), and is reported like every other
revocation (:mod:`sessionsvc.audit`).
"""

from __future__ import annotations

import secrets
import time

from flask import has_request_context, request

from . import audit, devices, passwords
from .errors import InvalidCredentials, UserDisabled, UserNotFound, WeakPassword
from .models import User
from .state import current_state
from .store import Actor, address_group


def new_user(user_id: str, password: str, *, admin: bool = False) -> User:
    """A user record for the user store, with a new account.

    :raises WeakPassword: the password breaks the policy.
    """
    passwords.check_policy(user_id, password)
    return User(
        id=user_id,
        password_hash=passwords.hash_password(password),
        roles=("admin",) if admin else (),
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


def authenticate(user_id: str, password: str) -> tuple[User, str | None]:
    """The user whose password this is, and a hash to store instead of an
    older scheme's (see :func:`passwords.verify`).

    An unknown user costs one hash check, as a wrong password does, and is
    refused the same way; either waits for one of the process's hash slots,
    ahead of the others when the user signed in from this address before.

    :raises InvalidCredentials: no such user, or not its password.
    :raises Busy: no hash slot came free in time (nothing was checked).
    """
    state = current_state()
    user = state.store.get_user(user_id) if user_id else None

    # Asked for every name, existing or not, and only when the slots are
    # full: the answer says nothing of which names exist.
    def known() -> bool:
        return bool(user_id) and signed_in_here(user_id)

    if user is None:
        with state.hash_slots.held(known=known):
            passwords.waste_time(password)
        raise InvalidCredentials("Wrong username or password.")
    with state.hash_slots.held(known=known):
        matches, upgraded = passwords.verify(user.password_hash, password)
    if not matches:
        raise InvalidCredentials("Wrong username or password.")
    return user, upgraded


def sign_in(user_id: str, password: str) -> User:
    """The user a sign-in with this password is for, its hash upgraded when of
    an older scheme (argon2id from now on, unless a change came first).

    :raises InvalidCredentials: no such user, or not its password.
    :raises UserDisabled: the user is disabled (said only with the right password).
    """
    user, upgraded = authenticate(user_id, password)
    if user.disabled:
        raise UserDisabled("This user is disabled.")
    if upgraded is not None:
        current_state().store.set_password_hash(user.id, upgraded, expected=user.password_hash)
    return user


def all_users() -> list[User]:
    """Every user, by id (users deleted meanwhile left out)."""
    store = current_state().store
    found = (store.get_user(user_id) for user_id in store.user_ids())
    return [user for user in found if user is not None]


def _actor() -> Actor:
    return devices.request_actor() or Actor()


def update(
    user_id: str, *, disabled: bool | None = None, roles: tuple[str, ...] | None = None
) -> User:
    """Disable or enable a user, or set its roles; sessions end as the store says.

    :raises UserNotFound: no such user.
    """
    changed = current_state().store.update_user(
        user_id, now=int(time.time()), actor=_actor(), disabled=disabled, roles=roles
    )
    if changed is None:
        raise UserNotFound("No such user.")
    reason, revoked = changed
    audit.revoked(user_id, revoked, reason, None)
    return get(user_id)


def delete(user_id: str) -> int:
    """Delete a user with all its sessions; how many sessions ended.

    :raises UserNotFound: no such user.
    """
    revoked = current_state().store.delete_user(user_id, now=int(time.time()), actor=_actor())
    if revoked is None:
        raise UserNotFound("No such user.")
    audit.revoked(user_id, revoked, "user_deleted", None)
    return len(revoked)


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
    user, _ = authenticate(user_id, current_password)
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
    with current_state().hash_slots.held():
        new = passwords.hash_password(new_password)
    revoked = current_state().store.change_password(
        user.id, new, expected=user.password_hash, now=int(time.time()), actor=_actor(), keep=keep
    )
    if revoked is None:
        raise InvalidCredentials("The password was changed meanwhile.")
    audit.revoked(user.id, revoked, "password_changed", None)
    audit.password_changed(user.id, keep, len(revoked))
    return len(revoked)
