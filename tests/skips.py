"""The skip policy: what a test does when a real part it needs (Redis,
redis-server, redis-cli, chromium) is missing, and the reasons conftest's
end-of-run banner lists."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: Why tests that need a real part (Redis, redis-server, chromium) were skipped;
#: conftest prints them in a red banner at the end of the run.
SKIP_REASONS: list[str] = []


def cannot_run(message: str) -> NoReturn:
    """A real part this test needs is missing: fail under ``CI=true``, else skip loudly."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    if message not in SKIP_REASONS:
        SKIP_REASONS.append(message)
    pytest.skip(message)
