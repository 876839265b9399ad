"""The standalone service's accounts: create, change a password, disable, set roles, delete.

What the auth and admin routes and the CLI do with a user. Each change that
ends sessions ends them in the same atomic script as the change itself
(see :mod:`sessionsvc.store.users`), and is reported like every other
revocation (:mod:`sessionsvc.audit`).
"""

from __future__ import annotations

import secrets
import time

from . import audit, devices, passwords
from .errors import InvalidCredentials, UserDisabled, UserNotFound
from .models import TokenPair, User
from .state import current_manager, current_state
from .store import Actor, UserChanged


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


def authenticate(user_id: str, password: str) -> tuple[User, str | None]:
    """The user whose password this is, and a hash to store instead of an
    older scheme's (see :func:`passwords.verify`).

    An unknown user costs one hash check, as a wrong password does, and is
    refused the same way.

    :raises InvalidCredentials: no such user, or not its password.
    """
    user = current_state().store.get_user(user_id) if user_id else None
    if user is None:
        passwords.waste_time(password)
        raise InvalidCredentials("Wrong username or password.")
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
    for _ in range(SIGN_IN_TRIES):
        user, upgraded = authenticate(user_id, password)
        if user.disabled:
            raise UserDisabled("This user is disabled.")
        if upgraded is not None:
            current_state().store.set_password_hash(user.id, upgraded, expected=user.password_hash)
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
    :raises WeakPassword: the new password breaks the policy (nothing changed).
    """
    user, _ = authenticate(user_id, current_password)
    return _store_new_password(user, new_password, keep=keep)


def set_password(user_id: str, new_password: str) -> int:
    """Set a user's password (the CLI): every session ends.

    :raises UserNotFound: no such user.
    :raises WeakPassword: the new password breaks the policy.
    """
    return _store_new_password(get(user_id), new_password, keep=None)


def _store_new_password(user: User, new_password: str, *, keep: str | None) -> int:
    passwords.check_policy(user.id, new_password)
    new = passwords.hash_password(new_password)
    revoked = current_state().store.change_password(
        user.id, new, expected=user.password_hash, now=int(time.time()), actor=_actor(), keep=keep
    )
    if revoked is None:
        raise InvalidCredentials("The password was changed meanwhile.")
    audit.revoked(user.id, revoked, "password_changed", None)
    audit.password_changed(user.id, keep, len(revoked))
    return len(revoked)
