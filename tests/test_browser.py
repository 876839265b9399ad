"""The "Where you're signed in" page in a real headless Chromium (Playwright).

The service runs under gunicorn on loopback against the real Redis, as in
production. Two browser contexts with different user agents stand for a
laptop and a phone. The README's screenshots are taken by these tests: into
a temporary folder on every run, and into docs/screenshots/ only when
``$SESSIONSVC_TEST_SCREENSHOTS`` names that folder (``make screenshots``).

Chromium is Debian's (``/usr/bin/chromium``, or ``$SESSIONSVC_TEST_CHROMIUM``);
``.ci/run`` installs it when missing. Without it the tests skip loudly, and
under ``CI=true`` they fail instead.
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
from tests.clients import CHROME, IPHONE
from tests.geodata import BERLIN_IP, SYDNEY_IP
from tests.servers import ROOT
from tests.skips import cannot_run

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PASSWORD = "correct horse battery staple"


def chromium_path() -> str | None:
    return os.environ.get("SESSIONSVC_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go: a temporary folder, or the folder (relative to
    the checkout) that ``$SESSIONSVC_TEST_SCREENSHOTS`` names, as ``make
    screenshots`` does to refresh the README's pictures on purpose."""
    chosen = os.environ.get("SESSIONSVC_TEST_SCREENSHOTS")
    return ROOT / chosen if chosen else tmp_path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
def serve(redis_url: str, **settings: str) -> Iterator[str]:
    """The service under gunicorn on its own key prefix, with user alice."""
    with served(redis_url, {"alice": PASSWORD}, **settings) as running:
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


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/account/sessions")
    page.wait_for_selector("#signin", state="visible")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#account", state="visible")


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


def test_two_devices_see_each_other_and_one_signs_the_other_out(
    browser: Any, located_service: str, screenshots: Path
) -> None:
    """A laptop in Berlin; then a phone signs in from Sydney, a trip no plane
    makes that soon: the page shows both places, the phone's flags, and the
    recent security activity."""
    service = located_service
    laptop = browser.new_context(
        user_agent=CHROME,
        viewport={"width": 1280, "height": 900},
        extra_http_headers={"X-Forwarded-For": BERLIN_IP},
    )
    phone = browser.new_context(
        user_agent=IPHONE,
        viewport={"width": 375, "height": 812},
        is_mobile=True,
        has_touch=True,
        extra_http_headers={"X-Forwarded-For": SYDNEY_IP},
    )
    try:
        on_laptop, on_phone = laptop.new_page(), phone.new_page()
        sign_in(on_laptop, service)
        [only] = cards(on_laptop)
        assert only["current"] and only["label"] == "Chrome 120 on Windows 10"

        sign_in(on_phone, service)
        seen_by_phone = cards(on_phone)
        assert len(seen_by_phone) == 2
        [phone_card] = [c for c in seen_by_phone if c["current"]]
        assert phone_card["label"] == "Mobile Safari 17 on iOS 17.1"
        assert phone_card["risk"] == ["New device", "New country", "Impossible travel"]
        assert phone_card["where"] == f"Sydney, AU · {SYDNEY_IP}"

        on_laptop.reload()
        on_laptop.wait_for_selector("#account", state="visible")
        seen_by_laptop = cards(on_laptop)
        assert {c["id"] for c in seen_by_laptop} == {c["id"] for c in seen_by_phone}
        [laptop_card] = [c for c in seen_by_laptop if c["current"]]
        assert laptop_card["label"] == "Chrome 120 on Windows 10"
        assert laptop_card["where"] == f"Berlin, DE · {BERLIN_IP}"
        assert laptop_card["id"] != phone_card["id"]
        # Recent security activity, newest first: the phone's sign-in from
        # too far, and both sign-ins.
        activity = on_laptop.locator("#activity-list .event .what").all_inner_texts()
        assert activity[0].startswith("Impossible travel: Berlin, DE to Sydney, AU, 16,095 km at ")
        assert activity[1:] == [
            "New sign-in (New device, New country, Impossible travel)",
            "New sign-in",
        ]

        screenshots.mkdir(parents=True, exist_ok=True)
        for page, name in ((on_laptop, "account-desktop.png"), (on_phone, "account-phone.png")):
            page.screenshot(path=str(screenshots / name), full_page=True)
            assert_png(screenshots / name)
        # A phone-sized viewport does not scroll sideways.
        assert on_phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        # The laptop signs the phone out...
        phone_row = on_laptop.locator(f'.session-card[data-session-id="{phone_card["id"]}"]')
        phone_row.locator("button.signout").click()
        phone_row.wait_for(state="detached")
        assert [c["id"] for c in cards(on_laptop)] == [laptop_card["id"]]

        # ...and the phone's next action lands on the sign-in form.
        on_phone.click("#signout-others")
        on_phone.wait_for_selector("#signin", state="visible")
        assert on_phone.is_hidden("#account")
        assert "signed out" in on_phone.inner_text("#signin-error")
        assert on_phone.evaluate("sessionStorage.length") == 0
    finally:
        laptop.close()
        phone.close()


def test_rename_and_keyboard_use(browser: Any, service: str) -> None:
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        page.goto(f"{service}/account/sessions")
        page.wait_for_selector("#signin", state="visible")
        # Keyboard only: the form is reachable and submits with Enter.
        page.focus("#username")
        page.keyboard.type("alice")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "password"
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_selector("#account", state="visible")
        [card] = cards(page)
        row = page.locator(f'.session-card[data-session-id="{card["id"]}"]')
        row.locator("button.rename").click()
        row.locator(".rename-form input[name=name]").fill("Work laptop")
        row.locator(".rename-form button[type=submit]").click()
        # (The page's CSP forbids evaluating strings: wait with selectors.)
        page.wait_for_selector(".session-card .device-label:text-is('Work laptop')")
        # Signing out this device brings the sign-in form back.
        row.locator("button.signout").click()
        page.wait_for_selector("#signin", state="visible")
    finally:
        context.close()


def test_an_expired_access_token_is_refreshed_without_signing_out(
    browser: Any, redis_url: str
) -> None:
    with serve(redis_url, JWT_ACCESS_TOKEN_EXPIRES="2") as base:
        context = browser.new_context(user_agent=CHROME)
        try:
            page = context.new_page()
            sign_in(page, base)
            first_access = page.evaluate("sessionStorage.getItem('sessionsvc.access')")
            first_refresh = page.evaluate("sessionStorage.getItem('sessionsvc.refresh')")
            page.wait_for_timeout(3000)  # the access token has expired
            [card] = cards(page)
            row = page.locator(f'.session-card[data-session-id="{card["id"]}"]')
            row.locator("button.rename").click()
            row.locator(".rename-form input[name=name]").fill("Still here")
            row.locator(".rename-form button[type=submit]").click()
            page.wait_for_selector(".session-card .device-label:text-is('Still here')")
            assert page.is_hidden("#signin")
            # It refreshed once: both tokens were rotated, the session is the same.
            assert page.evaluate("sessionStorage.getItem('sessionsvc.access')") != first_access
            assert page.evaluate("sessionStorage.getItem('sessionsvc.refresh')") != first_refresh
            assert [c["id"] for c in cards(page)] == [card["id"]]
        finally:
            context.close()


def test_the_api_docs_render_every_operation_under_their_csp(browser: Any, service: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    response = page.goto(f"{service}/docs")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    page.wait_for_selector(".opblock")
    spec = page.request.get(f"{service}/apispec.json").json()
    operations = sum(
        method in ("get", "post", "patch", "delete")
        for path in spec["paths"].values()
        for method in path
    )
    assert page.locator(".opblock").count() == operations > 15
    tags = [tag.split("\n")[0] for tag in page.locator(".opblock-tag").all_inner_texts()]
    assert tags == ["sessions", "auth", "admin", "service"]
    # A blocked script, style or fetch shows up here as a CSP violation.
    assert problems == []
    context.close()


def test_change_password_from_the_page_signs_the_other_devices_out(
    browser: Any, service: str
) -> None:
    laptop = browser.new_context(user_agent=CHROME)
    phone = browser.new_context(user_agent=IPHONE)
    try:
        on_laptop, on_phone = laptop.new_page(), phone.new_page()
        sign_in(on_laptop, service)
        sign_in(on_phone, service)
        assert len(cards(on_phone)) == 2
        # A wrong current password is said on the form; nobody is signed out.
        on_laptop.fill("#current-password", "not it at all")
        on_laptop.fill("#new-password", "a brand new password")
        on_laptop.click("#password-form button[type=submit]")
        # (The page's CSP allows no eval: wait with selectors, not functions.)
        on_laptop.locator("#password-error", has_text="not your current password").wait_for()
        assert on_laptop.is_visible("#account")
        # A common new password: the API's detail, naming the rule, is said on the form.
        on_laptop.fill("#current-password", PASSWORD)
        on_laptop.fill("#new-password", "qwerty123")
        on_laptop.click("#password-form button[type=submit]")
        on_laptop.locator("#password-error", has_text="30,000 most common passwords").wait_for()
        assert on_laptop.is_visible("#account")
        # The right one: one other session ends.
        on_laptop.fill("#current-password", PASSWORD)
        on_laptop.fill("#new-password", "a brand new password")
        on_laptop.click("#password-form button[type=submit]")
        on_laptop.locator("#status", has_text="Signed out of 1 other session.").wait_for()
        assert len(cards(on_laptop)) == 1
        # The phone's next action lands on sign-in; the new password works there.
        on_phone.click("#signout-others")
        on_phone.wait_for_selector("#signin", state="visible")
        on_phone.fill("#username", "alice")
        on_phone.fill("#password", "a brand new password")
        on_phone.click("#signin button[type=submit]")
        on_phone.wait_for_selector("#account", state="visible")
        assert len(cards(on_phone)) == 2
    finally:
        laptop.close()
        phone.close()
