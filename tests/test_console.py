"""The admin console (``GET /admin``): headers, assets, the DOM contract, mounting;
and the console in a real headless Chromium against the service under
gunicorn (the browser machinery is tests/browsers.py)."""

from __future__ import annotations

import re
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import SessionManager, console, create_app, pages
from tests.clients import JWT_KEY, Page, assert_page_headers

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
        "/admin/assets/console.css",
        "/admin/assets/shared/dpop.js",
        "/admin/assets/shared/tokens.js",
        "/admin/assets/shared/describe.js",
        "/admin/assets/console.js",
    ]
    for asset in assets:
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
    assert ("body", {**body, "data-user-store": "true"}) in page.tags
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


def test_the_script_stays_small(standalone: FlaskClient) -> None:
    response = standalone.get("/admin/assets/console.js")
    script = response.get_data(as_text=True)
    response.close()
    assert 100 < len(script.splitlines()) <= 400
    for key in ('"/sessions"', '"/events?limit=20"', "next_cursor", "disabled", "roles"):
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
        },
    ) in page.tags
    assert "User id" in client.get("/admin").get_data(as_text=True)
