"""The store's side of DPoP (docs/api.md sections 9 and 13): a bound token's
check remembers its proof in the same round trip, a sign-in's proof is
remembered before its session opens, a mismatch is recorded once per touch
interval, and a replayed proof changes nothing.

Each runs on fakeredis, a real Redis server and a Redis Cluster.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from sessionsvc.store import CheckStatus, Policy, SessionStore
from sessionsvc.store.keys import proof_digest
from tests.backends import Backend, record_commands
from tests.test_store import (
    ACTOR_REQUEST,
    EVENTS_MAX,
    EVENTS_TTL,
    create,
    make_session,
    slot,
    stored,
    unchanged_keys,
)

JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
OTHER_JKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
WINDOW = 70


@pytest.fixture
def store(backend: Backend, rc: redis.Redis) -> SessionStore:
    made = SessionStore(
        lambda: rc, prefix=backend.prefix, events_max=EVENTS_MAX, events_ttl=EVENTS_TTL
    )
    made.load_scripts()  # as a running server has them: one round trip each
    return made


@pytest.fixture
def now() -> int:
    return int(time.time())


def bound_session(store: SessionStore, now: int, jkt: str = JKT) -> str:
    session = make_session(now=now, dpop_jkt=jkt)
    assert create(store, session) == []
    return session.id


def check(store: SessionStore, sid: str, digest: str, now: int, **options: Any) -> Any:
    return store.check_bound(
        "alice", sid, jkt=JKT, proof=digest, window=WINDOW, now=now, actor=ACTOR_REQUEST, **options
    )


def mismatch_events(store: SessionStore) -> list[tuple[str, dict[str, Any]]]:
    return [
        (event.session_id, event.detail)
        for event in store.events("alice", limit=100)
        if event.type == "session.anomaly"
    ]


def test_a_bound_session_records_its_keys_thumbprint(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    sid = bound_session(store, now)
    assert rc.hget(store.session_key("alice", sid), "k") == JKT
    assert stored(store, sid).dpop_jkt == JKT
    assert stored(store, sid).to_json()["dpop_bound"] is True


def test_check_bound_remembers_the_proof_in_one_round_trip(
    store: SessionStore, rc: redis.Redis, now: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = bound_session(store, now)
    digest = proof_digest(JKT, "jti-1")
    proof_key = store.keys.proof("alice", digest)
    sent = record_commands(rc, monkeypatch)
    assert check(store, sid, digest, now).status is CheckStatus.ACTIVE
    assert sent == ["EVALSHA"]
    assert rc.get(proof_key) == "1"
    assert WINDOW - 2 <= rc.ttl(proof_key) <= WINDOW
    # The proof lives in the user's slot, beside the session (one script on a cluster).
    assert slot(proof_key) == slot(store.session_key("alice", sid))
    assert slot(proof_key) == slot(store.index_key("alice"))


def test_a_replayed_proof_is_refused_and_writes_nothing(
    store: SessionStore, rc: redis.Redis, backend: Backend, now: int
) -> None:
    sid = bound_session(store, now)
    digest = proof_digest(JKT, "jti-1")
    proof_key = store.keys.proof("alice", digest)
    assert check(store, sid, digest, now).status is CheckStatus.ACTIVE
    ttl = rc.ttl(proof_key)
    untouched = unchanged_keys(
        backend.client(), store.session_key("alice", sid), proof_key, store.events_key("alice")
    )
    # Later, past the touch interval, when a check would write the last-seen time.
    for whole in (False, True):
        assert check(store, sid, digest, now + 61, whole=whole).status is CheckStatus.PROOF_REPLAYED
    assert untouched()
    assert rc.ttl(proof_key) <= ttl
    assert stored(store, sid).last_seen_at == now
    # Another proof of the same key passes, and is remembered on its own.
    other = proof_digest(JKT, "jti-2")
    result = check(store, sid, other, now + 1, whole=True)
    assert result.status is CheckStatus.ACTIVE
    assert result.session is not None and result.session.dpop_jkt == JKT
    assert rc.exists(store.keys.proof("alice", other)) == 1


def test_the_digest_is_of_the_key_and_the_jti(store: SessionStore, now: int) -> None:
    sid = bound_session(store, now)
    assert proof_digest(JKT, "jti-1") != proof_digest(OTHER_JKT, "jti-1")
    assert len(proof_digest(JKT, "x" * 256)) == 22  # 128 bits, base64url
    assert check(store, sid, proof_digest(JKT, "jti-1"), now).status is CheckStatus.ACTIVE
    # The same jti from another key is another proof.
    assert (
        check(store, sid, proof_digest(OTHER_JKT, "jti-1"), now).status
        is not CheckStatus.PROOF_REPLAYED
    )


def test_a_gone_session_writes_no_proof(store: SessionStore, rc: redis.Redis, now: int) -> None:
    sid = bound_session(store, now)
    store.revoke("alice", [sid], now=now, reason="logout", actor=ACTOR_REQUEST)
    for session_id in (sid, "no-such-session-id-0000"):
        digest = proof_digest(JKT, f"jti-{session_id}")
        assert check(store, session_id, digest, now).status is CheckStatus.GONE
        assert rc.exists(store.keys.proof("alice", digest)) == 0


def test_a_session_bound_to_another_key_is_gone_to_the_token(store: SessionStore, now: int) -> None:
    sid = bound_session(store, now, jkt=OTHER_JKT)
    assert check(store, sid, proof_digest(JKT, "jti-1"), now).status is CheckStatus.GONE
    unbound = make_session(now=now)
    create(store, unbound)
    assert check(store, unbound.id, proof_digest(JKT, "jti-2"), now).status is CheckStatus.GONE


def test_a_proof_remembered_already_in_this_request_is_a_plain_check(
    store: SessionStore, rc: redis.Redis, now: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = bound_session(store, now)
    sent = record_commands(rc, monkeypatch)
    assert check(store, sid, "", now).status is CheckStatus.ACTIVE
    assert sent == ["HMGET"]


def test_remember_proof_once(store: SessionStore, rc: redis.Redis) -> None:
    digest = proof_digest(JKT, "sign-in")
    assert store.remember_proof("alice", digest, WINDOW) is True
    assert store.remember_proof("alice", digest, WINDOW) is False
    key = store.keys.proof("alice", digest)
    assert WINDOW - 2 <= rc.ttl(key) <= WINDOW
    assert slot(key) == slot(store.index_key("alice"))
    # Another user's proof with the same digest is theirs.
    assert store.remember_proof("bob", digest, WINDOW) is True


def test_a_mismatch_is_recorded_once_per_touch_interval(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    sid = bound_session(store, now)
    assert store.record_mismatch("alice", sid, now=now).status is CheckStatus.DPOP_MISMATCH
    assert mismatch_events(store) == [(sid, {"kind": "dpop_mismatch"})]
    assert rc.hget(store.session_key("alice", sid), "am") == str(now)
    for later in (now + 1, now + 59):
        assert store.record_mismatch("alice", sid, now=later).status is CheckStatus.DPOP_MISMATCH
    assert len(mismatch_events(store)) == 1
    assert store.record_mismatch("alice", sid, now=now + 60).status is CheckStatus.DPOP_MISMATCH
    assert len(mismatch_events(store)) == 2
    assert rc.hget(store.session_key("alice", sid), "am") == str(now + 60)
    # Nothing else changed: the session is alive and was not touched.
    session = stored(store, sid)
    assert session.last_seen_at == now
    assert check(store, sid, proof_digest(JKT, "jti-after"), now + 61).status is CheckStatus.ACTIVE


def test_a_mismatch_of_a_gone_session_records_nothing(store: SessionStore, now: int) -> None:
    assert (
        store.record_mismatch("alice", "no-such-session-id-0000", now=now).status
        is CheckStatus.GONE
    )
    assert mismatch_events(store) == []


def test_a_mismatch_revokes_when_anomalies_revoke(store: SessionStore, now: int) -> None:
    sid = bound_session(store, now)
    store.policy = Policy(revoke_on_anomaly=True)
    assert store.record_mismatch("alice", sid, now=now).status is CheckStatus.ANOMALY
    assert store.get("alice", sid) is None
    summary = [(e.type, e.session_id, e.detail) for e in reversed(store.events("alice", limit=100))]
    assert summary[-2:] == [
        ("session.anomaly", sid, {"kind": "dpop_mismatch"}),
        ("session.revoked", sid, {"reason": "anomaly"}),
    ]


def test_a_refresh_with_a_replayed_proof_changes_nothing(
    store: SessionStore, rc: redis.Redis, backend: Backend, now: int
) -> None:
    sid = bound_session(store, now)
    digest = proof_digest(JKT, "jti-1")
    assert store.remember_proof("alice", digest, WINDOW) is True
    untouched = unchanged_keys(backend.client(), store.session_key("alice", sid))
    for presented in ("jti-1", "an-old-jti"):  # an old jti would otherwise be reuse
        result = store.check_refresh(
            "alice",
            sid,
            now=now + 61,
            actor=ACTOR_REQUEST,
            presented_jti=presented,
            new_jti="jti-new",
            proof=digest,
            window=WINDOW,
        )
        assert result.status is CheckStatus.PROOF_REPLAYED
    assert untouched()
    session = stored(store, sid)
    assert session.refresh_jti == "jti-1"
    assert session.last_seen_at == now
    # A fresh proof rotates, and is remembered.
    fresh = proof_digest(JKT, "jti-fresh")
    result = store.check_refresh(
        "alice",
        sid,
        now=now + 61,
        actor=ACTOR_REQUEST,
        presented_jti="jti-1",
        new_jti="jti-new",
        proof=fresh,
        window=WINDOW,
    )
    assert result.status is CheckStatus.ACTIVE
    assert stored(store, sid).refresh_jti == "jti-new"
    proof_key = store.keys.proof("alice", fresh)
    assert WINDOW - 2 <= rc.ttl(proof_key) <= WINDOW
    assert slot(proof_key) == slot(store.session_key("alice", sid))


def test_a_refresh_of_a_gone_session_remembers_no_proof(
    store: SessionStore, rc: redis.Redis, now: int
) -> None:
    digest = proof_digest(JKT, "jti-1")
    result = store.check_refresh(
        "alice",
        "no-such-session-id-0000",
        now=now,
        presented_jti="jti-1",
        proof=digest,
        window=WINDOW,
    )
    assert result.status is CheckStatus.GONE
    assert rc.exists(store.keys.proof("alice", digest)) == 0
