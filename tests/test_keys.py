"""Property tests of the key layout: any user id gets keys of its own, in one slot.

docs/api.md (section 9): a user's keys share one Redis Cluster hash slot (a
``{...}`` hash tag built from the user id), and any user id string maps to
its own keys with no collision between users. User ids here are any
non-empty text, lone surrogates included (valid JSON strings, so a ``sub``
may carry one); the service refuses the empty id (``SessionManager.open``,
``tokens.token_session``), and so do these tests.
"""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from sessionsvc.store import SessionStore, user_tag

#: No example database is written (nothing to replay between CI runs).
PROPERTIES = settings(max_examples=300, deadline=None, database=None)

#: Every character, surrogates too, with the ones that matter to a key
#: layout (hash-tag braces, the separator, space, NUL, lone surrogates,
#: what base64 itself is made of) drawn often.
CHARS = st.one_of(
    st.sampled_from("{}: \x00\ud800\udfff?=_-"),
    st.characters(exclude_categories=[]),
)


def texts(*, min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[str]:
    # Joined from a list: st.text() would merge CHARS into one uniform
    # alphabet and lose the weight on the characters above.
    return st.lists(CHARS, min_size=min_size, max_size=max_size).map("".join)


USER_IDS = texts(min_size=1)
#: Session ids as we make them, and anything a URL could carry.
SESSION_IDS = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{22}", fullmatch=True), texts())


@st.composite
def user_id_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two user ids: unrelated, or the second one edit away from the first.

    Near neighbours are where a lossy encoding (surrogates replaced, case
    or Unicode normalisation, braces stripped) would make two ids collide.
    """
    first = draw(USER_IDS)
    if draw(st.booleans()):
        return first, draw(USER_IDS)
    at = draw(st.integers(0, len(first)))
    edit = draw(st.sampled_from(["replace", "insert", "delete"]))
    char = draw(CHARS)
    if edit == "replace" and at < len(first):
        second = first[:at] + char + first[at + 1 :]
    elif edit == "delete" and at < len(first) and len(first) > 1:
        second = first[:at] + first[at + 1 :]
    else:
        second = first[:at] + char + first[at:]
    return first, second


#: What Settings accepts as SESSIONSVC_KEY_PREFIX: non-empty, no braces.
PREFIXES = st.text(st.characters(exclude_characters="{}"), min_size=1, max_size=12)


def store(prefix: str) -> SessionStore:
    """Key names only: the client is never made."""
    return SessionStore(lambda: None, prefix=prefix)


def keys_of(sessions: SessionStore, user_id: str, session_ids: list[str]) -> list[str]:
    """Every key the store names for one user."""
    return [
        *(sessions.session_key(user_id, session_id) for session_id in session_ids),
        sessions.index_key(user_id),
        sessions.events_key(user_id),
        sessions.user_key(user_id),
        sessions.known_key(user_id),
    ]


def hash_tag(key: str) -> str | None:
    """What Redis Cluster hashes: between the first ``{`` and the next ``}``, if not empty."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


def slot(key: str) -> int:
    # Lone surrogates travel as their UTF-8-style bytes (as redis-py would
    # need them encoded); only the ASCII hash tag is hashed anyway.
    return key_slot(key.encode("utf-8", "surrogatepass"))


@given(user_id=USER_IDS)
@PROPERTIES
def test_the_tag_is_url_safe_base64_that_gives_the_user_id_back(user_id: str) -> None:
    tag = user_tag(user_id)
    # No brace, colon or anything else a key gives meaning to, and never empty
    # (an empty {} is no hash tag to Redis Cluster).
    assert re.fullmatch(r"[A-Za-z0-9_-]+", tag), tag
    # It decodes back: two ids can only share a tag by being the same id.
    padded = tag + "=" * (-len(tag) % 4)
    assert base64.urlsafe_b64decode(padded).decode("utf-8", "surrogatepass") == user_id


@given(pair=user_id_pairs())
@PROPERTIES
def test_distinct_user_ids_get_distinct_tags(pair: tuple[str, str]) -> None:
    first, second = pair
    assert (user_tag(first) == user_tag(second)) == (first == second)


@given(
    prefix=PREFIXES,
    pair=user_id_pairs(),
    session_ids=st.lists(SESSION_IDS, min_size=1, max_size=3),
    other_session_ids=st.lists(SESSION_IDS, min_size=1, max_size=3),
)
@PROPERTIES
def test_distinct_users_never_share_a_key(
    prefix: str, pair: tuple[str, str], session_ids: list[str], other_session_ids: list[str]
) -> None:
    first, second = pair
    sessions = store(prefix)
    mine = set(keys_of(sessions, first, session_ids))
    theirs = set(keys_of(sessions, second, other_session_ids))
    if first == second:
        assert sessions.index_key(first) in mine & theirs
    else:
        assert not mine & theirs


@given(
    prefix=PREFIXES,
    user_id=USER_IDS,
    session_ids=st.lists(SESSION_IDS, min_size=1, max_size=4, unique=True),
)
@PROPERTIES
def test_every_key_of_a_user_is_in_the_slot_of_its_tag(
    prefix: str, user_id: str, session_ids: list[str]
) -> None:
    keys = keys_of(store(prefix), user_id, session_ids)
    # One key per session and per kind: none of a user's keys is another's.
    assert len(set(keys)) == len(keys)
    tag = user_tag(user_id)
    for key in keys:
        assert key.startswith(f"{prefix}:{{{tag}}}:"), key
        assert hash_tag(key) == tag, key
        assert slot(key) == key_slot(tag.encode("ascii")), key
