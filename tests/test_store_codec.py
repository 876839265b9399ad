"""The stored formats: events' type codes and the time in the id, sessions'
``cip`` kept only once the address changed; and what earlier releases
stored (events kept 30 days in users' lists and in the webhook/audit
stream, session hashes with ``cip``) still reads the same."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionsvc.models import EVENT_TYPES, SecurityEvent, Session
from sessionsvc.store import Actor, SessionStore
from sessionsvc.store.codec import TYPE_CODES, agent_digest, event_from_json, event_head
from tests.clients import CHROME
from tests.test_store import create, make_session

ID = "1796519174852425.642f1f-1"
SID = "Navxx31fFBhICotRklY9Dg"


@pytest.fixture
def rc(backend: Any) -> redis.Redis:
    return backend.client()


@pytest.fixture
def store(backend: Any, rc: redis.Redis) -> SessionStore:
    return SessionStore(lambda: rc, prefix=backend.prefix, events_ttl=30 * 86400)


def old_entry(
    kind: str, *, at: int = 1796519174, sid: str = SID, event_id: str = ID, **extra: Any
) -> str:
    """An event as releases before type codes stored it."""
    fields = {"t": at, "ip": "198.51.100.4", **extra, "k": kind, "s": sid, "i": event_id}
    return json.dumps(fields, separators=(",", ":"))


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_old_and_new_formats_read_as_one_event(kind: str) -> None:
    new = json.dumps({"ip": "198.51.100.4", "k": TYPE_CODES[kind], "s": SID, "i": ID})
    expected = SecurityEvent(ID, kind, 1796519174, SID, "198.51.100.4", None, {})
    assert event_from_json(old_entry(kind)) == expected
    assert event_from_json(new) == expected


def test_an_old_entry_with_reason_detail_and_user_agent_reads_whole() -> None:
    entry = old_entry("session.revoked", ua=CHROME, r="idle", d={"from": "a"})
    event = event_from_json(entry)
    assert (event.type, event.at, event.user_agent) == ("session.revoked", 1796519174, CHROME)
    assert event.detail == {"from": "a", "reason": "idle"}


def test_the_lua_type_codes_are_the_codec_s() -> None:
    text = (Path(__file__).parent.parent / "sessionsvc/store/scripts/events.lua").read_text()
    block = text[text.index("local TYPE_CODES = {") : text.index("}", text.index("TYPE_CODES"))]
    assert dict(re.findall(r"\['([a-z._]+)'\] = '([a-z])'", block)) == TYPE_CODES
    assert set(TYPE_CODES) == set(EVENT_TYPES)
    assert len(set(TYPE_CODES.values())) == len(TYPE_CODES)


def test_a_new_event_is_29_bytes_shorter_than_before(store: SessionStore, rc: redis.Redis) -> None:
    now = int(time.time())
    session = make_session(now=now)
    create(store, session)
    [entry] = rc.lrange(store.events_key("alice"), 0, -1)
    fields = json.loads(entry)
    assert fields["k"] == "c" and "t" not in fields
    assert list(fields) == ["ip", "uh", "k", "s", "i"]
    # What the release before stored for the same event.
    before = old_entry(
        "session.created", at=now, sid=session.id, event_id=fields["i"], uh=agent_digest(CHROME)
    )
    assert len(before) - len(entry) == 29
    [event] = store.events("alice", limit=10)
    assert (event.type, event.at, event.session_id) == ("session.created", now, session.id)


def test_a_caller_s_own_clock_keeps_its_time(store: SessionStore, rc: redis.Redis) -> None:
    then = int(time.time()) - 3 * 86400
    create(store, make_session(now=then))
    [entry] = rc.lrange(store.events_key("alice"), 0, -1)
    assert json.loads(entry)["t"] == then
    assert store.events("alice", limit=10)[0].at == then


def test_old_entries_in_a_user_s_list_read_beside_new_ones(
    store: SessionStore, rc: redis.Redis
) -> None:
    at = int(time.time()) - 86400
    old = old_entry(
        "session.revoked", at=at, sid="old-session", event_id=f"{at}000000.1abcd-1", ua=CHROME
    )
    old = old[:-1] + ',"r":"user"}'
    rc.lpush(store.events_key("alice"), old)
    session = make_session(now=int(time.time()))
    create(store, session)
    newest, oldest = store.events("alice", limit=10)
    assert (newest.type, newest.session_id, newest.user_agent) == (
        "session.created",
        session.id,
        CHROME,
    )
    assert (oldest.type, oldest.at, oldest.session_id) == ("session.revoked", at, "old-session")
    assert (oldest.user_agent, oldest.detail) == (CHROME, {"reason": "user"})


def test_a_head_without_anything_known_is_an_open_object() -> None:
    head, event_id = event_head(int(time.time()), None, None)
    assert head == "{" and re.fullmatch(r"\d{16}\.[0-9a-f]+", event_id)
    head, _ = event_head(12, "198.51.100.4", None)
    assert head == '{"t":12,"ip":"198.51.100.4",'


# -- sessions' created_ip ----------------------------------------------------------

FIRST, SECOND, THIRD = "198.51.100.4", "203.0.113.9", "192.0.2.33"


def read_every_way(store: SessionStore, session_id: str) -> list[Session]:
    """The session as each reader gives it: get, the list, rename."""
    got = store.get("alice", session_id)
    [listed] = store.list_sessions("alice", now=int(time.time()))
    renamed = store.rename("alice", session_id, None)
    assert got is not None and renamed is not None
    return [got, listed, renamed]


def addresses(store: SessionStore, session_id: str) -> set[tuple[str | None, str | None]]:
    return {(s.created_ip, s.ip) for s in read_every_way(store, session_id)}


def move(store: SessionStore, session_id: str, ip: str, now: int) -> None:
    store.check_refresh("alice", session_id, now=now, actor=Actor(ip=ip))


def test_a_session_opens_without_cip_and_reads_its_address_as_created_ip(
    store: SessionStore, rc: redis.Redis
) -> None:
    session = make_session(now=int(time.time()), ip=FIRST)
    create(store, session)
    assert "cip" not in rc.hgetall(store.session_key("alice", session.id))
    assert addresses(store, session.id) == {(FIRST, FIRST)}
    assert store.get("alice", session.id) == session


@pytest.mark.parametrize(("opened_from", "cip"), [(FIRST, FIRST), (None, "")])
def test_an_address_change_keeps_the_first_address_and_a_second_keeps_it_too(
    store: SessionStore, rc: redis.Redis, opened_from: str | None, cip: str
) -> None:
    now = int(time.time())
    session = make_session(now=now, ip=opened_from)
    create(store, session)
    move(store, session.id, SECOND, now + 1)
    assert rc.hget(store.session_key("alice", session.id), "cip") == cip
    assert addresses(store, session.id) == {(opened_from, SECOND)}
    move(store, session.id, THIRD, now + 2)
    assert addresses(store, session.id) == {(opened_from, THIRD)}


def test_a_created_ip_other_than_the_address_is_stored(
    store: SessionStore, rc: redis.Redis
) -> None:
    session = make_session(now=int(time.time()), ip=SECOND, created_ip=FIRST)
    create(store, session)
    assert rc.hget(store.session_key("alice", session.id), "cip") == FIRST
    assert store.get("alice", session.id) == session


def test_an_old_hash_with_cip_reads_as_before(store: SessionStore, rc: redis.Redis) -> None:
    now = int(time.time())
    session = make_session(now=now, ip=FIRST)
    create(store, session)
    key = store.session_key("alice", session.id)
    # As releases before stored every session: cip beside ip, even equal.
    rc.hset(key, "cip", FIRST)
    assert addresses(store, session.id) == {(FIRST, FIRST)}
    move(store, session.id, SECOND, now + 1)
    assert addresses(store, session.id) == {(FIRST, SECOND)}
    # And one whose address had changed before.
    rc.hset(key, mapping={"cip": THIRD, "ip": SECOND})
    move(store, session.id, FIRST, now + 2)
    assert rc.hget(key, "cip") == THIRD
    assert addresses(store, session.id) == {(THIRD, FIRST)}
