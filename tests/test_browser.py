"""The "Where you're signed in" page in a real headless Chromium (Playwright).

The service runs under gunicorn on loopback against the real Redis, as in
production. Two browser contexts with different user agents stand for a
laptop and a phone. The README's screenshots are taken by these tests: into
a temporary folder on every run, and into docs/screenshots/ only when
``$SESSIONSVC_TEST_SCREENSHOTS`` names that folder (``make screenshots``).
(tests/browsers.py holds the machinery: Chromium, the service, sign-in.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from sessionsvc import dpop
from sessionsvc.dpop_client import DPoPKey
from tests.browsers import (
    PASSWORD,
    assert_png,
    cards,
    no_sideways_scroll,
    prompts,
    reload,
    serve,
    sign_in,
    watch_console,
)
from tests.clients import CHROME, FIREFOX_LINUX, IPHONE
from tests.geodata import BERLIN_IP, FRANCE_IP, SYDNEY_IP

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def boxes(locator: Any) -> list[dict[str, float]]:
    """Where each element a locator matches is drawn on the page."""
    return [locator.nth(i).bounding_box() for i in range(locator.count())]


def rename(page: Any, session_id: str, name: str) -> None:
    """Rename a device from its card; wait for the new name to show."""
    row = page.locator(f'.session-card[data-session-id="{session_id}"]')
    row.locator("button.rename").click()
    row.locator(".rename-form input[name=name]").fill(name)
    row.locator(".rename-form button[type=submit]").click()
    # (The page's CSP forbids evaluating strings: wait with selectors.)
    page.wait_for_selector(f".session-card .device-label:text-is('{name}')")


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
        # The phone's flags sit on one line, and each card names its device once.
        phone_row = on_laptop.locator(f'.session-card[data-session-id="{phone_card["id"]}"]')
        badges = boxes(phone_row.locator(".badges > span"))
        assert len(badges) == 3 and len({round(box["y"]) for box in badges}) == 1, badges
        assert on_laptop.locator(".session-card .device-detail").count() == 0
        # Recent security activity, newest first: the phone's sign-in from
        # too far, and both sign-ins.
        activity = on_laptop.locator("#activity-list .event .what").all_inner_texts()
        # The trip said as a person would: the distance, and the time it took.
        assert activity[0] == "Impossible travel: Berlin, DE to Sydney, AU, 16,095 km in 1 second"
        assert activity[1:] == [
            "New sign-in (New device, New country, Impossible travel)",
            "New sign-in",
        ]

        for page, name in ((on_laptop, "account-desktop.png"), (on_phone, "account-phone.png")):
            page.screenshot(path=str(screenshots / name), full_page=True)
            assert_png(screenshots / name)
        # A phone-sized viewport does not scroll sideways.
        assert no_sideways_scroll(on_phone)

        # The laptop signs the phone out...
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
        rename(page, card["id"], "Work laptop")
        # Under a name of the user's own, the card still says what the device is.
        assert page.inner_text(".session-card .device-detail") == "Chrome 120 on Windows 10"
        # Signing out this device brings the sign-in form back.
        page.locator(f'.session-card[data-session-id="{card["id"]}"] button.signout').click()
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
            with page.expect_request(f"{base}/api/v1/auth/refresh") as refreshed:
                rename(page, card["id"], "Still here")
            # The bound refresh token went with a proof of this key; the new
            # pair is bound as the first was.
            assert refreshed.value.headers["authorization"] == f"DPoP {first_refresh}"
            _, claims = proof_of(refreshed.value)
            assert claims["htu"] == f"{base}/api/v1/auth/refresh"
            assert claims["ath"] == b64url(hashlib.sha256(first_refresh.encode("ascii")).digest())
            assert page.evaluate("sessionStorage.getItem('sessionsvc.token_type')") == "DPoP"
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


# DPoP (RFC 9449): the page binds its tokens to a key of its own.


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jws_json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def proof_of(request: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of the DPoP proof a request of the page carried."""
    header, claims, signature = request.headers["dpop"].split(".")
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64  # ES256: r || s
    return jws_json(header), jws_json(claims)


def sign_in_bound(page: Any, base: str) -> Any:
    """Sign in as ``sign_in`` does; the sign-in request the page made."""
    with page.expect_response(f"{base}/api/v1/auth/login") as login:
        sign_in(page, base)
    return login.value


KEPT_KEY = """async () => {
    const db = await new Promise((resolve, reject) => {
        const opened = indexedDB.open("sessionsvc-dpop");
        opened.onsuccess = () => resolve(opened.result);
        opened.onerror = () => reject(opened.error);
    });
    const pair = await new Promise((resolve, reject) => {
        const read = db.transaction("keys").objectStore("keys").get("account-page");
        read.onsuccess = () => resolve(read.result);
        read.onerror = () => reject(read.error);
    });
    db.close();
    const exported = await crypto.subtle.exportKey("jwk", pair.privateKey).then(
        () => "exported", (error) => error.name);
    const pub = await crypto.subtle.exportKey("jwk", pair.publicKey);
    return {
        extractable: pair.privateKey.extractable,
        usages: pair.privateKey.usages,
        curve: pair.privateKey.algorithm.namedCurve,
        exported: exported,
        public: {kty: pub.kty, crv: pub.crv, x: pub.x, y: pub.y},
    };
}"""


def test_the_page_binds_its_tokens_to_a_key_it_cannot_export(browser: Any, service: str) -> None:
    laptop = browser.new_context(user_agent=CHROME)
    phone = browser.new_context(user_agent=IPHONE)
    try:
        on_laptop, on_phone = laptop.new_page(), phone.new_page()
        problems = {"laptop": watch_console(on_laptop), "phone": watch_console(on_phone)}
        started = int(time.time())
        login = sign_in_bound(on_laptop, service)
        assert login.json()["token_type"] == "DPoP"
        header, claims = proof_of(login.request)
        assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
        assert sorted(header) == ["alg", "jwk", "typ"]
        assert sorted(header["jwk"]) == ["crv", "kty", "x", "y"]  # no private member
        assert (header["jwk"]["kty"], header["jwk"]["crv"]) == ("EC", "P-256")
        assert claims["htm"] == "POST" and claims["htu"] == f"{service}/api/v1/auth/login"
        assert "ath" not in claims and len(claims["jti"]) >= 16
        assert started - 1 <= claims["iat"] <= time.time() + 1
        assert "authorization" not in login.request.headers

        # The key is in IndexedDB, usable and not extractable: only its
        # public half is ever seen, in the proofs.
        kept = on_laptop.evaluate(KEPT_KEY)
        assert kept == {
            "extractable": False,
            "usages": ["sign"],
            "curve": "P-256",
            "exported": "InvalidAccessError",
            "public": header["jwk"],
        }
        sign_in_bound(on_phone, service)

        # Every call of the page presents its access token with a fresh proof
        # of this request; both sessions are bound.
        with (
            on_laptop.expect_response(f"{service}/api/v1/sessions") as listed,
            on_laptop.expect_request(f"{service}/api/v1/sessions/events?limit=20") as events,
        ):
            on_laptop.reload()
            on_laptop.wait_for_selector("#account", state="visible")
        access = on_laptop.evaluate("sessionStorage.getItem('sessionsvc.access')")
        assert on_laptop.evaluate("sessionStorage.getItem('sessionsvc.token_type')") == "DPoP"
        ath = b64url(hashlib.sha256(access.encode("ascii")).digest())
        for request, url in ((listed.value.request, "sessions"), (events.value, "sessions/events")):
            assert request.headers["authorization"] == f"DPoP {access}"
            header, claims = proof_of(request)
            assert header["jwk"] == kept["public"]
            assert claims["htm"] == "GET" and claims["htu"] == f"{service}/api/v1/{url}"
            assert claims["ath"] == ath
            # The service's own verifier takes it, for this request and token.
            checked = dpop.verify(
                request.headers["dpop"],
                method="GET",
                url=request.url,
                now=time.time(),
                max_age=60,
                access_token=access,
            )
            assert checked.jkt == dpop.thumbprint(kept["public"])
        assert proof_of(events.value)[1]["jti"] != proof_of(listed.value.request)[1]["jti"]
        sessions = listed.value.json()["sessions"]
        assert len(sessions) == 2
        assert [s["dpop_bound"] for s in sessions] == [True, True]
        [phone_session] = [s for s in sessions if not s["current"]]

        # Renaming and signing out the other device work with bound tokens.
        rename(on_laptop, phone_session["id"], "My phone")
        assert problems["phone"] == []
        phone_row = on_laptop.locator(f'.session-card[data-session-id="{phone_session["id"]}"]')
        phone_row.locator("button.signout").click()
        phone_row.wait_for(state="detached")
        assert len(cards(on_laptop)) == 1
        # (The phone's refused call is a 401 on its console.)
        on_phone.click("#signout-others")
        on_phone.wait_for_selector("#signin", state="visible")
        assert on_phone.evaluate("sessionStorage.length") == 0

        # This device signs out with a proof too; nothing went to the console.
        with on_laptop.expect_request(f"{service}/api/v1/auth/logout") as logout:
            on_laptop.locator(".session-card button.signout").click()
            on_laptop.wait_for_selector("#signin", state="visible")
        assert proof_of(logout.value)[1]["htm"] == "POST"
        assert problems["laptop"] == []
    finally:
        laptop.close()
        phone.close()


def test_tokens_copied_out_of_the_page_are_refused_without_its_key(
    browser: Any, redis_url: str
) -> None:
    """The page's tokens, read out of its storage as a script injected into
    the page could, are worthless elsewhere: as Bearer, as DPoP without a
    proof, or with a proof by another key. The refusals end nothing and use
    nothing up: the page carries on, and its refresh token still works."""
    with serve(redis_url, JWT_ACCESS_TOKEN_EXPIRES="5") as base:
        context = browser.new_context(user_agent=CHROME)
        try:
            page = context.new_page()
            problems = watch_console(page)
            sign_in(page, base)
            signed_in = time.monotonic()
            [card] = cards(page)
            access, refresh = page.evaluate(
                "[sessionStorage.getItem('sessionsvc.access'), "
                "sessionStorage.getItem('sessionsvc.refresh')]"
            )
            other = DPoPKey.generate()  # another device's key
            for method, url, token in (
                ("GET", f"{base}/api/v1/sessions", access),
                ("POST", f"{base}/api/v1/auth/refresh", refresh),
            ):
                tries = {
                    "Bearer": {"Authorization": f"Bearer {token}"},
                    "DPoP without a proof": {"Authorization": f"DPoP {token}"},
                    "another key's proof": other.headers(method, url, token),
                }
                for name, headers in tries.items():
                    answer = requests.request(method, url, headers=headers, timeout=10)
                    assert answer.status_code == 401, (name, url, answer.text)
                    assert answer.json()["code"] == "invalid_dpop_proof", (name, url)
                    assert answer.headers["WWW-Authenticate"] == (
                        'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"'
                    )
            assert time.monotonic() - signed_in < 5, "too slow: the access token expired"

            # The session carries on, and says once that its token was used
            # without its key.
            page.reload()
            page.wait_for_selector("#account", state="visible")
            assert [c["id"] for c in cards(page)] == [card["id"]]
            activity = page.locator("#activity-list .event .what").all_inner_texts()
            mismatch = "Unusual activity: this session's token was used without this device's key"
            assert activity.count(mismatch) == 1, activity
            # The refresh token was not used up: once the access token has
            # expired, the page's own refresh rotates it.
            page.wait_for_timeout(max(0.0, 6 - (time.monotonic() - signed_in)) * 1000)
            with page.expect_response(f"{base}/api/v1/auth/refresh") as refreshed:
                rename(page, card["id"], "Mine")
            assert refreshed.value.status == 200
            assert page.evaluate("sessionStorage.getItem('sessionsvc.refresh')") != refresh
            # (The one 401 is the expired access token, before the refresh.)
            assert [p for p in problems if "401" not in p] == []
        finally:
            context.close()


NO_INDEXEDDB = "Object.defineProperty(window, 'indexedDB', {value: undefined, configurable: true})"


@pytest.mark.parametrize("why", ["the server does not bind", "no IndexedDB"])
def test_the_page_signs_in_with_bearer_tokens_when_it_cannot_bind(
    browser: Any, redis_url: str, why: str
) -> None:
    settings = {"SESSIONSVC_DPOP": "off"} if why == "the server does not bind" else {}
    with serve(redis_url, **settings) as base:
        context = browser.new_context(user_agent=CHROME)
        if why == "no IndexedDB":
            context.add_init_script(NO_INDEXEDDB)
        try:
            page = context.new_page()
            problems = watch_console(page)
            login = sign_in_bound(page, base)
            assert login.json()["token_type"] == "Bearer"
            # A proof is offered only when the page has a key to keep.
            assert ("dpop" in login.request.headers) is (why == "the server does not bind")
            with page.expect_response(f"{base}/api/v1/sessions") as listed:
                page.reload()
                page.wait_for_selector("#account", state="visible")
            access = page.evaluate("sessionStorage.getItem('sessionsvc.access')")
            assert listed.value.request.headers["authorization"] == f"Bearer {access}"
            assert "dpop" not in listed.value.request.headers
            [session] = listed.value.json()["sessions"]
            assert session["dpop_bound"] is False
            row = page.locator(f'.session-card[data-session-id="{session["id"]}"]')
            row.locator("button.signout").click()
            page.wait_for_selector("#signin", state="visible")
            assert problems == []
        finally:
            context.close()


def responses_from(page: Any, url: str) -> list[Any]:
    """The page's responses from ``url``, in order, as they come."""
    seen: list[Any] = []

    def heard(response: Any) -> None:
        if response.url == url:
            seen.append(response)

    page.on("response", heard)
    return seen


SLOW_CLOCK = "(() => { const now = Date.now; Date.now = () => now() - 120000; })()"


def test_a_page_whose_clock_is_slow_signs_in_bound_on_the_servers_time(
    browser: Any, service: str
) -> None:
    """Proofs dated by a clock two minutes slow are stale: the page takes the
    time from the refusal's Date header, and signs in bound at once."""
    context = browser.new_context(user_agent=CHROME)
    context.add_init_script(SLOW_CLOCK)
    try:
        page = context.new_page()
        logins = responses_from(page, f"{service}/api/v1/auth/login")
        sessions = responses_from(page, f"{service}/api/v1/sessions")
        sign_in(page, service)
        assert [r.status for r in logins] == [400, 200]
        assert logins[0].json()["code"] == "invalid_dpop_proof"
        assert proof_of(logins[0].request)[1]["iat"] < time.time() - 100
        assert logins[1].json()["token_type"] == "DPoP"
        assert abs(proof_of(logins[1].request)[1]["iat"] - time.time()) <= 3
        # Later proofs are dated on the server's time too, after a reload as well.
        page.reload()
        page.wait_for_selector("#account", state="visible")
        assert [r.status for r in sessions] == [200, 200]
        assert sessions[1].json()["sessions"][0]["dpop_bound"] is True
        # A call refused for its date is tried once more on the server's time.
        page.evaluate("sessionStorage.removeItem('sessionsvc.clock_skew')")
        page.reload()
        page.wait_for_selector(".session-card")
        assert [r.status for r in sessions] == [200, 200, 401, 200]
        assert sessions[2].json()["code"] == "invalid_dpop_proof"
        assert page.is_hidden("#signin")
    finally:
        context.close()


def test_where_proofs_are_required_a_browser_without_a_key_is_told_why(
    browser: Any, redis_url: str
) -> None:
    with serve(redis_url, SESSIONSVC_DPOP="required") as base:
        keyless = browser.new_context(user_agent=CHROME)
        keyless.add_init_script(NO_INDEXEDDB)
        able = browser.new_context(user_agent=IPHONE)
        try:
            page = keyless.new_page()
            page.goto(f"{base}/account/sessions")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.click("#signin button[type=submit]")
            page.locator("#signin-error", has_text="DPoP proof is required").wait_for()
            assert page.is_hidden("#account")
            assert page.evaluate("sessionStorage.length") == 0
            # A browser that can keep a key signs in, bound.
            assert sign_in_bound(able.new_page(), base).json()["token_type"] == "DPoP"
        finally:
            keyless.close()
            able.close()


# "Was this you?": new sign-ins answered from a device the user already trusts.


IN_VIEW = """element => {
    const box = element.getBoundingClientRect();
    return box.top >= 0 && box.bottom <= window.innerHeight;
}"""


def test_a_laptop_confirms_one_new_device_and_throws_the_other_out(
    browser: Any, located_service: str
) -> None:
    """The laptop signed in first, in Berlin; then a Firefox on Linux signs in
    from France and a phone from Sydney, both flagged. The laptop is asked
    about both; the new devices are asked nothing, not even about each other.
    The laptop says the Firefox was its user (with the keyboard) and the phone
    was not: the phone is signed out, the laptop offers the password change."""
    service = located_service
    where = {"laptop": BERLIN_IP, "firefox": FRANCE_IP, "phone": SYDNEY_IP}
    contexts = {
        "laptop": browser.new_context(user_agent=CHROME, viewport={"width": 1280, "height": 900}),
        "firefox": browser.new_context(user_agent=FIREFOX_LINUX),
        "phone": browser.new_context(
            user_agent=IPHONE,
            viewport={"width": 375, "height": 812},
            is_mobile=True,
            has_touch=True,
        ),
    }
    try:
        pages, problems, ids = {}, {}, {}
        for name, context in contexts.items():
            context.set_extra_http_headers({"X-Forwarded-For": where[name]})
            pages[name] = page = context.new_page()
            problems[name] = watch_console(page)
            sign_in(page, service)
            [ids[name]] = [c["id"] for c in cards(page) if c["current"]]
        on_laptop, on_firefox, on_phone = pages["laptop"], pages["firefox"], pages["phone"]

        # A pending device cannot answer for itself nor for the other one: it
        # is told to confirm from a device it already uses.
        for page in (on_firefox, on_phone):
            reload(page)
            assert len(cards(page)) == 3
            assert prompts(page) == {}
            assert page.is_hidden("#review")
            assert page.is_visible("#review-self")
        # A phone-sized viewport still does not scroll sideways.
        assert no_sideways_scroll(on_phone)

        reload(on_laptop)
        buttons = ["Yes, it was me", "No, secure my account"]
        assert prompts(on_laptop) == {
            ids["phone"]: {
                "question": "New sign-in: Mobile Safari on iOS, Sydney, just now — was this you?",
                "buttons": buttons,
            },
            # France has no city in the database: the question names none.
            ids["firefox"]: {
                "question": "New sign-in: Firefox on Linux, just now — was this you?",
                "buttons": buttons,
            },
        }
        assert on_laptop.is_hidden("#review-self")
        # The prompts come first, above the list of sessions.
        [review] = boxes(on_laptop.locator("#review"))
        [listed] = boxes(on_laptop.locator("#session-list"))
        assert review["y"] + review["height"] <= listed["y"]

        # Yes, with the keyboard: Tab goes from one answer to the other, and
        # Enter answers.
        firefox_prompt = on_laptop.locator(f'.review-prompt[data-session-id="{ids["firefox"]}"]')
        with on_laptop.expect_response(
            f"{service}/api/v1/sessions/{ids['firefox']}/confirm"
        ) as confirmed:
            firefox_prompt.locator("button.confirm").focus()
            on_laptop.keyboard.press("Tab")
            assert on_laptop.evaluate("document.activeElement.textContent") == buttons[1]
            on_laptop.keyboard.press("Shift+Tab")
            on_laptop.keyboard.press("Enter")
        assert confirmed.value.status == 200
        assert confirmed.value.json()["review"] == "confirmed"
        firefox_prompt.wait_for(state="detached")
        on_laptop.locator("#status", has_text="Firefox on Linux is confirmed as yours.").wait_for()
        assert list(prompts(on_laptop)) == [ids["phone"]]
        # Its card says so; the flags stay, as the record of what was seen
        # (France has no coordinates in the database: no trip is measured).
        firefox_card = on_laptop.locator(f'.session-card[data-session-id="{ids["firefox"]}"]')
        assert firefox_card.locator(".badges > span").all_inner_texts() == [
            "Confirmed by you",
            "New device",
            "New country",
        ]
        # Focus stays on the page: on the device just confirmed.
        assert on_laptop.evaluate("document.activeElement.className") == "rename"

        # Confirmed, the Firefox may now answer for the phone too.
        reload(on_firefox)
        assert list(prompts(on_firefox)) == [ids["phone"]]
        assert on_firefox.is_hidden("#review-self")

        # No, from the laptop: the phone is signed out, and the laptop is
        # taken to the change-password form.
        with on_laptop.expect_response(f"{service}/api/v1/sessions/{ids['phone']}/deny") as denied:
            on_laptop.locator(
                f'.review-prompt[data-session-id="{ids["phone"]}"] button.deny'
            ).click()
        assert denied.value.status == 200 and denied.value.json() == {"revoked": 1}
        said = "Signed out 1 session you did not recognise."
        on_laptop.locator("#status", has_text=said).wait_for()
        on_laptop.wait_for_selector("#review", state="hidden")
        on_laptop.wait_for_selector("#current-password:focus")
        assert on_laptop.locator("#password-form").evaluate(IN_VIEW)
        assert sorted(c["id"] for c in cards(on_laptop)) == sorted([ids["laptop"], ids["firefox"]])
        activity = on_laptop.locator("#activity-list .event .what").all_inner_texts()
        assert activity[:2] == ["Signed out: you said it was not you", "Sign-in confirmed as yours"]

        # The phone's next action lands on the sign-in form.
        on_phone.click("#signout-others")
        on_phone.wait_for_selector("#signin", state="visible")
        assert "signed out" in on_phone.inner_text("#signin-error")
        assert on_phone.evaluate("sessionStorage.length") == 0
        # The Firefox carries on, with nothing left to answer.
        reload(on_firefox)
        assert len(cards(on_firefox)) == 2 and prompts(on_firefox) == {}

        # Nothing went to a console but the phone's one refused call.
        assert problems["laptop"] == problems["firefox"] == []
        assert [p for p in problems["phone"] if "401" not in p] == []
    finally:
        for context in contexts.values():
            context.close()


def test_the_page_says_how_long_a_trip_took(browser: Any, service: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{service}/account/sessions")
        page.wait_for_selector("#signin", state="visible")
        said = page.evaluate(
            "[0.2, 1, 59.4, 59.6, 90, 3569, 3600, 4500, 7260, 36000]"
            ".map(sessionsvcDescribe.duration)"
        )
        assert said == [
            "1 second",
            "1 second",
            "59 seconds",
            "1 minute",
            "2 minutes",
            "59 minutes",
            "1 hour",
            "1 hour 15 minutes",
            "2 hours 1 minute",
            "10 hours",
        ]
        trips = page.evaluate(
            "[[16095, 57940280], [880, 1760], [16095, 0]].map(([km, kmh]) =>"
            " sessionsvcDescribe.travel({distance_km: km, speed_kmh: kmh}))"
        )
        assert trips == ["16,095 km in 1 second", "880 km in 30 minutes", "16,095 km"]
    finally:
        context.close()
