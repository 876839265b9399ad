"""The audit writers' side of the event stream (sessionsvc/store/audit.py and
audit_take.lua): what a take hands out, what counts as lost, the backlog.

On fakeredis, a real Redis server and a real Redis Cluster (``backend``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from sessionsvc.models import User
from sessionsvc.state import state_of
from sessionsvc.store import SessionStore
from sessionsvc.store.audit import AUDIT_GROUP, AuditBatch
from sessionsvc.store.codec import event_from_json
from tests.backends import AppFactory, Backend, host_app
from tests.clients import Auth, fast_hash


@pytest.fixture
def audit_app(make_app: AppFactory, tmp_path: Path) -> Flask:
    """The standalone service with the audit trail on (its database is not
    used here: only the stream that feeds it)."""
    return make_app(SESSIONSVC_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}")


def create_user(store: SessionStore, name: str) -> str:
    """Create ``name`` with an account of its own, as the service does; its account."""
    account = secrets.token_urlsafe(12)
    store.create_user(User(id=name, password_hash=fast_hash("pw"), account=account))
    return account


def take_all(store: SessionStore, consumer: str = "w1", **options: Any) -> AuditBatch:
    """Every entry there is, in one batch, from the one stream the user's slot uses."""
    entries, lost = [], 0
    for stream in store.audit_streams(scan=True):
        batch = store.audit_take(stream, consumer, count=1000, **options)
        entries += [(stream, entry) for entry in batch.entries]
        lost += batch.lost
    return AuditBatch("*", [entry for _, entry in entries], lost)


def events_of(batch: AuditBatch) -> list[tuple[str | None, str | None, str]]:
    return [(e.user_id, e.account, event_from_json(e.event).type) for e in batch.entries]


def test_audit_alone_turns_the_stream_on(audit_app: Flask, make_app: AppFactory) -> None:
    assert state_of(audit_app).store.webhooks is True
    assert state_of(make_app()).store.webhooks is False


def test_each_entry_names_the_user_and_the_account(audit_app: Flask) -> None:
    store = state_of(audit_app).store
    account = create_user(store, "alice")
    Auth(audit_app).login("alice")
    batch = take_all(store)
    assert events_of(batch) == [("alice", account, "session.created")]
    assert batch.lost == 0


def test_a_name_created_again_is_another_account(audit_app: Flask) -> None:
    auth = Auth(audit_app)
    store = state_of(audit_app).store
    first = create_user(store, "alice")
    tokens = auth.login("alice")
    store.delete_user("alice")
    second = create_user(store, "alice")
    auth.login("alice")
    assert first != second
    kinds = events_of(take_all(store))
    assert kinds == [
        ("alice", first, "session.created"),
        ("alice", first, "session.revoked"),
        ("alice", second, "session.created"),
    ]
    # The old account's token stays refused.
    response = audit_app.test_client().get("/api/v1/sessions", headers=auth.headers(tokens))
    assert response.status_code == 401


def test_a_host_apps_users_have_no_account(backend: Backend, tmp_path: Path) -> None:
    app, _ = host_app(backend, SESSIONSVC_AUDIT_URL=f"sqlite:///{tmp_path / 'a.db'}")
    assert app.test_client().post("/login/carol").status_code == 200
    assert events_of(take_all(state_of(app).store)) == [("carol", None, "session.created")]


def test_an_acknowledged_entry_is_not_handed_out_again(audit_app: Flask) -> None:
    auth = Auth(audit_app)
    store = state_of(audit_app).store
    auth.login("alice")
    auth.login("alice")
    (stream,) = store.audit_streams()
    batch = store.audit_take(stream, "w1", count=1)
    assert len(batch.entries) == 1
    store.audit_ack(stream, [batch.entries[0].entry])
    rest = store.audit_take(stream, "w1", count=10)
    assert len(rest.entries) == 1 and rest.entries[0].entry != batch.entries[0].entry
    store.audit_ack(stream, [rest.entries[0].entry])
    assert store.audit_take(stream, "w2", count=10, takeover_ms=0).entries == []
    backlog = store.audit_backlog([stream])
    assert (backlog.unread, backlog.pending, backlog.oldest_ms, backlog.lost) == (0, 0, None, 0)


def test_a_stopped_writers_entries_are_claimed_after_the_takeover_time(audit_app: Flask) -> None:
    auth = Auth(audit_app)
    store = state_of(audit_app).store
    auth.login("alice")
    (stream,) = store.audit_streams()
    held = store.audit_take(stream, "dead", count=10)
    assert len(held.entries) == 1
    # Not yet: the writer may still be storing them.
    assert store.audit_take(stream, "w2", count=10, takeover_ms=60_000).entries == []
    backlog = store.audit_backlog([stream])
    assert (backlog.unread, backlog.pending) == (0, 1)
    assert backlog.oldest_ms == int(held.entries[0].entry.split("-")[0])
    claimed = store.audit_take(stream, "w2", count=10, takeover_ms=0)
    assert [entry.entry for entry in claimed.entries] == [held.entries[0].entry]
    assert claimed.lost == 0


def test_entries_trimmed_unread_are_counted_once(audit_app: Flask, rc: redis.Redis) -> None:
    auth = Auth(audit_app)
    store = state_of(audit_app).store
    auth.login("alice")
    (stream,) = store.audit_streams()
    first = store.audit_take(stream, "w1", count=10)
    store.audit_ack(stream, [entry.entry for entry in first.entries])
    for _ in range(4):
        auth.login("alice")
    # The bound reached while no writer read: three of the four are gone.
    rc.xtrim(stream, maxlen=1, approximate=False)
    batch = store.audit_take(stream, "w1", count=10)
    assert batch.lost == 3 and len(batch.entries) == 1
    # Another writer does not count them again.
    assert store.audit_take(stream, "w2", count=10, takeover_ms=0).lost == 0
    assert store.audit_backlog([stream]).lost == 3


def test_a_stopped_writers_entries_trimmed_are_counted(audit_app: Flask, rc: redis.Redis) -> None:
    auth = Auth(audit_app)
    store = state_of(audit_app).store
    auth.login("alice")
    auth.login("alice")
    (stream,) = store.audit_streams()
    assert len(store.audit_take(stream, "dead", count=10).entries) == 2
    auth.login("alice")
    rc.xtrim(stream, maxlen=1, approximate=False)
    lost = 0
    for consumer in ("w2", "w3"):
        batch = store.audit_take(stream, consumer, count=10, takeover_ms=0)
        lost += batch.lost
    assert lost == 2
    assert store.audit_backlog([stream]).lost == 2


def test_what_was_trimmed_before_the_writers_came_is_no_loss(
    make_app: AppFactory, rc: redis.Redis, tmp_path: Path
) -> None:
    app = make_app(SESSIONSVC_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}")
    auth = Auth(app)
    for _ in range(3):
        auth.login("alice")
    store = state_of(app).store
    (stream,) = store.audit_streams()
    rc.xtrim(stream, maxlen=1, approximate=False)
    batch = store.audit_take(stream, "w1", count=10)
    assert (batch.lost, len(batch.entries)) == (0, 1)
    assert AUDIT_GROUP in [group["name"] for group in rc.xinfo_groups(stream)]


def test_the_backlog_counts_unread_and_pending(audit_app: Flask) -> None:
    auth = Auth(audit_app)
    store = state_of(audit_app).store
    for _ in range(3):
        auth.login("alice")
    (stream,) = store.audit_streams()
    backlog = store.audit_backlog([stream])
    assert (backlog.unread, backlog.pending, backlog.lost) == (3, 0, 0)
    oldest = backlog.oldest_ms
    assert oldest is not None
    store.audit_take(stream, "w1", count=2)
    backlog = store.audit_backlog([stream])
    assert (backlog.unread, backlog.pending, backlog.oldest_ms) == (1, 2, oldest)


def test_the_daily_prune_falls_to_one_writer(audit_app: Flask) -> None:
    store = state_of(audit_app).store
    assert store.audit_prune_due(3600) is True
    assert store.audit_prune_due(3600) is False
