"""Passwords of the standalone service's users: the policy and the hashes.

New hashes are argon2id (argon2-cffi) with at least OWASP's parameters
(m = 19 MiB, t = 2, p = 1): about 30 ms of one core per hash or check here,
run outside the GIL. Hashes of an older scheme (werkzeug's scrypt or
pbkdf2, from before) still verify, and :func:`verify` hands back an argon2id
hash to store in their place. The policy is NIST SP 800-63B's: a length,
not a common password, not the username, not the current password again; no
composition rules.

A process runs at most :class:`HashSlots` hashes at once: past that, a
request is answered 503 ``busy`` rather than queued behind a flood.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import threading
import unicodedata
from collections.abc import Callable, Iterator
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

from .errors import Busy, WeakPassword

#: Shortest and longest password the policy accepts, in characters.
MIN_LENGTH, MAX_LENGTH = 8, 1024

#: The blocklist shipped in the package: zxcvbn's ranked list of the 30,000
#: most common passwords, lowercase, one a line (provenance and license in
#: ``common-passwords.LICENSE``). The entries shorter than :data:`MIN_LENGTH`
#: are there for a password that is one of them with digits added.
COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"
#: How many of the most common passwords the blocklist stands for.
COMMON_PASSWORDS_RANKED = 30_000

#: The detail of a new password that is the current one.
SAME_AS_CURRENT = "The new password must not be the current password."

#: argon2id at OWASP's minimum: 19 MiB, two passes, one lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

_ARGON2 = "$argon2"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The blocklist, read from the package on first use, once per process
    (30,000 entries, about 4 MB in memory, ~10 ms)."""
    data = resources.files(__package__).joinpath("data", COMMON_PASSWORDS_FILE).read_bytes()
    return frozenset(gzip.decompress(data).decode().splitlines())


#: At most this many digits added at the end of a common password still
#: make it common: ``football7``, ``sunshine12``, ``password2024``.
COMMON_SUFFIX_DIGITS = 4


def _blocklist_forms(password: str) -> Iterator[str]:
    """The forms of ``password`` looked up in the blocklist.

    As a guesser would try it: compatibility-normalised (NFKC: ``password``
    in full-width letters is ``password``), case-folded (``Password1``),
    without surrounding whitespace (``" password "``; the password itself
    is stored as typed, never trimmed), and without up to
    :data:`COMMON_SUFFIX_DIGITS` digits at its end (``football7``).
    """
    plain = unicodedata.normalize("NFKC", password).strip().casefold()
    yield plain
    for cut in range(1, min(COMMON_SUFFIX_DIGITS, len(plain) - 1) + 1):
        if not plain[-cut].isdigit():
            break
        yield plain[:-cut]


def check_policy(username: str, password: str, *, current: str | None = None) -> None:
    """Refuse a new password the policy does not allow.

    :param current: the password it replaces, when known (a change).
    :raises WeakPassword: saying which rule it breaks (400 ``weak_password``).
    """
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"The password must be at least {MIN_LENGTH} characters long.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"The password must be at most {MAX_LENGTH} characters long.")
    common = common_passwords()
    if any(form in common for form in _blocklist_forms(password)):
        raise WeakPassword(
            f"The password is one of the {COMMON_PASSWORDS_RANKED:,} most common passwords "
            "(ignoring case, spaces around it and digits added at its end); "
            "choose a less common one."
        )
    if password == username:
        raise WeakPassword("The password must not be the username.")
    if current is not None and password == current:
        raise WeakPassword(SAME_AS_CURRENT)


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


#: How long a sign-in waits for a hash slot before the answer is 503
#: ``busy``: a few hashes' time, for a short burst.
HASH_WAIT = 0.25
#: How long a sign-in of a user from an address it signed in from before
#: waits for a slot (it goes ahead of the others).
KNOWN_WAIT = 1.0


def _nobody() -> bool:
    return False


class HashSlots:
    """At most ``size`` password hashes of this process at once.

    An argon2id hash takes ~30 ms of a core and releases the GIL: past one
    hash per core more at once only make each slower, and a flood of
    sign-ins (of names that do not exist, which cost a hash too) would make
    every sign-in wait its share of the whole flood. So a hash waits for a
    slot, and past that wait it is refused with
    :class:`~sessionsvc.errors.Busy` (503 ``busy``, ``Retry-After: 1``):

    - a hash for a user signing in from an address it signed in from before
      (``known``) waits up to :data:`KNOWN_WAIT` and takes the next free
      slot before any other: a flood from elsewhere cannot crowd it out.
      A stranger from elsewhere never gets this place, whatever name it
      tries, so it tells nothing about which names exist; one behind the
      same address (a shared NAT) who names the user does, and may learn
      that the user signed in from there, which the login limit's
      exemption (the same test) tells it already;
    - any other waits up to :data:`HASH_WAIT`, and at most ``size`` of them
      wait at once (the next is refused at once), so a flood holds at most
      twice ``size`` request threads of a worker and leaves the rest to the
      other routes.
    """

    def __init__(
        self, size: int, *, wait: float = HASH_WAIT, known_wait: float = KNOWN_WAIT
    ) -> None:
        #: How many hashes may run at once.
        self.size = size
        self._wait, self._known_wait = wait, known_wait
        self._lock = threading.Lock()
        self._known_turn = threading.Condition(self._lock)
        self._other_turn = threading.Condition(self._lock)
        self._free = size
        self._known_waiting = self._others_waiting = 0

    def _other_may_run(self) -> bool:
        return self._free > 0 and not self._known_waiting

    def _take(self, known: bool) -> bool:
        if known:
            self._known_waiting += 1
            try:
                return self._known_turn.wait_for(lambda: self._free > 0, self._known_wait)
            finally:
                self._known_waiting -= 1
                if not self._known_waiting and self._other_may_run():
                    self._other_turn.notify()
        if self._others_waiting >= self.size and not self._other_may_run():
            return False
        self._others_waiting += 1
        try:
            return self._other_turn.wait_for(self._other_may_run, self._wait)
        finally:
            self._others_waiting -= 1

    @contextlib.contextmanager
    def held(self, *, known: Callable[[], bool] = _nobody) -> Iterator[None]:
        """Run the ``with`` block in a slot.

        :param known: tells whether the hash is for a user signing in from
            an address it signed in from before; asked only when no slot is
            free at once (it may ask the store).
        :raises Busy: no slot came free within the wait.
        """
        with self._lock:
            free = self._other_may_run()
            if free:
                self._free -= 1
        if not free:
            is_known = known()
            with self._lock:
                if not self._take(is_known):
                    raise Busy("Too many sign-ins at once; try again in a moment.")
                self._free -= 1
        try:
            yield
        finally:
            with self._lock:
                self._free += 1
                (self._known_turn if self._known_waiting else self._other_turn).notify()
