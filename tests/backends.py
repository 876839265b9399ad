"""The Redis store under a test: counting the commands a client sends, and
deleting a test's own keys (never flushing a shared server)."""

from __future__ import annotations

from typing import Any

import pytest
import redis


def record_commands(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command ``client`` sends from now on (one round trip each, unpipelined)."""
    sent: list[str] = []
    original = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return original(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    return sent


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete this test's keys, and only them."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
