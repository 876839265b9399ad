"""Attacks on the admin console (``GET /admin``): hostile user ids, session
names and user agents shown as text; ids the admin API's URLs cannot carry;
signing out leaves nothing behind; the assets' paths; a host that mounts the
app below a path of its own; a proof naming a path with escapes the
service would not have written (as encodeURIComponent writes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import requests
from flask import Blueprint, Flask
from flask.testing import FlaskClient

from sessionsvc import DPoPKey, SessionManager, account, console, create_app
from tests.backends import Backend
from tests.browsers import PASSWORD, no_sideways_scroll, open_console, serve, watch_console
from tests.clients import CHROME, JWT_KEY, Page
from tests.test_binding import BASE, with_proof
from tests.test_binding_modes import host_login
from tests.test_dpop_attacks import percent_app

ADMIN = "root"
HTML_ID = '"><img src=x onerror="window.pwned=1">'
#: An id with the characters a URL's path may carry as they are (RFC 3986
#: sub-delims, ':' and '@') as well as escaped: each must reach this user.
DELIMS = "a=b&c+d,e;f:g@h$i"
SLASHED = "victim/sessions"
OTHER_ADMIN = "ops"
LONG = "x" * 120 + "@example.org"
USERS = (
    ADMIN,
    OTHER_ADMIN,
    LONG,
    HTML_ID,
    "javascript:window.pwned=2",
    DELIMS,
    "victim",
    SLASHED,
    "ro\u043e t",
)
HTML_NAME = '<b>phone</b><img src=x onerror="window.pwned=3">'


@pytest.fixture
def hostile_service(redis_url: str) -> Iterator[str]:
    with serve(redis_url, USERS, roles={ADMIN: ("admin",), OTHER_ADMIN: ("admin",)}) as base:
        yield base


def login(base: str, user: str, agent: str = "curl/8") -> dict[str, Any]:
    """Sign ``user`` in as a script would (Bearer): the token pair."""
    answer = requests.post(
        f"{base}/api/v1/auth/login",
        json={"username": user, "password": PASSWORD},
        headers={"User-Agent": agent},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def open_row(page: Any, user: str) -> None:
    page.locator("#user-list").get_by_role("button", name=user, exact=True).click()


@pytest.mark.browser
def test_hostile_ids_names_and_agents_are_text_and_reach_their_own_user(
    browser: Any, hostile_service: str
) -> None:
    base = hostile_service
    # The HTML user's one session: a hostile user agent, renamed to HTML.
    tokens = login(base, HTML_ID, agent='<img src=x onerror="window.pwned=4">')
    listed = requests.get(f"{base}/api/v1/sessions", headers=bearer(tokens), timeout=10)
    [session] = listed.json()["sessions"]
    renamed = requests.patch(
        f"{base}/api/v1/sessions/{session['id']}",
        json={"name": HTML_NAME},
        headers=bearer(tokens),
        timeout=10,
    )
    assert renamed.status_code == 200, renamed.text
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        open_console(page, base, ADMIN)
        page.wait_for_selector("#user-list .user-row")
        assert sorted(page.locator("#user-list button.user").all_text_contents()) == sorted(USERS)
        assert page.locator("#user-list img").count() == 0
        for user in (HTML_ID, "javascript:window.pwned=2", DELIMS, "ro\u043e t"):
            open_row(page, user)
            page.locator("#status", has_text=f"Showing {user}.").wait_for()
            assert page.text_content("#user-heading") == user
            assert page.text_content("#delete-name") == user
            assert page.inner_text("#problem") == ""
        open_row(page, HTML_ID)
        page.locator("#status", has_text=f"Showing {HTML_ID}.").wait_for()
        card = page.locator("#session-list .session-card")
        assert card.locator(".device-label").text_content() == HTML_NAME
        assert page.locator("#user img, #user b").count() == 0
        assert page.evaluate("window.pwned") is None
        assert page.is_visible("#console")
        assert problems == []
    finally:
        context.close()


@pytest.mark.browser
def test_an_id_the_admin_api_cannot_address_fails_cleanly_and_touches_no_one(
    browser: Any, hostile_service: str
) -> None:
    base = hostile_service
    victim = login(base, "victim")
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        calls: list[str] = []
        page.on("request", lambda r: calls.append(r.url) if "/admin/users/" in r.url else None)
        open_console(page, base, ADMIN)
        page.wait_for_selector("#user-list .user-row")
        open_row(page, SLASHED)
        said = f"The user id {SLASHED} cannot be reached through the admin API's URLs."
        page.locator("#problem", has_text=said).wait_for()
        # No request went out: the server would read the slash as a route's.
        assert calls == []
        assert page.is_visible("#console") and page.is_hidden("#user")
        # The admin is still signed in, and the victim's session still works.
        open_row(page, "victim")
        page.locator("#status", has_text="Showing victim.").wait_for()
        assert page.locator("#session-list .session-card").count() == 1
        check = requests.get(f"{base}/api/v1/sessions", headers=bearer(victim), timeout=10)
        assert check.status_code == 200
        assert problems == []
    finally:
        context.close()


def left_behind(page: Any, text: str) -> list[str]:
    """The elements of the page, shown or hidden, whose own text or value holds ``text``."""
    found: list[str] = page.evaluate(
        """text => [...document.querySelectorAll('body *')].filter(e =>
            [...e.childNodes].some(n => n.nodeType === 3 && n.data.includes(text))
            || (e.value || '').includes(text)).map(e => e.id || e.tagName)""",
        text,
    )
    return found


@pytest.mark.browser
def test_a_demoted_admin_is_signed_out_with_nothing_left_and_self_delete_signs_out(
    browser: Any, hostile_service: str
) -> None:
    base = hostile_service
    victim = login(base, "victim")
    ops = bearer(login(base, OTHER_ADMIN))
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        open_console(page, base, ADMIN)
        page.wait_for_selector("#user-list .user-row")
        page.fill("#query", "vict")
        page.press("#query", "Enter")
        page.wait_for_selector("#results:not([aria-busy])")
        open_row(page, "victim")
        page.locator("#status", has_text="Showing victim.").wait_for()
        # The other admin takes root's role away: root's sessions are revoked.
        demoted = requests.patch(
            f"{base}/api/v1/admin/users/{ADMIN}", json={"roles": []}, headers=ops, timeout=10
        )
        assert demoted.status_code == 200, demoted.text
        page.click("#revoke-all")
        page.wait_for_selector("#signin", state="visible")
        assert page.inner_text("#signin-error") == "You were signed out."
        assert page.inner_text("#status") == page.inner_text("#problem") == ""
        assert left_behind(page, "victim") == []
        assert page.evaluate("sessionStorage.getItem('sessionsvc.access')") is None
        check = requests.get(f"{base}/api/v1/sessions", headers=bearer(victim), timeout=10)
        assert check.status_code == 200

        # Made admin again, root signs in and deletes their own account.
        promoted = requests.patch(
            f"{base}/api/v1/admin/users/{ADMIN}",
            json={"roles": ["admin"]},
            headers=ops,
            timeout=10,
        )
        assert promoted.status_code == 200, promoted.text
        page.fill("#username", ADMIN)
        page.fill("#password", PASSWORD)
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#console", state="visible")
        open_row(page, ADMIN)
        page.locator("#status", has_text=f"Showing {ADMIN}.").wait_for()
        deletes: list[str] = []
        page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
        # Near misses: case, spaces, a Cyrillic o; none enables the button or deletes.
        for near in ("Root", " root", "root ", "r\u043eot", "root\u200b"):
            page.fill("#delete-confirm", near)
            assert page.is_disabled("#delete"), near
            page.press("#delete-confirm", "Enter")
        assert deletes == []
        page.fill("#delete-confirm", ADMIN)
        with page.expect_response(f"{base}/api/v1/admin/users/{ADMIN}") as deleted:
            page.press("#delete-confirm", "Enter")
        assert deleted.value.status == 204
        page.wait_for_selector("#signin", state="visible")
        assert page.evaluate("sessionStorage.getItem('sessionsvc.access')") is None
        assert page.inner_text("#status") == page.inner_text("#problem") == ""
        assert left_behind(page, "victim") == []
        assert [p for p in problems if "401" not in p] == []
    finally:
        context.close()


@pytest.mark.browser
def test_an_answer_for_the_user_opened_before_does_not_land_on_the_one_opened_after(
    browser: Any, hostile_service: str
) -> None:
    base = hostile_service
    login(base, "victim")
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        open_console(page, base, ADMIN)
        page.wait_for_selector("#user-list .user-row")
        # The ops record's answer is held back until victim is on screen.
        held: list[Any] = []
        page.route(f"{base}/api/v1/admin/users/{OTHER_ADMIN}", lambda route: held.append(route))
        open_row(page, OTHER_ADMIN)
        page.wait_for_function("document.getElementById('user').hidden")
        assert len(held) == 1
        open_row(page, "victim")
        page.locator("#status", has_text="Showing victim.").wait_for()
        with page.expect_response(f"{base}/api/v1/admin/users/{OTHER_ADMIN}"):
            held[0].continue_()
        # Let whatever the late answer starts finish: one more round trip.
        page.click("#revoke-all")
        page.locator("#status", has_text="Signed victim out of 1 session.").wait_for()
        assert page.text_content("#user-heading") == "victim"
        assert page.text_content("#toggle-disabled") == "Disable victim"
        assert page.input_value("#roles") == ""
        assert page.text_content("#delete-name") == "victim"
        assert problems == []
    finally:
        context.close()


@pytest.mark.browser
def test_a_late_answer_to_an_older_search_does_not_replace_the_newer(
    browser: Any, hostile_service: str
) -> None:
    context = browser.new_context(user_agent=CHROME)
    try:
        page = context.new_page()
        problems = watch_console(page)
        open_console(page, hostile_service, ADMIN)
        page.wait_for_selector("#user-list .user-row")
        held: list[Any] = []
        page.route(lambda url: "prefix=vic" in url, lambda route: held.append(route))
        page.fill("#query", "vic")
        page.press("#query", "Enter")
        page.wait_for_function("document.getElementById('results').ariaBusy === 'true'")
        assert len(held) == 1
        page.fill("#query", "ro")
        page.press("#query", "Enter")
        page.locator("#status", has_text="2 users found.").wait_for()
        newer = page.locator("#user-list button.user").all_text_contents()
        assert sorted(newer) == [ADMIN, "ro\u043e t"]
        with page.expect_response(lambda r: "prefix=vic" in r.url):
            held[0].continue_()
        # One more round trip, by which the late answer has been dealt with.
        open_row(page, ADMIN)
        page.locator("#status", has_text=f"Showing {ADMIN}.").wait_for()
        assert page.locator("#user-list button.user").all_text_contents() == newer
        assert page.get_attribute("#results", "aria-busy") is None
        assert problems == []
    finally:
        context.close()


@pytest.mark.browser
def test_a_long_id_on_a_phone_does_not_scroll_sideways(browser: Any, hostile_service: str) -> None:
    context = browser.new_context(
        user_agent=CHROME, viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        problems = watch_console(page)
        open_console(page, hostile_service, ADMIN)
        page.wait_for_selector("#user-list .user-row")
        assert no_sideways_scroll(page)
        open_row(page, LONG)
        page.locator("#user-heading", has_text=LONG).wait_for()
        assert no_sideways_scroll(page)
        assert problems == []
    finally:
        context.close()


# Without a browser: the assets' paths and hosts that mount the pages.


@pytest.fixture(scope="module")
def standalone() -> FlaskClient:
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return create_app({"TESTING": True, "JWT_SECRET_KEY": JWT_KEY}, redis_client=fake).test_client()


def page_at(client: FlaskClient, path: str, **options: Any) -> Page:
    page = Page()
    page.feed(client.get(path, **options).get_data(as_text=True))
    return page


@pytest.mark.parametrize(
    "path",
    [
        "/admin/assets/shared/../console.js",
        "/admin/assets/shared/%2e%2e/console.js",
        "/admin/assets/shared/..%2fconsole.js",
        "/admin/assets/shared/%2e%2e%2f%2e%2e%2fconsole.py",
        "/admin/assets/..%2f..%2fconsole.py",
        "/admin/assets/shared/..%5c..%5cpages.py",
        "/account/assets/shared/..%2f..%2f..%2fpages.py",
        "/account/assets/..%2fconsole%2fconsole.js",
        "/admin/assets/shared/%2fetc%2fpasswd",
        "/admin/assets/shared//etc/passwd",
    ],
)
def test_the_assets_paths_serve_nothing_outside_their_folders(
    standalone: FlaskClient, path: str
) -> None:
    response = standalone.get(path)
    assert response.status_code == 404, path
    response.close()


def test_below_a_script_root_the_pages_call_the_api_below_it_too(
    standalone: FlaskClient,
) -> None:
    # A host that serves the app below /svc (a WSGI dispatcher or proxy sets
    # SCRIPT_NAME): the pages' API calls must stay below /svc as well.
    console_page = page_at(standalone, "/admin", base_url="http://localhost/svc")
    [(_, body)] = [(tag, attrs) for tag, attrs in console_page.tags if tag == "body"]
    assert body["data-admin-url"] == "/svc/api/v1/admin"
    assert body["data-auth-url"] == "/svc/api/v1/auth"
    assert console_page.assets()[:2] == ["data:,", "/svc/admin/assets/console.css"]
    account_page = page_at(standalone, "/account/sessions", base_url="http://localhost/svc")
    [(_, body)] = [(tag, attrs) for tag, attrs in account_page.tags if tag == "body"]
    assert body["data-sessions-url"] == "/svc/api/v1/sessions"
    assert body["data-auth-url"] == "/svc/api/v1/auth"


def test_a_host_with_both_pages_a_prefix_and_a_blueprint_named_shared() -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWT_SECRET_KEY=JWT_KEY)
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    SessionManager(app, redis_client=fake, admin_routes=True, auth_routes=True)
    own = Blueprint("shared", __name__)
    own.add_url_rule("/shared/<name>", "mine", lambda name: f"host's {name}")
    app.register_blueprint(own)
    app.register_blueprint(console.blueprint, url_prefix="/ops")
    app.register_blueprint(account.blueprint)
    client = app.test_client()
    assert client.get("/shared/dpop.js").get_data(as_text=True) == "host's dpop.js"
    for path, pages_assets in (("/ops/admin", 5), ("/account/sessions", None)):
        page = page_at(client, path)
        assets = [asset for asset in page.assets() if asset != "data:,"]  # the empty icon
        assert pages_assets is None or len(assets) == pages_assets
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.get_data() != b""
            response.close()
    ours = client.get("/ops/admin/assets/shared/dpop.js")
    theirs = client.get("/account/assets/shared/dpop.js")
    assert ours.get_data() == theirs.get_data()
    ours.close()
    theirs.close()


def test_a_proof_naming_the_path_exactly_as_sent_with_an_escaped_sub_delim(
    backend: Backend, key: DPoPKey
) -> None:
    app = percent_app(backend)
    token = host_login(app, key).get_json()["access_token"]
    sent = "/files/a%3Db"
    answer = app.test_client().get(
        sent, headers=with_proof(key.proof("GET", BASE + sent, access_token=token), token)
    )
    assert (answer.status_code, answer.get_json()) == (200, "a=b")
