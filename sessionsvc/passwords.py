"""Passwords of the standalone service's users: the policy and the hashes.

New hashes are argon2id (argon2-cffi) with at least OWASP's parameters
(m = 19 MiB, t = 2, p = 1): about 30 ms of one core per hash or check here,
run outside the GIL. Hashes of an older scheme (werkzeug's scrypt or
pbkdf2, from before) still verify, and :func:`verify` hands back an argon2id
hash to store in their place. The policy is NIST SP 800-63B's: a length, and
not the username; no composition rules.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

from .errors import WeakPassword

#: Shortest and longest password the policy accepts, in characters.
MIN_LENGTH, MAX_LENGTH = 8, 1024

#: argon2id at OWASP's minimum: 19 MiB, two passes, one lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

_ARGON2 = "$argon2"


def check_policy(username: str, password: str) -> None:
    """Refuse a new password the policy does not allow.

    :raises WeakPassword: saying which rule it breaks (400 ``weak_password``).
    """
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"The password must be at least {MIN_LENGTH} characters long.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"The password must be at most {MAX_LENGTH} characters long.")
    if password == username:
        raise WeakPassword("The password must not be the username.")


def hash_password(password: str) -> str:
    """The stored form of a new password: an argon2id hash."""
    return HASHER.hash(password)


def verify(stored: str, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches the ``stored`` hash, and what to store instead.

    :returns: ``(matches, upgraded)``; ``upgraded`` is an argon2id hash of the
        password when it matched a hash of an older scheme, else ``None``.
    """
    if stored.startswith(_ARGON2):
        try:
            return HASHER.verify(stored, password), None
        except (VerificationError, InvalidHashError):
            return False, None
    if check_password_hash(stored, password):
        return True, hash_password(password)
    return False, None


@functools.cache
def _unknown_user_hash() -> str:
    return hash_password("sessionsvc: no such user")


def waste_time(password: str) -> None:
    """Check ``password`` against a hash of no one's: a login for an unknown
    username costs what one with a wrong password costs."""
    verify(_unknown_user_hash(), password)
