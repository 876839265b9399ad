"""The admin console (``GET /admin``): headers, assets, the DOM contract, mounting;
and the console in a real headless Chromium against the service under
gunicorn (the browser machinery is tests/browsers.py)."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import requests
from flask import Flask, jsonify
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from sessionsvc import SessionManager, console, create_app, pages
from sessionsvc.sql.migrate import upgrade
from tests.backends import delete_prefix
from tests.browsers import (
    PASSWORD,
    assert_png,
    no_sideways_scroll,
    open_console,
    serve,
    sign_in,
    watch_console,
)
from tests.clients import CHROME, IPHONE, JWT_KEY, Page, assert_page_headers
from tests.databases import audit_rows, event, write
from tests.geodata import BERLIN_IP, SYDNEY_IP
from tests.servers import wait_until

JS = {"text/javascript", "application/javascript"}


@pytest.fixture(scope="module")
def standalone() -> FlaskClient:
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return create_app({"TESTING": True, "JWT_SECRET_KEY": JWT_KEY}, redis_client=fake).test_client()


def host(*, register: bool, **options: Any) -> FlaskClient:
    """A host app mounting the extension; ``register``: the console too (opt-in)."""
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    SessionManager(app, redis_client=fake, **options)
    if register:
        app.register_blueprint(console.blueprint)
    return app.test_client()


def page_of(client: FlaskClient) -> Page:
    page = Page()
    page.feed(client.get("/admin").get_data(as_text=True))
    return page


def test_the_standalone_service_serves_the_console_with_strict_headers(
    standalone: FlaskClient,
) -> None:
    assert_page_headers(standalone.get("/admin"), pages.CSP)
    assert "script-src 'self';" in pages.CSP and "'unsafe-inline'" not in pages.CSP


def test_the_console_loads_only_its_own_assets(standalone: FlaskClient) -> None:
    text = standalone.get("/admin").get_data(as_text=True)
    page = page_of(standalone)
    assert not re.search(r"https?://", text)
    assert page.inline_code() == []
    assets = page.assets()
    # The shared scripts first: console.js uses what they define.
    assert assets == [
        "data:,",  # the empty icon: no /favicon.ico asked for
        "/admin/assets/console.css",
        "/admin/assets/shared/dpop.js",
        "/admin/assets/shared/tokens.js",
        "/admin/assets/shared/describe.js",
        "/admin/assets/console.js",
    ]
    for asset in assets[1:]:
        response = standalone.get(asset)
        assert response.status_code == 200, asset
        assert response.mimetype in (JS if asset.endswith(".js") else {"text/css"}), asset
        response.close()


def test_the_console_and_the_account_page_serve_the_same_shared_scripts(
    standalone: FlaskClient,
) -> None:
    for name in ("dpop.js", "tokens.js", "describe.js"):
        ours = standalone.get(f"/admin/assets/shared/{name}")
        theirs = standalone.get(f"/account/assets/shared/{name}")
        assert ours.get_data() == theirs.get_data() != b""
        ours.close()
        theirs.close()


def test_dom_contract(standalone: FlaskClient) -> None:
    page = page_of(standalone)
    body = {"data-admin-url": "/api/v1/admin", "data-auth-url": "/api/v1/auth"}
    assert ("body", {**body, "data-user-store": "true", "data-audit": "false"}) in page.tags
    assert page.tags[0] == ("html", {"lang": "en"})
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in (
        page.tags
    )
    # The account page's sign-in form: the same ids, the same tokens.
    assert page.by_id("signin") == ("form", {"id": "signin", "hidden": None})
    assert page.by_id("signin-error") == ("p", {"id": "signin-error", "role": "alert"})
    assert page.by_id("refused") == (
        "section",
        {"id": "refused", "aria-labelledby": "refused-heading", "hidden": None},
    )
    assert page.by_id("console") == ("main", {"id": "console", "hidden": None})
    assert page.by_id("search") == ("form", {"id": "search", "role": "search"})
    labels = {attrs.get("for") for tag, attrs in page.tags if tag == "label"}
    assert {"username", "password", "query", "roles", "delete-confirm"} <= labels
    assert page.by_id("delete") == ("button", {"id": "delete", "type": "submit", "disabled": None})
    assert page.by_id("problem") == ("p", {"id": "problem", "role": "alert"})
    assert page.by_id("status") == ("p", {"id": "status", "role": "status", "aria-live": "polite"})
    ids = [attrs.get("id") for _, attrs in page.tags]
    assert ids.index("query") < ids.index("user-list") < ids.index("session-list")
    # No audit trail, no audit history.
    assert not {"audit-heading", "audit-list", "audit-more"} & set(ids)


def test_with_an_audit_trail_a_users_page_has_its_history(tmp_path: Path) -> None:
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    config = {"SESSIONSVC_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}"}
    app = create_app({"TESTING": True, "JWT_SECRET_KEY": JWT_KEY, **config}, redis_client=fake)
    page = page_of(app.test_client())
    assert ("body", {"data-audit": "true"}) in [
        (tag, {"data-audit": attrs.get("data-audit")}) for tag, attrs in page.tags
    ]
    assert page.by_id("audit-list") == (
        "ol",
        {"id": "audit-list", "aria-labelledby": "audit-heading"},
    )
    assert page.by_id("audit-more") == (
        "button",
        {"id": "audit-more", "type": "button", "hidden": None},
    )
    ids = [attrs.get("id") for _, attrs in page.tags]
    assert ids.index("event-list") < ids.index("audit-heading") < ids.index("audit-list")
    # The page reads nothing itself: the database is not even opened.
    assert not (tmp_path / "audit.db").exists()


def test_the_script_stays_small(standalone: FlaskClient) -> None:
    response = standalone.get("/admin/assets/console.js")
    script = response.get_data(as_text=True)
    response.close()
    assert 100 < len(script.splitlines()) <= 400
    for key in ('"/sessions"', '"/events?limit=20"', '"/audit"', "next_cursor", "user_id"):
        assert key in script, key


def test_a_host_app_that_does_not_register_the_console_has_none() -> None:
    client = host(register=False, admin_routes=True, auth_routes=True)
    response = client.get("/admin")
    assert response.status_code == 404
    assert client.get("/admin/assets/console.js").status_code == 404


def test_a_host_app_without_the_user_store_gets_the_lookup_console() -> None:
    client = host(register=True, admin_routes=True)
    assert_page_headers(client.get("/admin"), pages.CSP)
    page = page_of(client)
    assert (
        "body",
        {
            "data-admin-url": "/api/v1/admin",
            "data-auth-url": "/api/v1/auth",
            "data-user-store": "false",
            "data-audit": "false",
        },
    ) in page.tags
    assert "User id" in client.get("/admin").get_data(as_text=True)


# In a real browser: the service under gunicorn on the real Redis.

ADMIN = "root"
#: Users whose names share a prefix ("al"), and some that do not.
USERS = (ADMIN, "alice", "alan", "bob", "carol")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"viewport": {"width": 375, "height": 812}, "is_mobile": True, "has_touch": True}


@pytest.fixture
def console_service(redis_url: str, geoip_db: Path) -> Iterator[str]:
    """Five users, root the admin; each browser context says where it is with
    ``X-Forwarded-For`` (one trusted proxy, the tests' GeoIP database)."""
    with serve(
        redis_url,
        USERS,
        roles={ADMIN: ("admin",)},
        SESSIONSVC_GEOIP_DB=str(geoip_db),
        SESSIONSVC_TRUSTED_PROXIES="1",
    ) as base:
        yield base


def listed(page: Any) -> list[str]:
    """The users the console lists, in order."""
    found: list[str] = page.locator("#user-list .user-row button.user").all_inner_texts()
    return found


def search(page: Any, prefix: str, first: str) -> None:
    """Search by typing and Enter; wait for the new list, ``first`` at its top.

    (The list is aria-busy from the Enter until the answer is shown: the list
    before it may well start with ``first`` too.)"""
    page.fill("#query", prefix)
    page.press("#query", "Enter")
    page.wait_for_selector("#results:not([aria-busy])")
    page.locator("#user-list .user-row:first-child button.user", has_text=first).wait_for()


def open_user(page: Any, user: str) -> None:
    page.locator(f'.user-row[data-user-id="{user}"] button.user').click()
    page.locator("#user-heading", has_text=user).wait_for()
    page.wait_for_selector("#user", state="visible")


def record(page: Any) -> dict[str, str]:
    terms = page.locator("#record-list dt").all_inner_texts()
    return dict(zip(terms, page.locator("#record-list dd").all_inner_texts(), strict=True))


def bearer_login(base: str, user: str) -> str:
    """Sign ``user`` in as a script would (no proof: Bearer); the access token."""
    answer = requests.post(
        f"{base}/api/v1/auth/login", json={"username": user, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def sessions_status(base: str, token: str) -> int:
    answer = requests.get(
        f"{base}/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return answer.status_code


@pytest.mark.slow
@pytest.mark.browser
def test_an_admin_finds_alice_signs_her_phone_out_and_disables_bob(
    browser: Any, console_service: str, screenshots: Path
) -> None:
    base = console_service
    laptop = browser.new_context(
        user_agent=CHROME, viewport=DESKTOP, extra_http_headers={"X-Forwarded-For": BERLIN_IP}
    )
    phone = browser.new_context(
        user_agent=IPHONE, **PHONE, extra_http_headers={"X-Forwarded-For": SYDNEY_IP}
    )
    desk = browser.new_context(user_agent=CHROME, viewport=DESKTOP)
    try:
        # Alice on her laptop in Berlin, then on her phone in Sydney; bob from a script.
        sign_in(laptop.new_page(), base)
        on_phone = phone.new_page()
        sign_in(on_phone, base)
        bob = bearer_login(base, "bob")
        assert sessions_status(base, bob) == 200

        page = desk.new_page()
        problems = watch_console(page)
        open_console(page, base, ADMIN)
        # Every user, in the order of their names, and the search box has focus.
        page.wait_for_selector("#user-list .user-row")
        assert listed(page) == sorted(USERS)
        assert page.evaluate("document.activeElement.id") == "query"
        search(page, "al", "alan")
        assert listed(page) == ["alan", "alice"]
        assert page.is_hidden("#more")
        assert page.inner_text("#status") == "2 users found."

        open_user(page, "alice")
        assert page.evaluate("document.activeElement.id") == "user-heading"
        # The list says whom the page shows.
        chosen = page.locator('#user-list button.user[aria-current="true"]')
        assert chosen.all_inner_texts() == ["alice"]
        assert record(page)["Roles"] == "none"
        # In the browser's time zone, but on the day served() gives in UTC.
        assert "12/1/2025" in record(page)["Created"]
        assert record(page)["Password changed"] == "never"
        assert record(page)["Status"] == "Active"
        cards = page.locator("#session-list .session-card")
        assert cards.count() == 2
        on_sydney = page.locator(".session-card", has_text="Sydney")
        assert on_sydney.locator(".device-label").inner_text() == "Mobile Safari 17 on iOS 17.1"
        assert on_sydney.locator(".location").inner_text() == f"Sydney, AU · {SYDNEY_IP}"
        assert on_sydney.locator(".risk").all_inner_texts() == [
            "New device",
            "New country",
            "Impossible travel",
        ]
        assert on_sydney.locator(".review").inner_text() == "Not yet confirmed by the user"
        assert on_sydney.locator(".activity").inner_text() == "Active now"
        events = page.locator("#event-list .event .what").all_inner_texts()
        assert events[0] == "Impossible travel: Berlin, DE to Sydney, AU, 16,095 km in 1 second"
        assert events[1:] == [
            "New sign-in (New device, New country, Impossible travel)",
            "New sign-in",
        ]
        page.screenshot(path=str(screenshots / "console-desktop.png"), full_page=True)
        assert_png(screenshots / "console-desktop.png")

        # Sign the phone out: its card goes, and focus moves to the laptop's button.
        phone_id = on_sydney.get_attribute("data-session-id")
        with page.expect_response(
            f"{base}/api/v1/admin/users/alice/sessions/{phone_id}"
        ) as revoked:
            on_sydney.locator("button.signout").click()
        assert revoked.value.status == 204
        on_sydney.wait_for(state="detached")
        assert cards.count() == 1
        page.locator(
            "#status", has_text="Signed out Mobile Safari 17 on iOS 17.1 of alice."
        ).wait_for()
        assert page.evaluate("document.activeElement.className") == "signout danger"
        assert page.locator("#event-list .event .what").first.inner_text() == (
            "Signed out: signed out by an administrator"
        )
        # The phone's next request is refused: it is back at the sign-in form.
        with on_phone.expect_response(f"{base}/api/v1/sessions") as refused:
            on_phone.click("#signout-others")
        assert refused.value.status == 401
        on_phone.wait_for_selector("#signin", state="visible")

        # Disable bob: his token stops working, and the page says so.
        search(page, "b", "bob")
        open_user(page, "bob")
        assert page.inner_text("#toggle-disabled") == "Disable bob"
        page.click("#toggle-disabled")
        page.locator("#status", has_text="Disabled bob").wait_for()
        assert record(page)["Status"] == "Disabled"
        assert page.inner_text("#toggle-disabled") == "Enable bob"
        assert page.locator('.user-row[data-user-id="bob"] .badge-disabled').inner_text() == (
            "Disabled"
        )
        assert page.locator("#session-list .empty").inner_text() == "No sessions."
        assert page.is_hidden("#revoke-all")
        assert sessions_status(base, bob) == 401
        # Roles: typed with commas and spaces, saved as a list.
        page.fill("#roles", "reader,  auditor writer")
        page.press("#roles", "Enter")
        page.locator("#status", has_text="Roles of bob: reader, auditor, writer.").wait_for()
        assert record(page)["Roles"] == "reader, auditor, writer"
        assert problems == []
    finally:
        for context in (laptop, phone, desk):
            context.close()


@pytest.mark.slow
@pytest.mark.browser
def test_a_user_who_is_not_an_admin_is_refused(browser: Any, console_service: str) -> None:
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        admin_calls: list[Any] = []
        page.on("response", lambda r: admin_calls.append(r) if "/api/v1/admin/" in r.url else None)
        open_console(page, console_service, "alice", signed_in="#refused")
        [probe] = admin_calls
        assert probe.status == 403
        assert probe.header_value("content-type") == "application/problem+json"
        assert page.inner_text("#refused-heading") == "This console is for administrators"
        assert page.evaluate("document.activeElement.id") == "refused-heading"
        assert page.is_hidden("#console")
        assert page.locator("#user-list li").count() == 0
        # Signing out brings the sign-in form back, with no tokens kept.
        page.click("#refused-signout")
        page.wait_for_selector("#signin", state="visible")
        assert page.evaluate("sessionStorage.getItem('sessionsvc.access')") is None
        # The one problem is the refused call itself.
        assert [p for p in problems if "403" not in p] == []
        assert len(problems) == 1
    finally:
        context.close()


@pytest.mark.browser
def test_the_console_tells_an_admin_what_the_user_answered_not_you(
    browser: Any, console_service: str
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{console_service}/admin")
        page.wait_for_selector("#signin", state="visible")
        events = (
            "[{type: 'session.confirmed'},"
            " {type: 'session.revoked', detail: {reason: 'denied'}},"
            " {type: 'session.revoked', detail: {reason: 'admin'}}]"
        )
        to_admin = page.evaluate(f"{events}.map(e => sessionsvcDescribe.happening(e, true))")
        to_user = page.evaluate(f"{events}.map(e => sessionsvcDescribe.happening(e))")
        assert to_admin == [
            "Sign-in confirmed by the user",
            "Signed out: the user said it was not them",
            "Signed out: signed out by an administrator",
        ]
        assert to_user == [
            "Sign-in confirmed as yours",
            "Signed out: you said it was not you",
            "Signed out: signed out by an administrator",
        ]
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.browser
def test_on_a_phone_by_keyboard_an_admin_deletes_a_user_after_typing_the_id(
    browser: Any, console_service: str, screenshots: Path
) -> None:
    base = console_service
    context = browser.new_context(user_agent=IPHONE, **PHONE)
    try:
        carol = bearer_login(base, "carol")
        page = context.new_page()
        problems = watch_console(page)
        open_console(page, base, ADMIN)
        # Type, Enter; Tab past the search button to the first user; Enter opens her.
        page.focus("#query")
        page.keyboard.type("car")
        page.keyboard.press("Enter")
        page.wait_for_selector("#results:not([aria-busy])")
        page.locator("#status", has_text="1 user found.").wait_for()
        assert listed(page) == ["carol"]
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "carol"
        page.keyboard.press("Enter")
        page.locator("#user-heading", has_text="carol").wait_for()
        assert page.evaluate("document.activeElement.id") == "user-heading"
        page.screenshot(path=str(screenshots / "console-phone.png"), full_page=True)
        assert_png(screenshots / "console-phone.png")
        assert no_sideways_scroll(page)

        # Delete waits for the id typed in full: a near miss and Enter do nothing.
        deletes: list[str] = []
        page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
        assert page.is_disabled("#delete")
        page.focus("#delete-confirm")
        page.keyboard.type("caro")
        assert page.is_disabled("#delete")
        page.keyboard.press("Enter")
        page.keyboard.type("l")
        assert page.is_enabled("#delete")
        assert deletes == []
        with page.expect_response(f"{base}/api/v1/admin/users/carol") as deleted:
            page.keyboard.press("Enter")
        assert deleted.value.status == 204
        page.locator("#status", has_text="Deleted carol.").wait_for()
        assert page.is_hidden("#user")
        assert page.evaluate("document.activeElement.id") == "query"
        assert listed(page) == []
        assert sessions_status(base, carol) == 401
        assert no_sideways_scroll(page)
        assert problems == []

        # A refusal of the API is said in the alert region: the last admin stays.
        search(page, "ro", ADMIN)
        open_user(page, ADMIN)
        page.click("#toggle-disabled")
        said = "This is the last admin: make another admin first."
        page.locator("#problem", has_text=said).wait_for()
        assert page.inner_text("#status") == ""
        assert record(page)["Status"] == "Active"
        # (The refused call is a 409 on the console; nothing else is.)
        assert [p for p in problems if "409" not in p] == []
        assert len(problems) == 1
    finally:
        context.close()


@pytest.fixture
def host_with_console(redis_url: str) -> Iterator[tuple[str, SessionManager]]:
    """A host app with its own sign-in, the admin routes on (root is its
    admin) and the console registered, served on loopback from a thread: no
    user store, so the console looks users up by id."""
    app = Flask("host")
    app.config.update(
        JWT_SECRET_KEY=JWT_KEY, SESSIONSVC_KEY_PREFIX=f"sessionsvc-test-{secrets.token_hex(6)}"
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    sessions = SessionManager(app, redis_client=client, admin_routes=True)
    sessions.admin_loader(lambda user_id, claims: user_id == ADMIN)
    app.register_blueprint(console.blueprint)

    @app.post("/login/<user>")
    def login(user: str) -> Any:  # the host's own sign-in, checked elsewhere
        return jsonify(sessions.open(user).to_json())

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", sessions
    finally:
        server.shutdown()
        thread.join(10)
        delete_prefix(client, app.config["SESSIONSVC_KEY_PREFIX"])
        client.close()


def host_login(base: str, user: str) -> dict[str, Any]:
    answer = requests.post(f"{base}/login/{user}", headers={"User-Agent": IPHONE}, timeout=10)
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


#: What a host's own sign-in does before sending the admin to the console.
KEEP_TOKENS = """tokens => {
    sessionStorage.setItem('sessionsvc.access', tokens.access_token);
    sessionStorage.setItem('sessionsvc.refresh', tokens.refresh_token);
    sessionStorage.setItem('sessionsvc.token_type', tokens.token_type);
}"""


@pytest.mark.slow
@pytest.mark.browser
def test_mounted_without_the_user_store_the_console_looks_users_up_by_id(
    browser: Any, host_with_console: tuple[str, SessionManager]
) -> None:
    base, _ = host_with_console
    alice = host_login(base, "alice")
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        page.goto(f"{base}/admin")
        page.evaluate(KEEP_TOKENS, host_login(base, ADMIN))
        page.reload()
        page.wait_for_selector("#console", state="visible")
        assert page.inner_text("label[for=query]") == "User id"
        assert page.is_hidden("#results")
        page.fill("#query", "alice")
        page.press("#query", "Enter")
        page.locator("#user-heading", has_text="alice").wait_for()
        # Sessions and events only: the record and its changes are the host's.
        for hidden in ("#record", "#delete-form", "#results"):
            assert page.is_hidden(hidden), hidden
        card = page.locator("#session-list .session-card")
        assert card.locator(".device-label").inner_text() == "Mobile Safari 17 on iOS 17.1"
        assert page.locator("#event-list .event .what").all_inner_texts() == ["New sign-in"]
        card.locator("button.signout").click()
        page.locator("#session-list .empty", has_text="No sessions.").wait_for()
        assert page.evaluate("document.activeElement.id") == "user-heading"
        refused = requests.get(
            f"{base}/api/v1/sessions",
            headers={"Authorization": f"Bearer {alice['access_token']}"},
            timeout=10,
        )
        assert refused.status_code == 401
        assert problems == []

        # Someone the host's loader does not admit is refused.
        page.evaluate(KEEP_TOKENS, host_login(base, "bob"))
        page.reload()
        page.wait_for_selector("#refused", state="visible")
        assert page.is_hidden("#console")
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.browser
def test_more_users_come_page_by_page(browser: Any, redis_url: str) -> None:
    names = tuple(f"user{n:02}" for n in range(25))
    with serve(redis_url, (ADMIN, *names), roles={ADMIN: ("admin",)}) as base:
        context = browser.new_context(user_agent=CHROME)
        try:
            page = context.new_page()
            problems = watch_console(page)
            open_console(page, base, ADMIN)
            page.wait_for_selector("#more", state="visible")
            everyone = sorted((ADMIN, *names))
            assert listed(page) == everyone[:20]
            assert page.inner_text("#status") == "20 users found, more to come."
            # By keyboard: Enter on "More users"; focus goes to the first user it added.
            page.focus("#more")
            page.keyboard.press("Enter")
            page.wait_for_selector("#results:not([aria-busy])")
            page.wait_for_selector("#more", state="hidden")
            assert listed(page) == everyone
            assert page.inner_text("#status") == "26 users found."
            assert page.evaluate("document.activeElement.textContent") == everyone[20]
            # A new search starts the list over.
            search(page, "user1", "user10")
            assert listed(page) == [f"user1{n}" for n in range(10)]
            assert page.is_hidden("#more")
            assert problems == []
        finally:
            context.close()


def signed_in_events(audit_url: str) -> list[str]:
    """The ids of alice's sign-ins in the audit table."""
    rows = audit_rows(audit_url)
    return [r["id"] for r in rows if r["user_id"] == "alice" and r["type"] == "session.created"]


@contextmanager
def alice_of_an_audited_service(
    browser: Any, redis_url: str, audit_url: str, *, written: bool = True
) -> Iterator[tuple[Any, list[str]]]:
    """The console of a service with an audit trail at ``audit_url``, its
    admin on alice's page (alice signed in once, and with ``written`` the
    service's audit writer has stored that); the page and its problems."""
    users = (ADMIN, "alice", "bob")
    with serve(redis_url, users, roles={ADMIN: ("admin",)}, SESSIONSVC_AUDIT_URL=audit_url) as base:
        bearer_login(base, "alice")
        if written:
            wait_until(
                lambda: signed_in_events(audit_url) != [],
                20,
                lambda: "the writer did not store alice's sign-in",
            )
        context = browser.new_context(user_agent=CHROME)
        try:
            page = context.new_page()
            problems = watch_console(page)
            open_console(page, base, ADMIN)
            search(page, "alice", "alice")
            open_user(page, "alice")
            yield page, problems
        finally:
            context.close()


@pytest.mark.slow
@pytest.mark.browser
def test_an_admin_reads_a_users_audit_history_page_by_page(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    revoked = {"type": "session.revoked", "detail": {"reason": "admin"}}
    write(
        url,
        *[event(f"e-{n:02d}", at=start + timedelta(minutes=n), **revoked) for n in range(25)],
        event("bob-1", user_id="bob", at=start + timedelta(hours=1)),
    )
    with alice_of_an_audited_service(browser, redis_url, url) as (page, problems):
        # Her sign-in just now, as the service's writer stored it, is the newest.
        [signed_in] = signed_in_events(url)
        shown = "items => items.map(item => item.dataset.eventId)"
        items = page.locator("#audit-list .event")
        # The newest 20 (a page), newest first; bob's are not alice's.
        older = [f"e-{n:02d}" for n in reversed(range(25))]
        assert items.evaluate_all(shown) == [signed_in, *older[:19]]
        assert items.first.locator(".what").inner_text() == "New sign-in"
        assert items.nth(1).locator(".what").inner_text() == (
            "Signed out: signed out by an administrator"
        )
        page.click("#audit-more")
        page.wait_for_selector("#audit-more", state="hidden")
        assert items.evaluate_all(shown) == [signed_in, *older]
        assert page.inner_text("#status") == "26 recorded events of alice."
        assert page.evaluate("document.activeElement.dataset.eventId") == "e-05"
        assert problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_an_audit_history_that_cannot_be_read_says_so_and_the_page_works(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    # A folder that does not exist: the database cannot be opened.
    url = f"sqlite:///{tmp_path / 'missing' / 'audit.db'}"
    with alice_of_an_audited_service(browser, redis_url, url, written=False) as (page, problems):
        assert page.locator("#audit-list li").all_inner_texts() == [
            "The audit history cannot be read now: "
            "the audit database is unavailable: unable to open database file"
        ]
        assert page.is_hidden("#audit-more")
        # The rest of the user's page is there, and no alert over it.
        assert page.locator("#session-list .session-card").count() == 1
        assert page.inner_text("#problem") == ""
        assert page.inner_text("#status") == "Showing alice."
        # The browser logs the failed request (503), nothing else.
        assert [p for p in problems if "503" not in p] == []
