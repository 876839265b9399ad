"""The "Where you're signed in" page: headers, assets, the DOM contract."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sessionsvc import SessionManager, account
from tests.clients import Page, assert_page_headers

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _page(client: FlaskClient) -> Page:
    page = Page()
    page.feed(client.get("/account/sessions").get_data(as_text=True))
    return page


def test_page_is_html_with_strict_headers(client: FlaskClient) -> None:
    assert_page_headers(client.get("/account/sessions"), CSP)


def test_page_loads_only_its_own_assets(client: FlaskClient) -> None:
    text = client.get("/account/sessions").get_data(as_text=True)
    page = _page(client)
    assert not re.search(r"https?://", text)
    assert page.inline_code() == []
    assert sorted(page.assets()) == [
        "/account/assets/account.css",
        "/account/assets/account.js",
        "/account/assets/shared/describe.js",
        "/account/assets/shared/dpop.js",
        "/account/assets/shared/tokens.js",
        "data:,",  # the empty icon: no /favicon.ico asked for
    ]


@pytest.mark.parametrize(
    ("path", "mimetypes"),
    [
        ("/account/assets/account.js", {"text/javascript", "application/javascript"}),
        ("/account/assets/shared/dpop.js", {"text/javascript", "application/javascript"}),
        ("/account/assets/shared/describe.js", {"text/javascript", "application/javascript"}),
        ("/account/assets/shared/tokens.js", {"text/javascript", "application/javascript"}),
        ("/account/assets/account.css", {"text/css"}),
    ],
)
def test_assets_are_served(client: FlaskClient, path: str, mimetypes: set[str]) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype in mimetypes
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", response.get_data(as_text=True))
    response.close()


def test_dom_contract(client: FlaskClient) -> None:
    page = _page(client)
    assert ("body", {"data-sessions-url": "/api/v1/sessions", "data-auth-url": "/api/v1/auth"}) in (
        page.tags
    )
    assert page.tags[0] == ("html", {"lang": "en"})
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in (
        page.tags
    )
    assert page.by_id("signin")[0] == "form"
    assert page.by_id("username") == (
        "input",
        {"id": "username", "name": "username", "autocomplete": "username"},
    )
    assert page.by_id("password") == (
        "input",
        {
            "id": "password",
            "name": "password",
            "type": "password",
            "autocomplete": "current-password",
        },
    )
    labels = {attrs.get("for") for tag, attrs in page.tags if tag == "label"}
    assert {"username", "password"} <= labels
    assert page.by_id("signin-error") == ("p", {"id": "signin-error", "role": "alert"})
    assert page.by_id("account") == ("main", {"id": "account", "hidden": None})
    assert page.by_id("session-list")[0] == "ul"
    # "Was this you?": the prompts come first, the list of sessions after them.
    assert page.by_id("review") == (
        "section",
        {"id": "review", "aria-label": "New sign-ins to check", "hidden": None},
    )
    assert page.by_id("review-list")[0] == "ul"
    assert page.by_id("review-self") == ("p", {"id": "review-self", "hidden": None})
    ids = [attrs.get("id") for _, attrs in page.tags]
    assert ids.index("review-list") < ids.index("session-list") < ids.index("password-form")
    assert page.by_id("signout-others") == ("button", {"id": "signout-others", "type": "button"})
    assert page.by_id("activity") == (
        "section",
        {"id": "activity", "aria-labelledby": "activity-heading"},
    )
    assert page.by_id("activity-heading") == ("h2", {"id": "activity-heading"})
    assert page.by_id("activity-list")[0] == "ol"
    assert page.by_id("status") == (
        "p",
        {"id": "status", "role": "status", "aria-live": "polite"},
    )


def _script(client: FlaskClient, name: str) -> str:
    response = client.get(f"/account/assets/{name}")
    script = response.get_data(as_text=True)
    response.close()
    return script


def test_script_builds_the_cards(client: FlaskClient) -> None:
    script = _script(client, "account.js")
    for name in (
        "session-card", "device-label", "badges", "badge-current", "badge-confirmed", "risk",
        "rename", "signout", "event", "review-prompt", "question", "confirm", "deny",
    ):  # fmt: skip
        assert f'class: "{name}"' in script, name
    for key in (
        "You were signed out.", '"/confirm"', '"/deny"', "Yes, it was me", "No, secure my account",
    ):  # fmt: skip
        assert key in script, key
    # The sign-in both pages share: the tokens' keys, the refresh of an expired one.
    tokens = _script(client, "shared/tokens.js")
    for key in ("sessionsvc.access", "sessionsvc.refresh", "token_expired", '"/refresh"'):
        assert key in tokens, key


@pytest.mark.parametrize(
    "name", ["account.js", "shared/describe.js", "shared/dpop.js", "shared/tokens.js"]
)
def test_each_script_stays_small(client: FlaskClient, name: str) -> None:
    assert len(_script(client, name).splitlines()) < 300


def test_host_app_mounts_the_page() -> None:
    app = Flask("host")
    app.config["JWT_SECRET_KEY"] = "k" * 32
    SessionManager(app, url_prefix="/me/sessions")
    app.register_blueprint(account.blueprint)
    response = app.test_client().get("/account/sessions")
    assert response.status_code == 200
    assert 'data-sessions-url="/me/sessions"' in response.get_data(as_text=True)
