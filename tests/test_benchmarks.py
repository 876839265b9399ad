"""Micro-benchmarks of the two paths users pay for: the revocation check of
every authenticated request, and listing a user's sessions.

In the normal test run they execute once each, as tests (``--benchmark-disable``
in setup.cfg), so they stay correct; ``make bench-micro`` times them for real.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask_jwt_extended import decode_token

from sessionsvc import current_manager
from sessionsvc.store import Actor, CheckStatus
from tests.clients import CHROME


@pytest.fixture
def opened(app: Flask) -> Any:
    with app.test_request_context(headers={"User-Agent": CHROME}):
        manager = current_manager()
        pairs = [manager.open("alice") for _ in range(10)]
        manager.store.load_scripts()
        yield manager, pairs


def test_revocation_check_of_a_live_session(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    payload = decode_token(pairs[0].access_token)
    assert benchmark(manager.is_revoked, {}, payload) is False


def test_revocation_check_of_a_revoked_session(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    payload = decode_token(pairs[1].access_token)
    manager.revoke("alice", pairs[1].session_id)
    assert benchmark(manager.is_revoked, {}, payload) is True


def test_store_touch_when_a_write_is_due(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    store, sid = manager.store, pairs[2].session_id
    clock = iter(range(int(time.time()) + 120, 2**40, 120))  # every call is due
    result = benchmark(
        lambda: store.check_access("alice", sid, now=next(clock), actor=Actor(ip="10.0.0.1"))
    )
    assert result.status is CheckStatus.ACTIVE


def test_list_ten_sessions(benchmark: Any, opened: Any) -> None:
    manager, pairs = opened
    listed = benchmark(manager.list_for, "alice")
    assert {s.id for s in listed} == {p.session_id for p in pairs}
