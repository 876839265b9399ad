"""The browser tests' machinery: Debian's Chromium under Playwright, the
service under gunicorn for it, signing a page in, listening to a page's
console, where screenshots go, and reading the account page (its cards and
"Was this you?" prompts).

Chromium is ``/usr/bin/chromium``, or ``$SESSIONSVC_TEST_CHROMIUM``;
``.ci/run`` installs it when missing. Without it the tests skip loudly, and
under ``CI=true`` they fail instead. The fixtures here are loaded by
``tests/conftest.py`` (``pytest_plugins``), so the browser test modules use
them without importing one another.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.backends import served
from tests.servers import ROOT
from tests.skips import cannot_run

#: Every browser test user's password.
PASSWORD = "correct horse battery staple"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium_path() -> str | None:
    return os.environ.get("SESSIONSVC_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go: a temporary folder, or the folder (relative to
    the checkout) that ``$SESSIONSVC_TEST_SCREENSHOTS`` names, as ``make
    screenshots`` does to refresh the README's pictures on purpose."""
    chosen = os.environ.get("SESSIONSVC_TEST_SCREENSHOTS")
    folder = ROOT / chosen if chosen else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_png(path: Path) -> None:
    """A screenshot was written there: a PNG with more than its signature."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > len(PNG_SIGNATURE), path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        cannot_run("no chromium on PATH: the browser tests cannot run (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@contextmanager
def serve(
    redis_url: str,
    users: tuple[str, ...] = ("alice",),
    roles: dict[str, tuple[str, ...]] | None = None,
    **settings: str,
) -> Iterator[str]:
    """The service under gunicorn on its own key prefix, with these users
    (all with :data:`PASSWORD`) and their ``roles``: its base URL."""
    with served(redis_url, dict.fromkeys(users, PASSWORD), roles=roles, **settings) as running:
        yield running.base


@pytest.fixture
def service(redis_url: str) -> Iterator[str]:
    with serve(redis_url) as base:
        yield base


@pytest.fixture
def located_service(redis_url: str, geoip_db: Path) -> Iterator[str]:
    """With the tests' GeoIP database, behind one trusted proxy: each browser
    context says where it is with ``X-Forwarded-For``."""
    with serve(
        redis_url, SESSIONSVC_GEOIP_DB=str(geoip_db), SESSIONSVC_TRUSTED_PROXIES="1"
    ) as base:
        yield base


def sign_in(
    page: Any,
    base: str,
    *,
    user: str = "alice",
    path: str = "/account/sessions",
    signed_in: str = "#account",
) -> None:
    """Open the page at ``path``, sign in with its form, wait for ``signed_in``."""
    page.goto(f"{base}{path}")
    page.wait_for_selector("#signin", state="visible")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_selector(signed_in, state="visible")


def open_console(page: Any, base: str, user: str, *, signed_in: str = "#console") -> None:
    """Sign ``user`` in at the admin console; wait for ``signed_in`` (a non-admin: ``#refused``)."""
    sign_in(page, base, user=user, path="/admin", signed_in=signed_in)


def watch_console(page: Any) -> list[str]:
    """The errors and warnings on the page's console and every error it
    throws: a blocked script, style or fetch shows up here as a CSP violation.
    (Chromium's verbose hints, such as one about the change-password form
    having no username field, are not problems. The pages name an empty icon,
    so a browser asks for no /favicon.ico and a 404 there would count.)"""
    problems: list[str] = []

    def heard(message: Any) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"{message.type}: {message.text}")

    page.on("console", heard)
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    return problems


def no_sideways_scroll(page: Any) -> bool:
    """Whether the page fits its viewport's width (no horizontal scrolling)."""
    fits: bool = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    return fits


def cards(page: Any) -> list[dict[str, Any]]:
    page.wait_for_selector(".session-card")
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        ".session-card",
        """cards => cards.map(card => ({
            id: card.dataset.sessionId,
            label: card.querySelector('.device-label').textContent.trim(),
            current: card.querySelector('.badge-current') !== null,
            risk: [...card.querySelectorAll('.risk')].map(r => r.textContent.trim()),
            where: card.querySelector('.location').textContent.trim(),
        }))""",
    )
    return found


def prompts(page: Any) -> dict[str, dict[str, Any]]:
    """The page's "Was this you?" prompts by session id: question and buttons."""
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        ".review-prompt",
        """prompts => prompts.map(p => ({
            id: p.dataset.sessionId,
            question: p.querySelector('.question').textContent,
            buttons: [...p.querySelectorAll('button')].map(b => b.textContent),
        }))""",
    )
    return {p.pop("id"): p for p in found}


def reload(page: Any) -> None:
    page.reload()
    page.wait_for_selector(".session-card")
