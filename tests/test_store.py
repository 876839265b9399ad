"""The Redis store: layout, atomic scripts, round trips, key mapping, URLs."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
import time_machine
from gunicorn.app.base import BaseApplication
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

import sessionsvc.store.connections as connections
import sessionsvc.store.devstore as devstore
from sessionsvc.devices import parse_user_agent
from sessionsvc.errors import StoreUnavailable
from sessionsvc.extension import new_session_id
from sessionsvc.geo import Locator
from sessionsvc.models import Device, Location, SecurityEvent, Session, User
from sessionsvc.settings import ConfigError
from sessionsvc.store import (
    Actor,
    AdminsLeft,
    CheckStatus,
    Policy,
    SessionStore,
    UserChanged,
    client_factory_from_url,
    store_from_url,
    user_tag,
)
from sessionsvc.store.codec import (
    AGENT_TEXT_MAX,
    AGENTS_MAX,
    AgentTexts,
    agent_digest,
    event_from_json,
)
from tests.backends import delete_prefix, record_commands
from tests.clients import CHROME, CHROME_121, FIREFOX_LINUX, IPHONE
from tests.geodata import BERLIN, BERLIN_IP, NEW_YORK, NEW_YORK_IP
from tests.servers import free_port

EVENTS_MAX = 50
EVENTS_TTL = 7 * 86400
ACTOR = Actor(ip="198.51.100.4", user_agent=CHROME)
#: A request from the device and address of make_session()'s sessions.
ACTOR_REQUEST = Actor(
    ip="198.51.100.4",
    user_agent=CHROME,
    device=Device("desktop", "Chrome", "120.0", "Windows", "10"),
)


@pytest.fixture
def rc(backend: Any) -> redis.Redis:
    """A client of the test's store (fakeredis or the real server)."""
    return backend.client()


@pytest.fixture
def store(backend: Any, rc: redis.Redis) -> SessionStore:
    return SessionStore(
        lambda: rc, prefix=backend.prefix, events_max=EVENTS_MAX, events_ttl=EVENTS_TTL
    )


@pytest.fixture
def now() -> int:
    return int(time.time())


def make_session(
    user_id: str = "alice",
    *,
    now: int,
    ttl: int = 3600,
    last_seen: int | None = None,
    ip: str | None = "198.51.100.4",
    created_ip: str | None = None,
    jti: str | None = "jti-1",
    **extra: Any,
) -> Session:
    return Session(
        id=new_session_id(),
        user_id=user_id,
        created_at=now,
        last_seen_at=now if last_seen is None else last_seen,
        expires_at=now + ttl,
        ip=ip,
        created_ip=created_ip or ip,
        user_agent=CHROME,
        device=Device("desktop", "Chrome", "120.0", "Windows", "10"),
        refresh_jti=jti,
        **extra,
    )


def create(store: SessionStore, session: Session, *, max_sessions: int = 100) -> list[str] | None:
    """Open a session; the ids it evicted, or ``None`` on an id clash."""
    opened = store.create(session, max_sessions=max_sessions, actor=ACTOR)
    return None if opened is None else opened.evicted


def stored(store: SessionStore, session_id: str, user_id: str = "alice") -> Session:
    session = store.get(user_id, session_id)
    assert session is not None
    return session


def tag_of(key: str) -> str:
    """The Redis Cluster hash tag of a key: between the first '{' and the next '}'."""
    start = key.index("{")
    end = key.index("}", start + 1)
    return key[start + 1 : end]


def slot(key: str) -> int:
    return key_slot(key.encode("utf-8"))


@pytest.fixture
def commands(rc: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command the client sends (each is one round trip without a pipeline)."""
    return record_commands(rc, monkeypatch)


def unchanged_keys(watcher: redis.Redis, *keys: str) -> Callable[[], bool]:
    """WATCH keys on another connection; the returned probe tells whether none was written."""
    # A transaction of one keyed command: on Redis Cluster both need a slot.
    pipe = watcher.pipeline(transaction=True)
    pipe.watch(*keys)

    def probe() -> bool:
        pipe.multi()
        pipe.exists(*keys)
        try:
            pipe.execute()
        except redis.WatchError:
            return False
        finally:
            pipe.reset()
        return True

    return probe


def event_summary(store: SessionStore, user_id: str = "alice") -> list[tuple[str, str, Any]]:
    return [
        (event.type, event.session_id, event.detail.get("reason"))
        for event in store.events(user_id, limit=1000)
    ]


# -- create ---------------------------------------------------------------------


def test_create_writes_session_hash_with_ttl_until_expiry(
    store: SessionStore, rc: redis.Redis, backend: Any, now: int
) -> None:
    session = make_session(now=now, ttl=3600)
    assert create(store, session) == []
    key = store.session_key("alice", session.id)
    assert re.fullmatch(rf"{re.escape(backend.prefix)}:\{{[^{{}}]+\}}:s:{session.id}", key)
    assert tag_of(key) == user_tag("alice")
    assert rc.type(key) == "hash"
    assert 3600 - 2 <= rc.ttl(key) <= 3600
    assert rc.hget(key, "x") == str(now + 3600)


def test_create_indexes_session_scored_by_expiry(
    store: SessionStore, rc: redis.Redis, backend: Any, now: int
) -> None:
    late = make_session(now=now, ttl=7200)
    early = make_session(now=now, ttl=600)
    create(store, late)
    create(store, early)
    index = store.index_key("alice")
    assert index == f"{backend.prefix}:{{{user_tag('alice')}}}:idx"
    assert rc.type(index) == "zset"
    assert rc.zrange(index, 0, -1, withscores=True) == [
        (early.id, float(now + 600)),
        (late.id, float(now + 7200)),
    ]
    # The index lives as long as its latest session, not only the last created.
    assert 7200 - 2 <= rc.ttl(index) <= 7200


def test_create_records_one_created_event(store: SessionStore, rc: redis.Redis, now: int) -> None:
    session = make_session(now=now)
    create(store, session)
    assert rc.type(store.events_key("alice")) == "list"
    [event] = store.events("alice", limit=10)
    assert event.type == "session.created"
    assert event.session_id == session.id
    assert event.at == now
    assert event.ip == ACTOR.ip
    assert event.user_agent == CHROME


def test_create_with_taken_id_returns_none_and_changes_nothing(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    key, index = store.session_key("alice", session.id), store.index_key("alice")
    before = (rc.hgetall(key), rc.zrange(index, 0, -1, withscores=True))
    clash = dataclasses.replace(make_session(now=now + 5, ttl=99, ip="203.0.113.9"), id=session.id)
    assert create(store, clash) is None
    assert (rc.hgetall(key), rc.zrange(index, 0, -1, withscores=True)) == before
    assert len(store.events("alice", limit=10)) == 1


def test_session_round_trips_through_create_and_get(store: SessionStore, now: int) -> None:
    session = make_session(
        now=now,
        last_seen=now - 5,
        ip="203.0.113.7",
        created_ip="198.51.100.4",
        location=Location("DE", "Berlin"),
        name="Work laptop",
    )
    create(store, session)
    assert store.get("alice", session.id) == session
    assert store.get("alice", "no-such-session") is None
    assert store.get("bob", session.id) is None


def test_bare_session_round_trips(store: SessionStore, now: int) -> None:
    session = Session(
        id=new_session_id(),
        user_id="alice",
        created_at=now,
        last_seen_at=now,
        expires_at=now + 60,
        ip=None,
        created_ip=None,
        user_agent=None,
    )
    create(store, session)
    assert store.get("alice", session.id) == session


# -- round trips ------------------------------------------------------------------


def test_create_is_one_round_trip(store: SessionStore, commands: list[str], now: int) -> None:
    create(store, make_session(now=now))  # loads the script into the server
    commands.clear()
    create(store, make_session(now=now))
    assert commands == ["EVALSHA"]


def test_list_is_one_round_trip(store: SessionStore, commands: list[str], now: int) -> None:
    for _ in range(3):
        create(store, make_session(now=now))
    store.list_sessions("alice", now=now)
    commands.clear()
    assert len(store.list_sessions("alice", now=now)) == 3
    assert commands == ["EVALSHA"]


def test_check_is_one_round_trip(store: SessionStore, commands: list[str], now: int) -> None:
    session = make_session(now=now)
    create(store, session)
    store.check_refresh("alice", session.id, now=now, actor=Actor(ip=session.ip))
    commands.clear()
    result = store.check_refresh("alice", session.id, now=now + 61, actor=Actor(ip="203.0.113.9"))
    assert result.status is CheckStatus.ACTIVE
    assert commands == ["EVALSHA"]


def test_with_webhooks_each_change_is_still_one_round_trip(
    store: SessionStore, commands: list[str], rc: redis.Redis, now: int
) -> None:
    store.webhooks = True
    store.load_scripts()
    # On a Cluster, also registers the user's stream (once per process and
    # slot: an SADD).
    create(store, make_session(now=now))
    commands.clear()
    session = make_session(now=now)
    create(store, session)
    store.check_refresh("alice", session.id, now=now + 61, actor=Actor(ip="203.0.113.9"))
    store.revoke("alice", [session.id], now=now + 62, reason="user", actor=ACTOR)
    assert commands == ["EVALSHA"] * 3
    [stream] = store.stream_keys("alice")
    if store.cluster:  # else one stream, P:{wh}:wh
        assert slot(stream) == slot(store.index_key("alice"))
    queued = [json.loads(fields["e"]) for _, fields in rc.xrange(stream)]
    assert [event_from_json(json.dumps(e)).type for e in queued] == [
        "session.created",
        "session.created",
        "session.ip_changed",
        "session.revoked",
    ]
    assert [e["i"] for e in queued[1:]] == [e.id for e in reversed(store.events("alice", limit=3))]


def test_check_in_steady_state_writes_nothing(
    store: SessionStore, backend: Any, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    key = store.session_key("alice", session.id)
    before = rc.hgetall(key)
    untouched = unchanged_keys(
        backend.client(), key, store.index_key("alice"), store.events_key("alice")
    )
    for offset in (0, 30, 59):
        result = store.check_refresh(
            "alice", session.id, now=now + offset, actor=Actor(ip=session.ip)
        )
        assert result.status is CheckStatus.ACTIVE
    assert untouched()
    assert rc.hgetall(key) == before


def test_check_with_touch_due_is_seen_as_a_write(
    store: SessionStore, backend: Any, now: int
) -> None:
    # The WATCH probe of the test above does notice writes.
    session = make_session(now=now)
    create(store, session)
    untouched = unchanged_keys(backend.client(), store.session_key("alice", session.id))
    store.check_refresh("alice", session.id, now=now + 60, actor=Actor(ip=session.ip))
    assert not untouched()


# -- check ------------------------------------------------------------------------


def test_check_of_missing_session_is_gone(store: SessionStore, now: int) -> None:
    result = store.check_refresh("alice", "no-such-session", now=now, actor=Actor(ip="192.0.2.1"))
    assert result.status is CheckStatus.GONE
    assert result.expires_at is None


def test_check_of_live_session_is_active_with_expiry(store: SessionStore, now: int) -> None:
    session = make_session(now=now, ttl=3600)
    create(store, session)
    result = store.check_refresh("alice", session.id, now=now, actor=Actor(ip=session.ip))
    assert result.status is CheckStatus.ACTIVE
    assert result.expires_at == now + 3600


def test_check_of_another_users_session_is_gone(store: SessionStore, now: int) -> None:
    session = make_session(now=now)
    create(store, session)
    result = store.check_refresh("bob", session.id, now=now, actor=Actor(ip=session.ip))
    assert result.status is CheckStatus.GONE


def test_touch_updates_last_seen_only_when_interval_elapsed(store: SessionStore, now: int) -> None:
    session = make_session(now=now)
    create(store, session)
    store.check_refresh("alice", session.id, now=now + 59, actor=Actor(ip=session.ip))
    assert stored(store, session.id).last_seen_at == now
    store.check_refresh("alice", session.id, now=now + 60, actor=Actor(ip=session.ip))
    assert stored(store, session.id).last_seen_at == now + 60
    store.check_refresh("alice", session.id, now=now + 100, actor=Actor(ip=session.ip))
    assert stored(store, session.id).last_seen_at == now + 60


def test_check_updates_ip_when_it_changes_even_before_touch(store: SessionStore, now: int) -> None:
    session = make_session(now=now, ip="198.51.100.4")
    create(store, session)
    store.check_refresh("alice", session.id, now=now + 1, actor=Actor(ip="203.0.113.9"))
    seen = store.get("alice", session.id)
    assert seen is not None
    assert seen.ip == "203.0.113.9"
    assert seen.last_seen_at == now


def test_created_ip_survives_an_ip_change(store: SessionStore, now: int) -> None:
    session = make_session(now=now, ip="198.51.100.4")
    create(store, session)
    store.check_refresh("alice", session.id, now=now + 1, actor=Actor(ip="203.0.113.9"))
    seen = store.get("alice", session.id)
    assert seen is not None
    assert seen.ip == "203.0.113.9"
    assert seen.created_ip == "198.51.100.4"


def test_check_never_recreates_a_revoked_session(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    assert len(store.revoke("alice", [session.id], now=now, reason="user", actor=ACTOR)) == 1
    key = store.session_key("alice", session.id)
    for jtis in ({}, {"presented_jti": "jti-1", "new_jti": "jti-2"}):
        result = store.check_refresh(
            "alice", session.id, now=now + 1000, actor=Actor(ip="203.0.113.9"), **jtis
        )
        assert result.status is CheckStatus.GONE
        assert rc.exists(key) == 0
    assert rc.exists(store.index_key("alice")) == 0


def test_refresh_rotates_jti_and_counts_as_activity(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now, jti="jti-1")
    create(store, session)
    result = store.check_refresh(
        "alice",
        session.id,
        now=now + 5,
        actor=Actor(ip=session.ip),
        presented_jti="jti-1",
        new_jti="jti-2",
    )
    assert result.status is CheckStatus.ACTIVE
    assert result.expires_at == session.expires_at
    rotated = store.get("alice", session.id)
    assert rotated is not None
    assert rotated.refresh_jti == "jti-2"
    assert rotated.last_seen_at == now + 5
    assert rotated.expires_at == session.expires_at
    again = store.check_refresh(
        "alice", session.id, now=now + 6, actor=Actor(ip=session.ip), presented_jti="jti-2"
    )
    assert again.status is CheckStatus.ACTIVE


def test_reused_refresh_jti_revokes_the_session(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now, jti="jti-1")
    create(store, session)
    store.check_refresh(
        "alice",
        session.id,
        now=now + 5,
        actor=Actor(ip=session.ip),
        presented_jti="jti-1",
        new_jti="jti-2",
    )
    reused = store.check_refresh(
        "alice",
        session.id,
        now=now + 6,
        actor=Actor(ip="203.0.113.66"),
        presented_jti="jti-1",
        new_jti="jti-3",
    )
    assert reused.status is CheckStatus.REFRESH_REUSED
    assert rc.exists(store.session_key("alice", session.id)) == 0
    assert rc.zscore(store.index_key("alice"), session.id) is None
    assert rc.exists(store.index_key("alice")) == 0
    newest = store.events("alice", limit=1)[0]
    assert (newest.type, newest.session_id, newest.detail) == (
        "session.revoked",
        session.id,
        {"reason": "refresh_reuse"},
    )
    after = store.check_refresh(
        "alice", session.id, now=now + 7, actor=Actor(ip=session.ip), presented_jti="jti-2"
    )
    assert after.status is CheckStatus.GONE


def test_refresh_reuse_keeps_the_users_other_sessions(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    victim, other = make_session(now=now, jti="a"), make_session(now=now, jti="b")
    create(store, victim)
    create(store, other)
    result = store.check_refresh(
        "alice", victim.id, now=now, actor=Actor(ip=None), presented_jti="stale"
    )
    assert result.status is CheckStatus.REFRESH_REUSED
    assert rc.zrange(store.index_key("alice"), 0, -1) == [other.id]
    assert store.get("alice", other.id) == other


# -- list and index pruning ---------------------------------------------------------


def test_list_returns_exactly_the_users_live_sessions(store: SessionStore, now: int) -> None:
    mine = [make_session(now=now, name=f"s{i}") for i in range(3)]
    for session in mine:
        create(store, session)
    create(store, make_session("bob", now=now))
    revoked = make_session(now=now)
    create(store, revoked)
    store.revoke("alice", [revoked.id], now=now, reason="user", actor=ACTOR)
    listed = store.list_sessions("alice", now=now)
    assert sorted(listed, key=lambda s: s.id) == sorted(mine, key=lambda s: s.id)
    assert store.list_sessions("nobody", now=now) == []


def test_list_prunes_index_entries_without_a_session(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    live = make_session(now=now)
    create(store, live)
    index = store.index_key("alice")
    rc.zadd(index, {"stale-past": now - 10, "stale-future": now + 500})
    assert [s.id for s in store.list_sessions("alice", now=now)] == [live.id]
    assert rc.zrange(index, 0, -1) == [live.id]


def test_create_prunes_index_entries_that_expired(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    index = store.index_key("alice")
    rc.zadd(index, {"stale-1": now - 100, "stale-2": now - 1})
    session = make_session(now=now)
    create(store, session)
    assert rc.zrange(index, 0, -1) == [session.id]


def test_revoking_the_last_session_removes_the_index(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    first, second = make_session(now=now), make_session(now=now)
    create(store, first)
    create(store, second)
    store.revoke("alice", [first.id], now=now, reason="user", actor=ACTOR)
    assert rc.zrange(store.index_key("alice"), 0, -1) == [second.id]
    store.revoke("alice", [second.id], now=now, reason="user", actor=ACTOR)
    assert rc.exists(store.index_key("alice")) == 0


@pytest.fixture
def fake_store() -> Iterator[tuple[SessionStore, redis.Redis]]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield SessionStore(lambda: client, prefix="sessionsvc-test"), client
    client.close()


def test_expired_session_leaves_the_index_on_list(
    fake_store: tuple[SessionStore, redis.Redis],
) -> None:
    store, rc = fake_store
    now = int(time.time())
    short, long = make_session(now=now, ttl=100), make_session(now=now, ttl=10_000)
    create(store, short)
    create(store, long)
    index = store.index_key("alice")
    with time_machine.travel(now + 200, tick=False):
        assert rc.exists(store.session_key("alice", short.id)) == 0
        assert rc.zscore(index, short.id) is not None  # nothing has pruned it yet
        assert [s.id for s in store.list_sessions("alice", now=now + 200)] == [long.id]
        assert rc.zrange(index, 0, -1) == [long.id]


def test_expired_session_leaves_the_index_on_create(
    fake_store: tuple[SessionStore, redis.Redis],
) -> None:
    store, rc = fake_store
    now = int(time.time())
    short = make_session(now=now, ttl=100)
    create(store, short)
    with time_machine.travel(now + 200, tick=False):
        fresh = make_session(now=now + 200)
        create(store, fresh)
        assert rc.zrange(store.index_key("alice"), 0, -1) == [fresh.id]


def test_index_expires_with_the_users_last_session(
    fake_store: tuple[SessionStore, redis.Redis],
) -> None:
    store, rc = fake_store
    now = int(time.time())
    create(store, make_session(now=now, ttl=5000))
    create(store, make_session(now=now, ttl=100))
    index = store.index_key("alice")
    with time_machine.travel(now + 4000, tick=False):
        assert rc.exists(index) == 1
    with time_machine.travel(now + 5001, tick=False):
        assert rc.exists(index) == 0
        assert store.list_sessions("alice", now=now + 5001) == []


def test_eviction_of_an_expired_session_does_not_count_it(
    fake_store: tuple[SessionStore, redis.Redis],
) -> None:
    store, rc = fake_store
    now = int(time.time())
    expired = make_session(now=now, ttl=100)
    a, b = make_session(now=now, ttl=5000), make_session(now=now, ttl=5000)
    for session in (expired, a, b):
        create(store, session)
    with time_machine.travel(now + 200, tick=False):
        fresh = make_session(now=now + 200)
        assert create(store, fresh, max_sessions=3) == []
        assert sorted(rc.zrange(store.index_key("alice"), 0, -1)) == sorted([a.id, b.id, fresh.id])


# -- revoke -----------------------------------------------------------------------


@pytest.fixture
def three(store: SessionStore, now: int) -> list[Session]:
    sessions = [make_session(now=now) for _ in range(3)]
    for session in sessions:
        create(store, session)
    return sessions


def test_revoke_explicit_ids(store: SessionStore, three: list[Session], now: int) -> None:
    a, b, c = three
    actor = Actor(ip="203.0.113.50", user_agent="curl/8.4.0")
    assert len(store.revoke("alice", [a.id, b.id], now=now, reason="user", actor=actor)) == 2
    assert [s.id for s in store.list_sessions("alice", now=now)] == [c.id]
    revoked = [e for e in store.events("alice", limit=100) if e.type == "session.revoked"]
    assert sorted(e.session_id for e in revoked) == sorted([a.id, b.id])
    assert {(e.detail["reason"], e.ip, e.user_agent) for e in revoked} == {
        ("user", "203.0.113.50", "curl/8.4.0")
    }


def test_revoke_all(store: SessionStore, rc: redis.Redis, three: list[Session], now: int) -> None:
    assert len(store.revoke("alice", None, now=now, reason="admin", actor=ACTOR)) == 3
    assert store.list_sessions("alice", now=now) == []
    assert rc.exists(store.index_key("alice")) == 0
    for session in three:
        assert rc.exists(store.session_key("alice", session.id)) == 0
    revoked = [(t, sid, r) for t, sid, r in event_summary(store) if t == "session.revoked"]
    assert sorted(revoked) == sorted(("session.revoked", s.id, "admin") for s in three)


def test_revoke_all_but_the_kept_one(store: SessionStore, three: list[Session], now: int) -> None:
    a, b, c = three
    assert len(store.revoke("alice", None, now=now, reason="others", actor=ACTOR, keep=b.id)) == 2
    assert [s.id for s in store.list_sessions("alice", now=now)] == [b.id]
    revoked = [(sid, r) for t, sid, r in event_summary(store) if t == "session.revoked"]
    assert sorted(revoked) == sorted([(a.id, "others"), (c.id, "others")])


def test_revoke_all_including_current_records_logout_for_it(
    store: SessionStore, three: list[Session], now: int
) -> None:
    a, b, c = three
    assert (
        len(store.revoke("alice", None, now=now, reason="others", actor=ACTOR, current=b.id)) == 3
    )
    revoked = [(sid, r) for t, sid, r in event_summary(store) if t == "session.revoked"]
    assert sorted(revoked) == sorted([(a.id, "others"), (b.id, "logout"), (c.id, "others")])


def test_revoking_the_current_session_by_id_is_a_logout(
    store: SessionStore, three: list[Session], now: int
) -> None:
    a = three[0]
    assert (
        len(store.revoke("alice", [a.id], now=now, reason="user", actor=ACTOR, current=a.id)) == 1
    )
    assert event_summary(store)[0] == ("session.revoked", a.id, "logout")


def test_revoke_unknown_id_revokes_and_records_nothing(
    store: SessionStore, rc: redis.Redis, three: list[Session], now: int
) -> None:
    before = event_summary(store)
    index = rc.zrange(store.index_key("alice"), 0, -1)
    assert len(store.revoke("alice", ["no-such-session"], now=now, reason="user", actor=ACTOR)) == 0
    assert len(store.revoke("alice", [], now=now, reason="user", actor=ACTOR)) == 0
    assert len(store.revoke("bob", [three[0].id], now=now, reason="user", actor=ACTOR)) == 0
    assert len(store.revoke("bob", None, now=now, reason="user", actor=ACTOR)) == 0
    assert event_summary(store) == before
    assert event_summary(store, "bob") == []
    assert rc.zrange(store.index_key("alice"), 0, -1) == index


def test_revoking_twice_counts_once(store: SessionStore, three: list[Session], now: int) -> None:
    a = three[0]
    assert len(store.revoke("alice", [a.id, a.id], now=now, reason="user", actor=ACTOR)) == 1
    assert len(store.revoke("alice", [a.id], now=now, reason="user", actor=ACTOR)) == 0
    revoked = [sid for t, sid, _ in event_summary(store) if t == "session.revoked"]
    assert revoked == [a.id]


# -- eviction -----------------------------------------------------------------------


def test_opening_over_the_cap_evicts_the_least_recently_active(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    a = make_session(now=now, last_seen=now - 100)
    b = make_session(now=now, last_seen=now - 300)  # least recently active
    c = make_session(now=now, last_seen=now - 200)
    for session in (a, b, c):
        assert create(store, session, max_sessions=3) == []
    d = make_session(now=now)
    assert create(store, d, max_sessions=3) == [b.id]
    assert rc.exists(store.session_key("alice", b.id)) == 0
    assert sorted(rc.zrange(store.index_key("alice"), 0, -1)) == sorted([a.id, c.id, d.id])
    assert sorted(s.id for s in store.list_sessions("alice", now=now)) == sorted([a.id, c.id, d.id])
    assert event_summary(store)[:2] == [
        ("session.revoked", b.id, "evicted"),
        ("session.created", d.id, None),
    ]


def test_of_sessions_opened_in_one_second_the_first_opened_is_evicted(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    with time_machine.travel(now, tick=False):  # four sign-ins in one frozen second
        opened = [make_session(now=now) for _ in range(4)]
        evicted = [create(store, session, max_sessions=3) for session in opened]
    assert evicted == [[], [], [], [opened[0].id]]
    keys = [store.session_key("alice", s.id) for s in opened[1:]]
    micros = [int(rc.hget(key, "cu")) for key in keys]
    assert micros == sorted(micros) and len(set(micros)) == 3
    # c stays whole seconds, as every version of the code reads it.
    assert [rc.hget(key, "c") for key in keys] == [str(now)] * 3
    assert stored(store, opened[1].id).created_at == now
    # Then the next one: the oldest of the rest.
    with time_machine.travel(now, tick=False):
        assert create(store, make_session(now=now), max_sessions=3) == [opened[1].id]


def test_activity_protects_a_session_from_eviction(store: SessionStore, now: int) -> None:
    a = make_session(now=now - 500)
    b = make_session(now=now - 400)
    create(store, a, max_sessions=2)
    create(store, b, max_sessions=2)
    store.check_refresh("alice", a.id, now=now, actor=Actor(ip=a.ip))
    assert create(store, make_session(now=now), max_sessions=2) == [b.id]


def test_eviction_is_per_user(store: SessionStore, now: int) -> None:
    for user in ("alice", "bob"):
        for _ in range(2):
            assert create(store, make_session(user, now=now), max_sessions=2) == []
    assert len(store.list_sessions("alice", now=now)) == 2
    assert len(store.list_sessions("bob", now=now)) == 2


# -- user ids and hash tags ----------------------------------------------------------

ODD_USER_IDS = ["alice", "a:b", "a", "b", "{x}", "x", "a}{b", "ünï", "a b", "\ud800", "a:b:s"]


def user_keys(store: SessionStore, user_id: str) -> list[str]:
    return [
        store.session_key(user_id, new_session_id()),
        store.index_key(user_id),
        store.events_key(user_id),
        store.user_key(user_id),
    ]


@pytest.mark.parametrize("user_id", ODD_USER_IDS)
def test_all_keys_of_a_user_share_one_hash_tag_and_slot(
    store: SessionStore, backend: Any, user_id: str
) -> None:
    keys = user_keys(store, user_id)
    assert all(key.startswith(backend.prefix + ":{") for key in keys)
    assert len({tag_of(key) for key in keys}) == 1
    assert tag_of(keys[0])
    assert len({slot(key) for key in keys}) == 1


def test_odd_user_ids_map_to_distinct_keys(store: SessionStore) -> None:
    indexes = {store.index_key(user_id) for user_id in ODD_USER_IDS}
    tags = {tag_of(store.index_key(user_id)) for user_id in ODD_USER_IDS}
    assert len(indexes) == len(tags) == len(ODD_USER_IDS)


def test_odd_user_ids_keep_separate_sessions(store: SessionStore, now: int) -> None:
    sessions = {user_id: make_session(user_id, now=now) for user_id in ODD_USER_IDS}
    for session in sessions.values():
        assert create(store, session) == []
    for user_id, session in sessions.items():
        assert store.list_sessions(user_id, now=now) == [session]
        assert [e.session_id for e in store.events(user_id, limit=10)] == [session.id]
        for other in ODD_USER_IDS:
            if other != user_id:
                assert store.get(other, session.id) is None
    assert len(store.revoke("a:b", None, now=now, reason="admin", actor=ACTOR)) == 1
    assert store.list_sessions("a", now=now) == [sessions["a"]]
    assert store.list_sessions("a:b:s", now=now) == [sessions["a:b:s"]]


def test_user_records_of_odd_ids_are_separate(store: SessionStore) -> None:
    for user_id in ODD_USER_IDS:
        assert store.create_user(User(id=user_id, password_hash=f"hash-{user_id!r}"))
    for user_id in ODD_USER_IDS:
        user = store.get_user(user_id)
        assert user is not None
        assert user.password_hash == f"hash-{user_id!r}"


def _random_user_id(rng: random.Random) -> str:
    alphabets = [
        "ab:{} ",
        "".join(chr(c) for c in range(0x20, 0x7F)),
        "üñïé€漢字😀",
        "".join(chr(c) for c in range(0xD800, 0xD810)) + "\udfff",
        "\x00\n\t",
    ]
    length = rng.randint(1, 12)
    return "".join(rng.choice(rng.choice(alphabets)) for _ in range(length))


def test_generated_user_ids_never_collide_and_keep_one_slot(store: SessionStore) -> None:
    rng = random.Random(20261126)
    user_ids = {_random_user_id(rng) for _ in range(5000)}
    assert len(user_ids) > 3000
    owners: dict[str, str] = {}
    for user_id in user_ids:
        keys = user_keys(store, user_id)
        tags = {tag_of(key) for key in keys}
        assert len(tags) == 1, user_id
        assert len({slot(key) for key in keys}) == 1, user_id
        tag = tags.pop()
        assert owners.setdefault(tag, user_id) == user_id, (user_id, owners[tag])
    assert len(owners) == len(user_ids)


# -- rename -------------------------------------------------------------------------


def test_rename_sets_and_clears_the_name(store: SessionStore, rc: redis.Redis, now: int) -> None:
    session = make_session(now=now, ttl=3600)
    create(store, session)
    key = store.session_key("alice", session.id)
    renamed = store.rename("alice", session.id, "Work laptop")
    assert renamed == stored(store, session.id)
    assert renamed is not None and renamed.name == "Work laptop"
    cleared = store.rename("alice", session.id, None)
    assert cleared is not None and cleared.name is None
    assert stored(store, session.id).name is None
    assert "n" not in rc.hgetall(key)
    assert 3600 - 3 <= rc.ttl(key) <= 3600


def test_rename_of_missing_session_creates_no_key(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    assert store.rename("alice", "no-such-session", "x") is None
    assert store.rename("bob", session.id, "x") is None
    # Last seen before the cutoff: dead by the idle timeout, left as it was.
    assert store.rename("alice", session.id, "x", seen_since=now + 1) is None
    assert stored(store, session.id).name is None
    assert rc.exists(store.session_key("alice", "no-such-session")) == 0
    assert rc.exists(store.session_key("bob", session.id)) == 0
    assert stored(store, session.id).name is None


# -- events -------------------------------------------------------------------------


def test_events_are_newest_first_capped_and_expire(backend: Any, rc: redis.Redis, now: int) -> None:
    store = SessionStore(lambda: rc, prefix=backend.prefix, events_max=5, events_ttl=600)
    sessions = [make_session(now=now + i) for i in range(8)]
    for session in sessions:
        create(store, session)
    events = store.events("alice", limit=100)
    assert [e.session_id for e in events] == [s.id for s in reversed(sessions[-5:])]
    assert [e.at for e in events] == [now + i for i in range(7, 2, -1)]
    assert rc.llen(store.events_key("alice")) == 5
    assert 598 <= rc.ttl(store.events_key("alice")) <= 600
    assert [e.session_id for e in store.events("alice", limit=2)] == [
        sessions[7].id,
        sessions[6].id,
    ]


def test_events_of_a_user_without_any_are_empty(store: SessionStore) -> None:
    assert store.events("nobody", limit=10) == []


# -- users --------------------------------------------------------------------------


def test_user_round_trips(store: SessionStore, rc: redis.Redis, backend: Any) -> None:
    admin = User(id="root", password_hash="pbkdf2:sha256:1$salt$hash", roles=("admin",))
    plain = User(id="alice", password_hash="hash-a")
    assert store.create_user(admin) is True
    assert store.create_user(plain) is True
    assert store.get_user("root") == admin
    assert store.get_user("alice") == plain
    assert store.get_user("nobody") is None
    assert store.user_key("root").startswith(backend.prefix + ":")
    assert rc.exists(store.user_key("root")) == 1


def test_creating_an_existing_user_changes_nothing(store: SessionStore) -> None:
    original = User(id="alice", password_hash="first", roles=("admin",))
    assert store.create_user(original) is True
    assert store.create_user(User(id="alice", password_hash="second", roles=())) is False
    assert store.create_user(User(id="alice", password_hash="third", roles=("x", "y"))) is False
    assert store.get_user("alice") == original


# -- a sign-in's session opens only on the user record it checked --------------------


def alice_account(store: SessionStore) -> User:
    """Alice, an admin of the user store, as a sign-in reads her."""
    assert store.create_user(User(id="alice", password_hash="h1", roles=("admin",), account="A1"))
    user = store.get_user("alice")
    assert user is not None and user.version == 0
    return user


#: What comes between a sign-in's read of the user record and its session's
#: opening, each a change that revokes the user's sessions.
RECORD_CHANGES: dict[str, Callable[[SessionStore, int], Any]] = {
    "password": lambda s, now: s.change_password(
        "alice", "h2", expected="h1", now=now, actor=ACTOR, keep=None
    ),
    "demoted": lambda s, now: s.update_user("alice", now=now, actor=ACTOR, roles=()),
    "disabled": lambda s, now: s.update_user("alice", now=now, actor=ACTOR, disabled=True),
    "deleted": lambda s, now: s.delete_user("alice", now=now, actor=ACTOR),
    "created_again": lambda s, now: (
        s.delete_user("alice", now=now, actor=ACTOR),
        s.create_user(User(id="alice", password_hash="h1", roles=("admin",), account="A2")),
    ),
}


#: A disable and a delete conditional on the record as read.
CONDITIONAL_CHANGES: dict[str, Callable[[SessionStore, int, User], Any]] = {
    "disable": lambda s, now, read: s.update_user(
        "alice", now=now, actor=ACTOR, disabled=True, expected=read
    ),
    "delete": lambda s, now, read: s.delete_user("alice", now=now, actor=ACTOR, expected=read),
}


@pytest.mark.parametrize("conditional", list(CONDITIONAL_CHANGES))
@pytest.mark.parametrize("change", list(RECORD_CHANGES))
def test_a_change_conditional_on_the_record_refuses_when_it_changed(
    store: SessionStore, now: int, change: str, conditional: str
) -> None:
    read = alice_account(store)
    RECORD_CHANGES[change](store, now)
    if change == "deleted":
        # Gone: the same answer as without a condition.
        assert CONDITIONAL_CHANGES[conditional](store, now, read) is None
        return
    before = store.get_user("alice")
    with pytest.raises(UserChanged):
        CONDITIONAL_CHANGES[conditional](store, now, read)
    assert store.get_user("alice") == before  # nothing changed


@pytest.mark.parametrize("conditional", list(CONDITIONAL_CHANGES))
def test_a_change_conditional_on_the_record_is_made_when_it_is_as_read(
    store: SessionStore, rc: redis.Redis, now: int, conditional: str
) -> None:
    alice_account(store)
    rc.hdel(store.user_key("alice"), "v")  # a record from before versions
    read = store.get_user("alice")
    assert read is not None and read.version == 0
    assert CONDITIONAL_CHANGES[conditional](store, now, read) is not None
    after = store.get_user("alice")
    assert after is None if conditional == "delete" else after is not None and after.disabled


@pytest.mark.parametrize("change", list(RECORD_CHANGES))
def test_open_refuses_when_the_user_record_changed_since_the_sign_in_read_it(
    store: SessionStore, rc: redis.Redis, now: int, change: str
) -> None:
    user = alice_account(store)
    RECORD_CHANGES[change](store, now)
    events_before = rc.llen(store.events_key("alice"))
    session = make_session(now=now, account=user.account)
    with pytest.raises(UserChanged):
        store.create(session, max_sessions=100, actor=ACTOR, user_version=user.version)
    assert rc.exists(store.session_key("alice", session.id)) == 0
    assert rc.zscore(store.index_key("alice"), session.id) is None
    assert rc.llen(store.events_key("alice")) == events_before  # no session.created


def test_open_of_an_unchanged_user_record_stores_the_session(store: SessionStore, now: int) -> None:
    user = alice_account(store)
    # A hash of an older scheme upgraded is the same password: not a change.
    assert store.set_password_hash("alice", "h1-upgraded", expected="h1")
    session = make_session(now=now, account=user.account)
    assert store.create(session, max_sessions=100, actor=ACTOR, user_version=user.version)
    assert stored(store, session.id).account == "A1"
    # A change seen by the sign-in (it read the new version) opens too.
    store.update_user("alice", now=now, actor=ACTOR, roles=("auditor",))
    changed = store.get_user("alice")
    assert changed is not None and changed.version == 1 and changed.roles == ("auditor",)
    later = make_session(now=now, account=changed.account)
    assert store.create(later, max_sessions=100, actor=ACTOR, user_version=changed.version)


def test_every_change_of_password_roles_or_disabled_bumps_the_version(
    store: SessionStore, now: int
) -> None:
    alice_account(store)

    def version() -> int:
        user = store.get_user("alice")
        assert user is not None
        return user.version

    store.update_user("alice", now=now, actor=ACTOR, disabled=True)
    assert version() == 1
    store.update_user("alice", now=now, actor=ACTOR, disabled=True)  # no change
    assert version() == 1
    store.update_user("alice", now=now, actor=ACTOR, disabled=False)
    assert version() == 2
    store.update_user("alice", now=now, actor=ACTOR, roles=("admin",))  # the same roles
    assert version() == 2
    store.update_user("alice", now=now, actor=ACTOR, roles=())
    assert version() == 3
    store.change_password("alice", "h2", expected="h1", now=now, actor=ACTOR, keep=None)
    assert version() == 4
    store.set_password_hash("alice", "h2-upgraded", expected="h2")
    assert version() == 4


def test_open_without_a_user_version_reads_no_user_record(store: SessionStore, now: int) -> None:
    # A host app's users live elsewhere: no record, nothing to compare.
    session = make_session("bob", now=now)
    assert create(store, session) == []
    assert stored(store, session.id, "bob").id == session.id


# -- the registry of admins ------------------------------------------------------------


def registry(store: SessionStore, rc: redis.Redis) -> set[str]:
    return set(rc.smembers(store.keys.admins()))


def test_admins_leave_drops_a_member_only_if_another_remains(
    store: SessionStore, rc: redis.Redis
) -> None:
    assert store.lock_admins("t1", seconds=10)
    assert not store.lock_admins("t2", seconds=10)  # one holder at a time
    assert store.admins_leave("root", token="t1") is AdminsLeft.UNDECIDED
    assert store.admins_join(["root", "alice"], token="t1", rebuild=True)
    assert registry(store, rc) == {"", "root", "alice"}
    assert store.admins_leave("bob", token="t1") is AdminsLeft.LEFT  # not a member
    assert store.admins_leave("alice", token="t1") is AdminsLeft.LEFT
    assert store.admins_leave("root", token="t1") is AdminsLeft.LAST
    assert registry(store, rc) == {"", "root"}
    assert store.admins_leave("root", token="t1", force=True) is AdminsLeft.LEFT_LAST
    assert registry(store, rc) == {""}  # built, and empty
    # An admin it lacks (made behind its back), and no other member: it
    # cannot tell whether another admin remains.
    assert store.admins_leave("root", token="t1") is AdminsLeft.UNDECIDED


def test_admins_leave_of_an_admin_the_registry_lacks(store: SessionStore, rc: redis.Redis) -> None:
    assert store.lock_admins("t", seconds=10)
    assert store.admins_join([], token="t", start=True)
    assert registry(store, rc) == {""}
    assert store.admins_leave("ops", token="t") is AdminsLeft.UNDECIDED
    assert store.admins_join(["root"], token="t")
    # Every member is an admin: with root in it, ops may go.
    assert store.admins_leave("ops", token="t") is AdminsLeft.LEFT
    assert registry(store, rc) == {"", "root"}
    # Made only if there is none: its members stay.
    assert store.admins_join([], token="t", start=True)
    assert registry(store, rc) == {"", "root"}


def test_the_registry_changes_only_under_its_lock(store: SessionStore, rc: redis.Redis) -> None:
    assert store.lock_admins("t1", seconds=10)
    assert store.admins_join(["root", "alice"], token="t1", rebuild=True, release=True)
    assert rc.exists(store.keys.admins_lock()) == 0  # released
    assert store.admins_leave("alice", token="t1") is AdminsLeft.LOCK_LOST
    assert store.admins_join(["bob"], token="t1") is False
    assert registry(store, rc) == {"", "root", "alice"}
    assert store.lock_admins("t2", seconds=10)
    assert rc.ttl(store.keys.admins_lock()) > 0  # a holder that dies frees it
    assert store.admins_join(["bob"], token="t1", release=True) is False
    assert rc.get(store.keys.admins_lock()) == "t2"  # not released by another
    assert store.admins_join(["bob"], token="t2")
    assert registry(store, rc) == {"", "root", "alice", "bob"}
    assert store.admins_join(["carol"], token="t2", rebuild=True)
    assert registry(store, rc) == {"", "carol"}


def test_without_a_registry_joining_adds_no_one(store: SessionStore, rc: redis.Redis) -> None:
    # A registry of one admin only would refuse wrongly: it is built whole, when needed.
    assert store.lock_admins("t", seconds=10)
    assert store.admins_join(["root"], token="t")
    assert rc.exists(store.keys.admins()) == 0


def test_a_registry_of_many_admins_is_built_in_parts(store: SessionStore, rc: redis.Redis) -> None:
    ids = [f"admin{i}" for i in range(2500)]
    assert store.lock_admins("t", seconds=10)
    assert store.admins_join(ids, token="t", rebuild=True, release=True)
    assert registry(store, rc) == {"", *ids}
    assert rc.exists(store.keys.admins_lock()) == 0


#: User ids the registry of admins must hold as they are: braces, colons,
#: text outside ASCII, a lone surrogate (a valid JSON string; see user_tag).
ODD_IDS = ["a{b}:c", "}{", "é✓𝄞", "\udcff", "admins", "x" * 300]


def test_the_registry_holds_any_user_id(store: SessionStore) -> None:
    assert store.lock_admins("t", seconds=10)
    assert store.admins_join(ODD_IDS, token="t", rebuild=True)
    assert store.admins_members() == set(ODD_IDS)
    for user_id in ODD_IDS[:-1]:
        assert store.admins_leave(user_id, token="t") is AdminsLeft.LEFT
    assert store.admins_leave(ODD_IDS[-1], token="t") is AdminsLeft.LAST
    assert store.admins_members() == {ODD_IDS[-1]}


def test_the_registry_and_its_lock_share_a_slot_of_their_own(store: SessionStore) -> None:
    assert slot(store.keys.admins()) == slot(store.keys.admins_lock())
    assert tag_of(store.keys.admins()) == "admins"
    assert store.keys.user_id_of(store.keys.admins()) is None


def test_enabled_users_with_a_role_are_read_from_the_records(store: SessionStore, now: int) -> None:
    for user in (
        User("root", "h", roles=("admin",)),
        User("ops", "h", roles=("auditor", "admin")),
        User("off", "h", roles=("admin",), disabled=True),
        User("alice", "h", roles=("administrator",)),
        User("bob", "h"),
    ):
        assert store.create_user(user)
    assert sorted(store.enabled_users_with_role("admin")) == ["ops", "root"]


# -- fail closed ----------------------------------------------------------------------


@pytest.fixture(params=["client", "url"])
def dead_store(request: pytest.FixtureRequest) -> SessionStore:
    port = free_port()
    if request.param == "url":
        return store_from_url(
            f"redis://127.0.0.1:{port}/0",
            prefix="sessionsvc-dead",
            timeout=0.2,
            events_max=10,
            events_ttl=60,
        )
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return SessionStore(lambda: client, prefix="sessionsvc-dead")


DEAD_OPERATIONS: dict[str, Callable[[SessionStore], Any]] = {
    "create": lambda s: create(s, make_session(now=int(time.time()))),
    "check_access": lambda s: s.check_access("alice", "sid", now=0, actor=Actor(ip=None)),
    "check_refresh": lambda s: s.check_refresh("alice", "sid", now=0, actor=Actor(ip=None)),
    "list_sessions": lambda s: s.list_sessions("alice", now=0),
    "revoke": lambda s: s.revoke("alice", None, now=0, reason="user", actor=ACTOR),
    "revoke_ids": lambda s: s.revoke("alice", ["sid"], now=0, reason="user", actor=ACTOR),
    "ping": lambda s: s.ping(),
    "get": lambda s: s.get("alice", "sid"),
    "rename": lambda s: s.rename("alice", "sid", "x"),
    "events": lambda s: s.events("alice", limit=10),
    "get_user": lambda s: s.get_user("alice"),
    "create_user": lambda s: s.create_user(User(id="alice", password_hash="h")),
    "delete_user": lambda s: s.delete_user("alice"),
    "update_user": lambda s: s.update_user("alice", now=0, actor=ACTOR, disabled=True),
    "change_password": lambda s: s.change_password(
        "alice", "new", expected="old", now=0, actor=ACTOR, keep=None
    ),
    "set_password_hash": lambda s: s.set_password_hash("alice", "new", expected="old"),
    "user_ids": lambda s: s.user_ids(),
}


@pytest.mark.parametrize("operation", DEAD_OPERATIONS)
def test_unreachable_store_fails_closed(dead_store: SessionStore, operation: str) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        DEAD_OPERATIONS[operation](dead_store)
    assert raised.value.status == 503


# -- building a store from a URL --------------------------------------------------------


def test_redis_url_builds_a_configured_client() -> None:
    factory = client_factory_from_url("redis://:s3cret@cache.example:6380/3", timeout=0.25)
    client = factory()
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 3)
        assert kwargs["password"] == "s3cret"
        assert kwargs["decode_responses"] is True
        assert kwargs["socket_timeout"] == 0.25
        assert kwargs["socket_connect_timeout"] == 0.25
    finally:
        client.close()


def test_rediss_url_uses_tls() -> None:
    client = client_factory_from_url("rediss://cache.example:6380/0", timeout=0.5)()
    try:
        assert client.connection_pool.connection_class is redis.SSLConnection
    finally:
        client.close()


def test_unix_url_builds_a_socket_client() -> None:
    client = client_factory_from_url("unix:///run/redis/redis.sock?db=2", timeout=0.5)()
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["path"] == "/run/redis/redis.sock"
        assert int(kwargs["db"]) == 2
        assert client.connection_pool.connection_class is redis.UnixDomainSocketConnection
    finally:
        client.close()


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> _Recorder:
        self.calls.append((args, kwargs))
        return self

    def master_for(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append((("master_for", *args), kwargs))
        return "primary-client"


def test_cluster_url_lists_its_startup_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(connections, "RedisCluster", recorder)
    factory = client_factory_from_url("redis+cluster://:pw@h1:1,h2:2", timeout=0.5)
    assert recorder.calls == []  # nothing connects before first use
    assert factory() is recorder
    [(_, kwargs)] = recorder.calls
    assert [(n.host, n.port) for n in kwargs["startup_nodes"]] == [("h1", 1), ("h2", 2)]
    assert kwargs["password"] == "pw"
    assert kwargs["ssl"] is False
    assert kwargs["decode_responses"] is True


def test_rediss_cluster_url_uses_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(connections, "RedisCluster", recorder)
    client_factory_from_url("rediss+cluster://h1:7000", timeout=0.5)()
    [(_, kwargs)] = recorder.calls
    assert [(n.host, n.port) for n in kwargs["startup_nodes"]] == [("h1", 7000)]
    assert kwargs["ssl"] is True
    assert kwargs["password"] is None


@pytest.mark.parametrize(
    ("url", "service", "db"),
    [
        ("redis+sentinel://h:1,h2:2/mymaster/2", "mymaster", 2),
        ("redis+sentinel://h:1,h2:2/mymaster", "mymaster", 0),
    ],
)
def test_sentinel_url_asks_for_the_service_primary(
    monkeypatch: pytest.MonkeyPatch, url: str, service: str, db: int
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(connections, "Sentinel", recorder)
    factory = client_factory_from_url(url, timeout=0.5)
    assert recorder.calls == []
    assert factory() == "primary-client"
    (sentinel_args, _), (master_args, master_kwargs) = recorder.calls
    assert sentinel_args == ([("h", 1), ("h2", 2)],)
    assert master_args == ("master_for", service)
    assert master_kwargs["db"] == db
    assert master_kwargs["decode_responses"] is True


def test_cluster_and_sentinel_urls_carry_the_acl_username(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, sentinel = _Recorder(), _Recorder()
    monkeypatch.setattr(connections, "RedisCluster", cluster)
    monkeypatch.setattr(connections, "Sentinel", sentinel)
    client_factory_from_url("redis+cluster://svc:p%40ss@h1:1", timeout=0.5)()
    client_factory_from_url("redis+sentinel://svc:pw@h:1/mymaster", timeout=0.5)()
    [(_, kwargs)] = cluster.calls
    assert (kwargs["username"], kwargs["password"]) == ("svc", "p@ss")
    _, (_, master_kwargs) = sentinel.calls
    assert (master_kwargs["username"], master_kwargs["password"]) == ("svc", "pw")


class _RefusingClient(redis.Redis):
    """A client whose server refuses every command as a real one may (OOM, ACL...)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def execute_command(self, *args: Any, **options: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        redis.exceptions.NoPermissionError("NOPERM this user has no permissions"),
        redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        redis.exceptions.InvalidResponse("Protocol error"),
        redis.exceptions.ClusterError("TTL exhausted"),
    ],
    ids=["oom", "noperm", "misconf", "protocol", "cluster"],
)
@pytest.mark.parametrize("operation", DEAD_OPERATIONS)
def test_store_refusing_commands_fails_closed(error: Exception, operation: str) -> None:
    client = _RefusingClient(error)
    store = SessionStore(lambda: client, prefix="sessionsvc-refusing")
    with pytest.raises(StoreUnavailable):
        DEAD_OPERATIONS[operation](store)


@pytest.mark.parametrize(
    "url",
    [
        "http://x",
        "",
        "redis://localhost:abc/0",
        "redis://localhost:6379/x",
        "memcached://h:11211",
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/",
        "redis+sentinel://h:1,h2:2/mymaster/db",
        "redis+sentinel://h:1/mymaster/2/extra",
        "redis+cluster://nohostport",
        "redis+cluster://h1:1,nohostport",
        "redis+cluster://h1:port",
        "redis+cluster://h1:1?ssl_cert_reqs=none",
    ],
)
def test_bad_redis_urls_raise_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="SESSIONSVC_REDIS_URL"):
        client_factory_from_url(url, timeout=0.5)


def test_store_from_url_without_url_is_the_embedded_store(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the port a `make run` on this machine may be serving its store on:
    # this test's sessions stay in this process.
    monkeypatch.setattr(devstore, "DEV_STORE_PORT", free_port())
    with caplog.at_level("WARNING", logger="sessionsvc"):
        store = store_from_url(None, prefix="dev", timeout=0.5, events_max=3, events_ttl=60)
    assert "SESSIONSVC_REDIS_URL" in caplog.text
    store.ping()
    now = int(time.time())
    session = make_session(now=now)
    assert create(store, session, max_sessions=10) == []
    assert store.list_sessions("alice", now=now) == [session]
    assert store.index_key("alice").startswith("dev:{")


def test_without_url_or_fakeredis_one_line_names_both_ways_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devstore, "DEV_STORE_PORT", free_port())
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # as if not installed
    # Not even a store served on this host by another process is used: anyone
    # here could serve one on the port.
    served = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(devstore, "_dev_store_url", lambda: served)
    for attempt in (
        lambda: store_from_url(None, prefix="dev", timeout=0.5, events_max=3, events_ttl=60),
        devstore.serve_dev_store,
    ):
        with pytest.raises(ConfigError) as raised:
            attempt()
        assert str(raised.value) == devstore.NOT_INSTALLED
        assert "\n" not in str(raised.value)
        assert raised.value.__suppress_context__
    assert "SESSIONSVC_REDIS_URL" in devstore.NOT_INSTALLED
    assert "sessionsvc[embedded]" in devstore.NOT_INSTALLED


class _Loading(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn loading an app as a worker (or a ``--preload`` master) does."""

    def __init__(self, workers: int, load: Callable[[], Any]) -> None:
        self.workers, self._load = workers, load
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("workers", self.workers)

    def load(self) -> Any:
        return self._load()


@pytest.mark.parametrize("workers", [2, 4])
def test_gunicorn_workers_on_private_stores_are_refused_naming_the_fixes(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(devstore, "DEV_STORE_PORT", free_port())  # none served
    loading = _Loading(
        workers,
        lambda: store_from_url(None, prefix="dev", timeout=0.5, events_max=3, events_ttl=60),
    )
    with pytest.raises(ConfigError) as raised:
        loading.wsgi()
    message = str(raised.value)
    assert f"each of the server's {workers} workers would keep a private store" in message
    for fix in ("gunicorn -w 1", "SESSIONSVC_REDIS_URL", "-c python:sessionsvc.gunicorn_config"):
        assert fix in message


def test_one_gunicorn_worker_or_none_keeps_its_private_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devstore, "DEV_STORE_PORT", free_port())
    build = lambda: store_from_url(None, prefix="dev", timeout=0.5, events_max=3, events_ttl=60)  # noqa: E731
    for store in (_Loading(1, build).wsgi(), build()):
        assert store.private
        store.ping()
        store.check_one_process({"wsgi.multiprocess": False})
        with pytest.raises(StoreUnavailable):
            # Any other multi-process server, found out at its first request.
            store.check_one_process({"wsgi.multiprocess": True})


def test_a_served_or_real_store_is_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setattr(devstore, "DEV_STORE_PORT", port)
    devstore.serve_dev_store(port)
    build = lambda: store_from_url(None, prefix="dev", timeout=0.5, events_max=3, events_ttl=60)  # noqa: E731
    store = _Loading(4, build).wsgi()  # four workers, one store: allowed
    assert not store.private
    store.check_one_process({"wsgi.multiprocess": True})


def test_store_from_url_uses_prefix_and_url(redis_url: str) -> None:
    prefix = f"sessionsvc-test-{secrets.token_hex(6)}"
    store = store_from_url(redis_url, prefix=prefix, timeout=0.5, events_max=2, events_ttl=60)
    now = int(time.time())
    try:
        store.ping()
        for i in range(3):
            create(store, make_session(now=now + i))
        assert len(store.events("alice", limit=10)) == 2
        assert store.client.keys(f"{prefix}:*")
        assert store.client.keys(f"{prefix}:*") == store.client.keys(f"{prefix}:{{*")
    finally:
        delete_prefix(store.client, prefix)
        store.client.close()


# -- event encoding ---------------------------------------------------------------


def test_events_keep_odd_user_agents_exactly(store: SessionStore, now: int) -> None:
    odd = 'Agent "quoted" \\ back\\slash\n\u00fc\u4e2d\U0001f600 </script>'
    session = make_session(now=now)
    store.create(session, max_sessions=100, actor=Actor(ip="::1", user_agent=odd))
    [event] = store.events("alice", limit=10)
    assert event.user_agent == odd
    assert event.ip == "::1"
    assert event.type == "session.created"
    assert event.at == now


def test_event_ids_are_unique_within_and_across_scripts(
    store: SessionStore, three: list[Session], now: int
) -> None:
    store.revoke("alice", None, now=now, reason="others", actor=ACTOR)
    ids = [event.id for event in store.events("alice", limit=100)]
    assert len(ids) == 6
    assert len(set(ids)) == 6


@pytest.mark.parametrize("reason", ['x","k":"forged', "User", ""])
def test_revoke_reasons_that_are_not_words_are_refused(
    store: SessionStore, three: list[Session], now: int, reason: str
) -> None:
    with pytest.raises(ValueError, match="reason"):
        store.revoke("alice", None, now=now, reason=reason, actor=ACTOR)
    assert len(store.list_sessions("alice", now=now)) == 3


# -- compact session hashes -------------------------------------------------------


LONG_UA = CHROME + " Edg/120.0.2210.91 \u00fc\u4e2d\U0001f600" * 4


def test_long_strings_round_trip_through_pieces(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = dataclasses.replace(make_session(now=now), user_agent=LONG_UA)
    create(store, session)
    raw = rc.hgetall(store.session_key("alice", session.id))
    assert max(len(value.encode()) for value in raw.values()) <= 64
    assert stored(store, session.id).user_agent == LONG_UA

    wide_name = "\U0001f600" * 64  # 256 bytes: four pieces
    assert store.rename("alice", session.id, wide_name)
    assert stored(store, session.id).name == wide_name
    assert store.rename("alice", session.id, "Work")
    assert stored(store, session.id).name == "Work"
    assert store.rename("alice", session.id, None)
    assert stored(store, session.id).name is None
    assert not any(
        field.startswith("n") for field in rc.hkeys(store.session_key("alice", session.id))
    )


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_session_hash_stays_a_listpack(store: SessionStore, rc: redis.Redis, now: int) -> None:
    # OBJECT ENCODING needs a real server; fakeredis does not implement it.
    session = dataclasses.replace(make_session(now=now), user_agent=LONG_UA)
    create(store, session)
    store.rename("alice", session.id, "\U0001f600" * 64)
    assert rc.object("encoding", store.session_key("alice", session.id)) == "listpack"


# -- interned user agents -----------------------------------------------------------


def interned(rc: redis.Redis, store: SessionStore, user_id: str = "alice") -> dict[str, str]:
    """The user's agents hash: digest to the user agent (its JSON, in pieces
    of 64 bytes: fields <digest>, <digest>1, ...)."""
    raw = rc.hgetall(store.agents_key(user_id))
    texts = {}
    for ref in (field for field in raw if len(field) == 16):
        parts, i = [raw[ref]], 1
        while f"{ref}{i}" in raw:
            parts.append(raw[f"{ref}{i}"])
            i += 1
        assert all(len(part) <= 64 for part in parts)
        texts[ref] = json.loads("".join(parts))
    return texts


def test_a_user_agent_is_stored_once_per_user(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    sessions = [make_session(now=now) for _ in range(5)]
    for session in sessions:
        create(store, session)
    assert interned(rc, store) == {agent_digest(CHROME): CHROME}
    for session in sessions:
        raw = rc.hgetall(store.session_key("alice", session.id))
        assert raw["uh"] == agent_digest(CHROME)
        assert not any(re.fullmatch(r"ua\d*", field) for field in raw)
    entries = rc.lrange(store.events_key("alice"), 0, -1)
    assert len(entries) == 5
    for entry in entries:
        fields = json.loads(entry)
        assert fields["uh"] == agent_digest(CHROME)
        assert "ua" not in fields
    # Every reader gives the user agent back.
    first = sessions[0]
    assert stored(store, first.id).user_agent == CHROME
    assert {s.user_agent for s in store.list_sessions("alice", now=now)} == {CHROME}
    assert {e.user_agent for e in store.events("alice", limit=10)} == {CHROME}
    renamed = store.rename("alice", first.id, "Work")
    assert renamed is not None
    assert renamed.user_agent == CHROME
    check = store.check_access("alice", first.id, now=now + 1, actor=ACTOR_REQUEST, whole=True)
    assert check.session is not None
    assert check.session.user_agent == CHROME
    assert check.session.name == "Work"


def test_each_user_agent_of_a_user_is_interned_and_other_users_have_their_own(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    store.revoke("alice", [session.id], now=now, reason="revoked", actor=Actor(user_agent=IPHONE))
    create(store, make_session("bob", now=now))
    assert interned(rc, store) == {agent_digest(CHROME): CHROME, agent_digest(IPHONE): IPHONE}
    assert interned(rc, store, "bob") == {agent_digest(CHROME): CHROME}
    revoked, created = store.events("alice", limit=10)
    assert (revoked.type, revoked.user_agent) == ("session.revoked", IPHONE)
    assert (created.type, created.user_agent) == ("session.created", CHROME)


def test_a_session_opened_by_another_user_agent_keeps_its_own(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = dataclasses.replace(make_session(now=now), user_agent=FIREFOX_LINUX)
    create(store, session)  # ACTOR's user agent is Chrome's
    raw = rc.hgetall(store.session_key("alice", session.id))
    assert "uh" not in raw
    assert stored(store, session.id).user_agent == FIREFOX_LINUX
    [event] = store.events("alice", limit=10)
    assert event.user_agent == CHROME


def test_the_whole_user_agent_goes_to_webhooks_and_to_the_event_sink(
    backend: Any, rc: redis.Redis, now: int
) -> None:
    seen: list[SecurityEvent] = []
    store = SessionStore(
        lambda: rc,
        prefix=backend.prefix,
        webhooks=True,
        on_events=lambda user_id, events: seen.extend(events),
    )
    session = make_session(now=now)
    create(store, session)
    # Activity from another address records session.ip_changed, and hands
    # it to the sink.
    moved = Actor(ip="203.0.113.9", user_agent=CHROME, device=ACTOR_REQUEST.device)
    store.check_access("alice", session.id, now=now + 60, actor=moved)
    [stream] = store.stream_keys("alice")
    queued = [json.loads(fields["e"]) for _, fields in rc.xrange(stream)]
    assert [(event_from_json(json.dumps(e)).type, e["ua"]) for e in queued] == [
        ("session.created", CHROME),
        ("session.ip_changed", CHROME),
    ]
    assert not any("uh" in e for e in queued)
    kept = [
        *rc.lrange(store.events_key("alice"), 0, -1),
        *rc.lrange(store.activity_events_key("alice"), 0, -1),
    ]
    assert len(kept) == 2
    assert all("ua" not in json.loads(e) for e in kept)
    assert [(e.type, e.user_agent) for e in seen] == [("session.ip_changed", CHROME)]


def test_user_agents_past_the_cap_are_kept_whole(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    agents, sessions = open_with_agents(store, now, AGENTS_MAX + 2)
    assert interned(rc, store) == {agent_digest(a): a for a in agents[:AGENTS_MAX]}
    for session in sessions[:AGENTS_MAX]:
        assert "uh" in rc.hgetall(store.session_key("alice", session.id))
    for session in sessions[AGENTS_MAX:]:
        raw = rc.hgetall(store.session_key("alice", session.id))
        assert "uh" not in raw
        assert "ua" in raw
    assert {s.id: s.user_agent for s in store.list_sessions("alice", now=now)} == {
        s.id: s.user_agent for s in sessions
    }
    events = store.events("alice", limit=100)
    assert sorted(e.user_agent or "" for e in events) == sorted(agents)
    kept_whole = [json.loads(e) for e in rc.lrange(store.events_key("alice"), 0, 1)]
    assert [e["ua"] for e in kept_whole] == agents[:-3:-1]
    assert not any("uh" in e for e in kept_whole)


def sized_agent(i: int, size: int = AGENT_TEXT_MAX) -> str:
    """A user agent ``i`` whose JSON text is ``size`` bytes."""
    head = f"Agent/{i} (" + "\u00fc" * 10 + ") "
    return head + "x" * (size - len(json.dumps(head)))


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_agents_hash_stays_a_listpack(store: SessionStore, rc: redis.Redis, now: int) -> None:
    # OBJECT ENCODING needs a real server. The largest hash there can be: as
    # many user agents as interned at most, each as long as interned at most.
    agents = [sized_agent(i) for i in range(AGENTS_MAX)]
    assert {len(json.dumps(agent)) for agent in agents} == {AGENT_TEXT_MAX}
    for agent in agents:
        store.create(make_session(now=now), max_sessions=100, actor=Actor(user_agent=agent))
    # One more: a look for user agents to drop (none can go) is recorded too.
    store.create(make_session(now=now), max_sessions=100, actor=Actor(user_agent=FIREFOX_LINUX))
    assert rc.hget(store.agents_key("alice"), "p") is not None
    assert interned(rc, store) == {agent_digest(a): a for a in agents}
    assert rc.object("encoding", store.agents_key("alice")) == "listpack"
    events = store.events("alice", limit=100)
    assert {e.user_agent for e in events} == {*agents, FIREFOX_LINUX}


def test_a_user_agent_longer_than_interned_stays_whole(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    long = sized_agent(1, AGENT_TEXT_MAX + 1)
    session = dataclasses.replace(make_session(now=now), user_agent=long)
    store.create(session, max_sessions=100, actor=Actor(user_agent=long))
    assert interned(rc, store) == {}
    assert "uh" not in rc.hgetall(store.session_key("alice", session.id))
    [entry] = rc.lrange(store.events_key("alice"), 0, -1)
    assert json.loads(entry)["ua"] == long
    assert "uh" not in json.loads(entry)
    assert stored(store, session.id).user_agent == long


def open_with_agents(store: SessionStore, now: int, count: int) -> tuple[list[str], list[Session]]:
    """Open ``count`` sessions of alice, each from a user agent of its own."""
    agents = [f"{CHROME} Agent/{i}" for i in range(count)]
    sessions = []
    for agent in agents:
        session = dataclasses.replace(make_session(now=now), user_agent=agent)
        store.create(session, max_sessions=100, actor=Actor(user_agent=agent))
        sessions.append(session)
    return agents, sessions


def test_a_full_agents_hash_drops_the_user_agents_nothing_refers_to(
    backend: Any, rc: redis.Redis, now: int
) -> None:
    store = SessionStore(lambda: rc, prefix=backend.prefix, events_max=5)
    agents, sessions = open_with_agents(store, now, AGENTS_MAX)
    # Signed out from the last device: the first session is still live, the
    # events list (5 at most) now holds only sign-outs by the last agent.
    last = Actor(user_agent=agents[-1])
    store.revoke("alice", [s.id for s in sessions[1:]], now=now, reason="revoked", actor=last)
    assert len(interned(rc, store)) == AGENTS_MAX
    fresh = dataclasses.replace(make_session(now=now), user_agent=FIREFOX_LINUX)
    store.create(fresh, max_sessions=100, actor=Actor(user_agent=FIREFOX_LINUX))
    assert interned(rc, store) == {
        agent_digest(a): a for a in (agents[0], agents[-1], FIREFOX_LINUX)
    }
    # Every piece of the dropped ones went with them (and 'p' stayed).
    pieces = sum(-(-len(json.dumps(a)) // 64) for a in (agents[0], agents[-1], FIREFOX_LINUX))
    assert rc.hlen(store.agents_key("alice")) == pieces + 1
    assert "uh" in rc.hgetall(store.session_key("alice", fresh.id))
    # Every reader still finds every user agent, in a process that never met them.
    elsewhere = SessionStore(lambda: rc, prefix=backend.prefix, events_max=5)
    assert {s.id: s.user_agent for s in elsewhere.list_sessions("alice", now=now)} == {
        sessions[0].id: agents[0],
        fresh.id: FIREFOX_LINUX,
    }
    assert [e.user_agent for e in elsewhere.events("alice", limit=10)] == [
        FIREFOX_LINUX,
        *[agents[-1]] * 4,
    ]


def test_a_full_agents_hash_is_looked_through_at_most_once_an_hour(
    backend: Any, rc: redis.Redis, now: int
) -> None:
    store = SessionStore(lambda: rc, prefix=backend.prefix, events_max=AGENTS_MAX)
    agents, sessions = open_with_agents(store, now, AGENTS_MAX)
    # Full, and every user agent still in use: the look drops none.
    store.create(make_session(now=now), max_sessions=100, actor=Actor(user_agent=IPHONE))
    assert len(interned(rc, store)) == AGENTS_MAX
    # Now all but the first are unused (the events list is capped, and holds
    # only sign-outs by the first)...
    first = Actor(user_agent=agents[0])
    store.revoke("alice", [s.id for s in sessions[1:]], now=now, reason="revoked", actor=first)
    # ...but within the hour nobody looks again; an hour later, one does.
    for when, expected in ((now + 3599, AGENTS_MAX), (now + 3600, 2)):
        agent = f"{FIREFOX_LINUX} at/{when}"
        session = dataclasses.replace(make_session(now=when), user_agent=agent)
        store.create(session, max_sessions=100, actor=Actor(user_agent=agent))
        assert len(interned(rc, store)) == expected, when
    assert set(interned(rc, store).values()) == {agents[0], f"{FIREFOX_LINUX} at/{now + 3600}"}


def test_a_user_agent_only_an_activity_event_refers_to_is_not_dropped(
    backend: Any, rc: redis.Redis, now: int
) -> None:
    store = SessionStore(lambda: rc, prefix=backend.prefix, events_max=AGENTS_MAX - 1)
    agents, sessions = open_with_agents(store, now, AGENTS_MAX)
    # An address change seen from the first session, by the last agent: an
    # activity event that refers to it. Then every session but the first is
    # signed out by the first agent, which pushes every other reference
    # out of the capped sign-in list.
    moved = Actor(ip="203.0.113.9", user_agent=agents[-1], device=ACTOR_REQUEST.device)
    store.check_access("alice", sessions[0].id, now=now + 60, actor=moved)
    first = Actor(user_agent=agents[0])
    store.revoke("alice", [s.id for s in sessions[1:]], now=now, reason="revoked", actor=first)
    store.create(make_session(now=now), max_sessions=100, actor=Actor(user_agent=IPHONE))
    assert set(interned(rc, store).values()) == {agents[0], agents[-1], IPHONE}
    [changed] = [e for e in store.events("alice", limit=100) if e.type == "session.ip_changed"]
    assert changed.user_agent == agents[-1]


def test_a_user_agent_still_referred_to_is_never_dropped(
    backend: Any, rc: redis.Redis, now: int
) -> None:
    store = SessionStore(lambda: rc, prefix=backend.prefix, events_max=100)
    agents = [f"{CHROME} Agent/{i}" for i in range(AGENTS_MAX)]
    for agent in agents:
        store.create(make_session(now=now), max_sessions=100, actor=Actor(user_agent=agent))
    store.revoke("alice", None, now=now, reason="revoked", actor=Actor(user_agent=agents[0]))
    # No session is left, but the events refer to every one: nothing to drop.
    session = dataclasses.replace(make_session(now=now), user_agent=FIREFOX_LINUX)
    store.create(session, max_sessions=100, actor=Actor(user_agent=FIREFOX_LINUX))
    assert interned(rc, store) == {agent_digest(a): a for a in agents}
    assert "uh" not in rc.hgetall(store.session_key("alice", session.id))
    assert {e.user_agent for e in store.events("alice", limit=100)} == {*agents, FIREFOX_LINUX}


def test_a_digest_taken_by_another_text_never_stands_for_it(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    # Two user agents with one digest: the second is kept whole, where it is used.
    rc.hset(store.agents_key("alice"), agent_digest(CHROME), json.dumps("Other/1.0"))
    session = make_session(now=now)
    create(store, session)
    assert "uh" not in rc.hgetall(store.session_key("alice", session.id))
    assert stored(store, session.id).user_agent == CHROME
    [event] = store.events("alice", limit=10)
    assert event.user_agent == CHROME
    assert interned(rc, store) == {agent_digest(CHROME): "Other/1.0"}


def test_interned_user_agents_live_as_long_as_what_refers_to_them(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    key = store.agents_key("alice")
    # A session opened by a clock ahead of the server's: the hash expires
    # at the session's own time, not after the lifetime counted from now.
    ahead = make_session(now=now + 600, ttl=EVENTS_TTL + 3600)
    create(store, ahead)
    assert rc.ttl(key) >= rc.ttl(store.session_key("alice", ahead.id)) >= EVENTS_TTL + 4000
    long_lived = make_session(now=now, ttl=90 * 86400)
    create(store, long_lived)
    assert 90 * 86400 - 5 <= rc.ttl(key) <= 90 * 86400
    # A shorter session after it does not shorten it.
    create(store, make_session(now=now, ttl=3600))
    assert 90 * 86400 - 5 <= rc.ttl(key) <= 90 * 86400
    rc.expire(key, 60)
    create(store, make_session(now=now, ttl=60))
    assert EVENTS_TTL - 5 <= rc.ttl(key) <= EVENTS_TTL
    # An event without a user agent keeps the events list, so the agents
    # its older events refer to.
    rc.expire(key, 60)
    store.revoke("alice", [long_lived.id], now=now, reason="revoked", actor=Actor())
    assert EVENTS_TTL - 5 <= rc.ttl(key) <= EVENTS_TTL
    assert {e.user_agent for e in store.events("alice", limit=10)} == {CHROME, None}


def test_a_lost_agents_hash_leaves_the_user_agent_unknown(
    backend: Any, store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    rc.delete(store.agents_key("alice"))
    # A process that never met the user agent cannot tell it...
    elsewhere = SessionStore(lambda: rc, prefix=backend.prefix)
    [listed] = elsewhere.list_sessions("alice", now=now)
    assert listed.user_agent is None
    assert listed.device.browser == "Chrome"
    [event] = elsewhere.events("alice", limit=10)
    assert event.user_agent is None
    assert stored(elsewhere, session.id).user_agent is None
    assert elsewhere.rename("alice", session.id, "Work").user_agent is None  # type: ignore[union-attr]
    # ...one that did still can, whichever way it reads.
    [listed] = store.list_sessions("alice", now=now)
    assert listed.user_agent == CHROME
    [event] = store.events("alice", limit=10)
    assert event.user_agent == CHROME
    assert stored(store, session.id).user_agent == CHROME
    assert store.rename("alice", session.id, "Home").user_agent == CHROME  # type: ignore[union-attr]


def test_a_session_read_whole_needs_its_user_agent_read_once_per_process(
    backend: Any, store: SessionStore, rc: redis.Redis, commands: list[str], now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    # The process that opened it knows its user agent.
    store.load_scripts()
    commands.clear()
    assert stored(store, session.id).user_agent == CHROME
    assert commands == ["HGETALL"]
    # Another process reads it once, then knows it.
    other = SessionStore(lambda: rc, prefix=backend.prefix)
    other.load_scripts()
    for expected in (["HGETALL", "EVALSHA"], ["HGETALL"]):
        commands.clear()
        check = other.check_access("alice", session.id, now=now, actor=ACTOR_REQUEST, whole=True)
        assert check.session is not None
        assert check.session.user_agent == CHROME
        assert commands == expected


def test_a_process_keeps_only_user_agents_that_are_what_their_digest_says() -> None:
    texts = AgentTexts(size=2)
    texts.learn({agent_digest(CHROME): json.dumps(CHROME), agent_digest(IPHONE): json.dumps("x")})
    texts.learn({"not-a-digest": json.dumps(CHROME), agent_digest(FIREFOX_LINUX): "{"})
    assert texts.get(agent_digest(CHROME)) == json.dumps(CHROME)
    assert texts.get(agent_digest(IPHONE)) is None
    assert texts.get("not-a-digest") is None
    assert texts.get(agent_digest(FIREFOX_LINUX)) is None
    texts.learn({agent_digest(a): json.dumps(a) for a in (IPHONE, FIREFOX_LINUX)})
    # At most two: the oldest left first.
    assert texts.get(agent_digest(CHROME)) is None
    assert texts.get(agent_digest(IPHONE)) == json.dumps(IPHONE)
    assert texts.get(agent_digest(FIREFOX_LINUX)) == json.dumps(FIREFOX_LINUX)


def test_a_user_deleted_or_created_again_leaves_no_user_agents(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    assert store.create_user(User("alice", "hash", account="a1"))
    session = make_session(now=now, account="a1")
    create(store, session)
    assert rc.exists(store.agents_key("alice"))
    assert store.delete_user("alice", now=now, actor=ACTOR) == [session.id]
    assert not rc.exists(store.agents_key("alice"))
    # Left by a record deleted by hand: the new account starts without it.
    create(store, make_session(now=now))
    rc.delete(store.user_key("alice"))
    assert store.create_user(User("alice", "hash", account="a2"))
    assert not rc.exists(store.agents_key("alice"))


# -- the access-token check (touch) -------------------------------------------------


def test_touch_in_steady_state_is_one_plain_read(
    store: SessionStore, commands: list[str], now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    store.load_scripts()
    commands.clear()
    assert (
        store.check_access("alice", session.id, now=now + 5, actor=Actor(ip=session.ip)).status
        is CheckStatus.ACTIVE
    )
    assert commands == ["HMGET"]
    assert stored(store, session.id).last_seen_at == now


def test_touch_when_due_writes_activity_in_a_second_round_trip(
    store: SessionStore, commands: list[str], now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    store.load_scripts()
    commands.clear()
    assert (
        store.check_access("alice", session.id, now=now + 60, actor=Actor(ip="203.0.113.9")).status
        is CheckStatus.ACTIVE
    )
    assert commands == ["HMGET", "EVALSHA"]
    after = stored(store, session.id)
    assert (after.last_seen_at, after.ip, after.created_ip) == (now + 60, "203.0.113.9", session.ip)


def test_touch_records_a_new_address_before_the_interval(store: SessionStore, now: int) -> None:
    session = make_session(now=now)
    create(store, session)
    assert (
        store.check_access("alice", session.id, now=now + 1, actor=Actor(ip="203.0.113.9")).status
        is CheckStatus.ACTIVE
    )
    after = stored(store, session.id)
    assert (after.last_seen_at, after.ip) == (now, "203.0.113.9")


def test_touch_of_a_revoked_session_is_false_and_recreates_nothing(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    store.revoke("alice", [session.id], now=now, reason="user", actor=ACTOR)
    assert (
        store.check_access("alice", session.id, now=now + 3600, actor=Actor(ip="10.0.0.1")).status
        is CheckStatus.GONE
    )
    assert rc.exists(store.session_key("alice", session.id)) == 0


def test_touch_script_never_recreates_a_session_deleted_after_the_read(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    # The race the script closes: HMGET saw the session, then it was revoked
    # before the write. Run the write step alone on a deleted key.
    session = make_session(now=now)
    create(store, session)
    key = store.session_key("alice", session.id)
    rc.delete(key)
    result = store._activity("alice", session.id, now=now + 60, actor=Actor(ip="10.0.0.1"))
    assert result.status is CheckStatus.GONE
    assert rc.exists(key) == 0


# -- activity: addresses, anomalies, idle timeout, risk ------------------------------


def request_from(ip: str | None, user_agent: str | None = CHROME) -> Actor:
    """A request as the extension describes it: address, user agent, parsed device."""
    return Actor(ip=ip, user_agent=user_agent, device=parse_user_agent(user_agent))


@pytest.fixture
def sink(store: SessionStore) -> list[tuple[str, list[SecurityEvent]]]:
    """What the store hands to its event sink (the extension logs and signals it)."""
    received: list[tuple[str, list[SecurityEvent]]] = []
    store.on_events = lambda user_id, events: received.append((user_id, events))
    return received


def events_of(store: SessionStore, kind: str | None = None) -> list[SecurityEvent]:
    return [e for e in store.events("alice", limit=100) if kind is None or e.type == kind]


def test_a_new_address_records_ip_changed_with_from_and_to(
    store: SessionStore, sink: list[Any], now: int
) -> None:
    session = make_session(now=now, ip="198.51.100.4")
    create(store, session)
    result = store.check_access("alice", session.id, now=now + 1, actor=request_from("203.0.113.9"))
    assert result.status is CheckStatus.ACTIVE
    [event] = events_of(store, "session.ip_changed")
    assert event.session_id == session.id
    assert event.ip == "203.0.113.9"
    assert event.user_agent == CHROME
    assert event.detail == {"from": "198.51.100.4", "to": "203.0.113.9"}
    assert sink == [("alice", [event])]
    # The same address again: nothing more is recorded.
    store.check_access("alice", session.id, now=now + 2, actor=request_from("203.0.113.9"))
    assert len(events_of(store, "session.ip_changed")) == 1


def test_a_session_without_an_address_records_its_first_one(store: SessionStore, now: int) -> None:
    session = make_session(now=now, ip=None)
    create(store, session)
    store.check_access("alice", session.id, now=now + 1, actor=request_from("203.0.113.9"))
    [event] = events_of(store, "session.ip_changed")
    assert event.detail == {"from": None, "to": "203.0.113.9"}


def test_another_browser_and_os_is_an_anomaly_recorded_once(
    store: SessionStore, rc: redis.Redis, commands: list[str], sink: list[Any], now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    firefox = request_from(session.ip, FIREFOX_LINUX)
    result = store.check_access("alice", session.id, now=now + 1, actor=firefox)
    assert result.status is CheckStatus.ACTIVE
    [anomaly] = events_of(store, "session.anomaly")
    assert anomaly.detail == {
        "browser": {"from": "Chrome", "to": "Firefox"},
        "os": {"from": "Windows", "to": "Linux"},
    }
    assert anomaly.user_agent == FIREFOX_LINUX
    assert stored(store, session.id).risk == ("anomaly",)
    assert [e.type for _, batch in sink for e in batch] == ["session.anomaly"]
    # The same device again is known now: one plain read, nothing recorded.
    store.load_scripts()
    commands.clear()
    assert (
        store.check_access("alice", session.id, now=now + 2, actor=firefox).status
        is CheckStatus.ACTIVE
    )
    assert commands == ["HMGET"]
    assert len(events_of(store, "session.anomaly")) == 1
    # The session's own device is no anomaly, and it is still listed as the opener's.
    store.check_access("alice", session.id, now=now + 3, actor=request_from(session.ip))
    assert len(events_of(store, "session.anomaly")) == 1
    assert stored(store, session.id).device.browser == "Chrome"


def test_a_new_browser_version_is_no_anomaly_and_one_read(
    store: SessionStore, commands: list[str], now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    store.load_scripts()
    commands.clear()
    result = store.check_access(
        "alice", session.id, now=now + 1, actor=request_from(session.ip, CHROME_121)
    )
    assert result.status is CheckStatus.ACTIVE
    assert commands == ["HMGET"]
    assert events_of(store, "session.anomaly") == []


def test_a_request_without_user_agent_on_a_browser_session_is_an_anomaly(
    store: SessionStore, now: int
) -> None:
    session = make_session(now=now)
    create(store, session)
    store.check_access("alice", session.id, now=now + 1, actor=request_from(session.ip, None))
    [anomaly] = events_of(store, "session.anomaly")
    assert anomaly.detail == {
        "browser": {"from": "Chrome", "to": None},
        "os": {"from": "Windows", "to": None},
    }


@pytest.mark.parametrize("actor", [None, Actor(ip="198.51.100.4")])
def test_nothing_to_compare_is_no_anomaly(
    store: SessionStore, now: int, actor: Actor | None
) -> None:
    # No request (a check outside one), or a request whose device is not given.
    session = make_session(now=now)
    create(store, session)
    assert (
        store.check_access("alice", session.id, now=now + 61, actor=actor).status
        is CheckStatus.ACTIVE
    )
    assert events_of(store, "session.anomaly") == []


def test_a_session_opened_without_a_device_has_nothing_to_compare(
    store: SessionStore, now: int
) -> None:
    session = dataclasses.replace(make_session(now=now), device=Device(), user_agent=None)
    create(store, session)
    store.check_access(
        "alice", session.id, now=now + 1, actor=request_from(session.ip, FIREFOX_LINUX)
    )
    assert events_of(store, "session.anomaly") == []


def test_revoke_on_anomaly_signs_the_session_out(
    store: SessionStore, rc: redis.Redis, sink: list[Any], now: int
) -> None:
    store.policy = Policy(revoke_on_anomaly=True)
    session = make_session(now=now)
    other = make_session(now=now)
    create(store, session)
    create(store, other)
    result = store.check_access(
        "alice", session.id, now=now + 1, actor=request_from(session.ip, FIREFOX_LINUX)
    )
    assert result.status is CheckStatus.ANOMALY
    assert rc.exists(store.session_key("alice", session.id)) == 0
    assert [s.id for s in store.list_sessions("alice", now=now + 2)] == [other.id]
    newest_first = [(e.type, e.detail.get("reason")) for e in events_of(store)[:2]]
    assert newest_first == [("session.revoked", "anomaly"), ("session.anomaly", None)]
    [(user, batch)] = sink
    assert user == "alice"
    assert [e.type for e in batch] == ["session.anomaly", "session.revoked"]
    # Gone for good: the next use finds nothing.
    again = store.check_access("alice", session.id, now=now + 2, actor=request_from(session.ip))
    assert again.status is CheckStatus.GONE


def test_refresh_check_sees_anomalies_too(store: SessionStore, rc: redis.Redis, now: int) -> None:
    store.policy = Policy(revoke_on_anomaly=True)
    session = make_session(now=now, jti="jti-1")
    create(store, session)
    result = store.check_refresh(
        "alice",
        session.id,
        now=now + 1,
        actor=request_from(session.ip, IPHONE),
        presented_jti="jti-1",
        new_jti="jti-2",
    )
    assert result.status is CheckStatus.ANOMALY
    assert rc.exists(store.session_key("alice", session.id)) == 0
    [anomaly] = events_of(store, "session.anomaly")
    assert anomaly.detail["os"] == {"from": "Windows", "to": "iOS"}


def test_idle_session_is_revoked_on_its_next_use(
    store: SessionStore, rc: redis.Redis, sink: list[Any], now: int
) -> None:
    store.policy = Policy(touch_interval=60, idle_timeout=300)
    session = make_session(now=now)
    create(store, session)
    assert store.check_access("alice", session.id, now=now + 299, actor=ACTOR_REQUEST).status is (
        CheckStatus.ACTIVE
    )
    # Last seen at now + 299: dead at now + 599, not before.
    assert store.check_access("alice", session.id, now=now + 598, actor=ACTOR_REQUEST).status is (
        CheckStatus.ACTIVE
    )
    assert store.check_access("alice", session.id, now=now + 898, actor=ACTOR_REQUEST).status is (
        CheckStatus.IDLE
    )
    assert rc.exists(store.session_key("alice", session.id)) == 0
    [revoked] = events_of(store, "session.revoked")
    assert (revoked.session_id, revoked.detail) == (session.id, {"reason": "idle"})
    assert [e.type for _, batch in sink for e in batch] == ["session.revoked"]


def test_idle_timeout_applies_to_refresh_and_listing(
    store: SessionStore, rc: redis.Redis, sink: list[Any], now: int
) -> None:
    store.policy = Policy(touch_interval=60, idle_timeout=300)
    idle = make_session(now=now, jti="jti-1")
    listed_idle = make_session(now=now)
    active = make_session(now=now + 250, last_seen=now + 250)
    for session in (idle, listed_idle, active):
        create(store, session)
    refresh = store.check_refresh(
        "alice", idle.id, now=now + 300, actor=ACTOR_REQUEST, presented_jti="jti-1"
    )
    assert refresh.status is CheckStatus.IDLE
    assert [s.id for s in store.list_sessions("alice", now=now + 300)] == [active.id]
    assert rc.exists(store.session_key("alice", listed_idle.id)) == 0
    reasons = {e.session_id: e.detail["reason"] for e in events_of(store, "session.revoked")}
    assert reasons == {idle.id: "idle", listed_idle.id: "idle"}


def test_without_idle_timeout_an_old_session_lives(store: SessionStore, now: int) -> None:
    session = make_session(now=now, ttl=10 * 86400)
    create(store, session)
    later = now + 5 * 86400
    assert store.check_access("alice", session.id, now=later, actor=ACTOR_REQUEST).status is (
        CheckStatus.ACTIVE
    )


def open_on(store: SessionStore, user_agent: str, location: Location | None = None) -> Session:
    device = parse_user_agent(user_agent)
    session = dataclasses.replace(
        make_session(now=int(time.time())), user_agent=user_agent, device=device, location=location
    )
    opened = store.create(session, max_sessions=100, actor=ACTOR)
    assert opened is not None
    return dataclasses.replace(session, risk=opened.risk)


def test_risk_flags_come_from_the_users_own_history(store: SessionStore) -> None:
    berlin, paris = Location("DE", "Berlin"), Location("FR", "Paris")
    first = open_on(store, CHROME, berlin)
    assert first.risk == ()  # a first sign-in has nothing to compare with
    assert open_on(store, CHROME_121, berlin).risk == ()  # same browser and OS
    firefox = open_on(store, FIREFOX_LINUX, berlin)
    assert firefox.risk == ("new_device",)
    # Not known until the user confirms it: a second sign-in from it is new too.
    assert open_on(store, FIREFOX_LINUX, berlin).risk == ("new_device",)
    now = int(time.time())
    store.confirm("alice", firefox.id, caller=first.id, now=now, actor=ACTOR, seen_since=0)
    assert open_on(store, FIREFOX_LINUX, berlin).risk == ()  # known now
    iphone = open_on(store, IPHONE, paris)
    assert iphone.risk == ("new_device", "new_country")
    assert open_on(store, CHROME, paris).risk == ("new_country",)
    store.confirm("alice", iphone.id, caller=first.id, now=now, actor=ACTOR, seen_since=0)
    assert open_on(store, CHROME, paris).risk == ()
    # A device the parser cannot name is a device of its own.
    assert open_on(store, "").risk == ("new_device",)
    # Stored with the session, listed with it; another user's history is their own.
    assert stored(store, firefox.id).risk == ("new_device",)
    bob = dataclasses.replace(
        make_session("bob", now=int(time.time())),
        device=Device("desktop", "Firefox", "121.0", "Linux", None),
    )
    opened = store.create(bob, max_sessions=100, actor=ACTOR)
    assert opened is not None and opened.risk == ()


def test_risk_is_on_the_created_event_and_history_shares_the_users_slot(
    store: SessionStore, rc: redis.Redis
) -> None:
    first = open_on(store, CHROME)
    second = open_on(store, IPHONE)
    created = [e for e in events_of(store, "session.created") if e.session_id == second.id]
    assert created[0].detail == {"risk": ["new_device"]}
    known = store.known_key("alice")
    assert tag_of(known) == tag_of(store.session_key("alice", second.id))
    assert 0 < rc.ttl(known) <= EVENTS_TTL
    families = sorted(field for field in rc.hkeys(known) if not field.startswith("a:"))
    assert families == ["d:Chrome|Windows"]  # the iPhone joins it when confirmed
    now = int(time.time())
    store.confirm("alice", second.id, caller=first.id, now=now, actor=ACTOR, seen_since=0)
    families = sorted(field for field in rc.hkeys(known) if not field.startswith("a:"))
    assert families == ["d:Chrome|Windows", "d:Mobile Safari|iOS"]
    addresses = {field for field in rc.hkeys(known) if field.startswith("a:")}
    assert addresses == {f"a:{s.ip}" for s in (first, second) if s.ip}


def test_sign_in_history_is_bounded(store: SessionStore, rc: redis.Redis) -> None:
    for n in range(105):
        open_on(store, f"Mozilla/5.0 (Windows NT 10.0) Browser{n}/1.0")
    assert rc.hlen(store.known_key("alice")) <= 100


# -- location on the activity path ------------------------------------------------------


@pytest.fixture
def located(store: SessionStore, geoip_db: Any) -> Iterator[SessionStore]:
    with Locator(geoip_db) as locator:
        store.policy = Policy(locate=locator.lookup)
        yield store


def test_location_follows_the_address_and_a_country_jump_is_an_anomaly(
    located: SessionStore, now: int
) -> None:
    store = located
    session = make_session(now=now, ip=BERLIN_IP, location=Location("DE", "Berlin"))
    create(store, session)
    store.check_access("alice", session.id, now=now + 1, actor=request_from(NEW_YORK_IP))
    after = stored(store, session.id)
    assert (after.ip, after.location) == (NEW_YORK_IP, NEW_YORK)
    assert after.risk == ("anomaly",)
    [anomaly] = events_of(store, "session.anomaly")
    assert anomaly.detail == {"country": {"from": "DE", "to": "US"}}
    # Back home a day later: an address change, no new anomaly (compared with
    # where it began; and a day is time enough for the flight).
    day = 86_400
    store.check_access("alice", session.id, now=now + day, actor=request_from(BERLIN_IP))
    assert stored(store, session.id).location == BERLIN
    assert len(events_of(store, "session.anomaly")) == 1
    assert len(events_of(store, "session.ip_changed")) == 2
    # A private address has no location.
    store.check_access("alice", session.id, now=now + day + 1, actor=request_from("10.1.2.3"))
    assert stored(store, session.id).location is None
    assert len(events_of(store, "session.anomaly")) == 1


def test_a_move_within_a_country_is_no_anomaly(located: SessionStore, now: int) -> None:
    store = located
    session = make_session(now=now, ip="85.214.1.1", location=Location("DE", "Berlin"))
    create(store, session)
    store.check_access("alice", session.id, now=now + 1, actor=request_from(BERLIN_IP))
    assert events_of(store, "session.anomaly") == []
    assert [e.type for e in events_of(store)] == ["session.ip_changed", "session.created"]
