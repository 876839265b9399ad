"""What the tests send to the service: user agents, the signing key, users and
logins (``Auth``), one HTTP request over the wire, and the check of the
problem documents of docs/api.md (section 7); and what the HTML pages are
made of (``Page``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from email.message import Message
from html.parser import HTMLParser
from typing import Any

from argon2 import PasswordHasher
from flask import Flask

from sessionsvc import current_manager
from sessionsvc.models import User

#: A cheap argon2id keeps the suite fast (the service hashes with
#: sessionsvc.passwords.HASHER); an argon2 hash is verified as it is, never
#: upgraded, so logins stay cheap.
_FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def fast_hash(password: str) -> str:
    """A stored password for a test user, cheap to check."""
    return _FAST.hash(password)


JWT_KEY = "test-secret-key-that-is-long-enough-for-hs256"

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
#: The same browser and OS as CHROME, one version later: not another device.
CHROME_121 = CHROME.replace("Chrome/120.0.0.0", "Chrome/121.0.0.0")
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


class Auth:
    """Users and logins for tests: ``auth.login("alice")`` returns the token pair."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()

    def create_user(
        self, username: str = "alice", password: str = "pw", *, admin: bool = False
    ) -> None:
        user = User(
            id=username,
            password_hash=fast_hash(password),
            roles=("admin",) if admin else (),
        )
        with self.app.app_context():
            current_manager().store.create_user(user)

    def login(
        self,
        username: str = "alice",
        password: str = "pw",
        *,
        user_agent: str | None = CHROME,
        ip: str = "127.0.0.1",
        create: bool = True,
    ) -> dict[str, Any]:
        if create:
            with self.app.app_context():
                exists = current_manager().store.get_user(username) is not None
            if not exists:
                self.create_user(username, password)
        headers = {"User-Agent": user_agent} if user_agent is not None else {}
        response = self.client.post(
            "/api/v1/auth/login",
            json={"username": username, "password": password},
            headers=headers,
            environ_base={"REMOTE_ADDR": ip},
        )
        assert response.status_code == 200, response.get_json()
        tokens: dict[str, Any] = response.get_json()
        _AGENTS[tokens["access_token"]] = _AGENTS[tokens["refresh_token"]] = user_agent
        return tokens

    @staticmethod
    def headers(token: str | dict[str, Any], kind: str = "access_token") -> dict[str, str]:
        """The headers of the device that signed in: the token, and the same
        ``User-Agent`` (another browser would be an anomaly)."""
        value = token[kind] if isinstance(token, dict) else token
        headers = {"Authorization": f"Bearer {value}"}
        user_agent = _AGENTS.get(value, CHROME)
        if user_agent is not None:
            headers["User-Agent"] = user_agent
        return headers


#: The user agent each token was signed in with (tokens of later refreshes:
#: CHROME, the default).
_AGENTS: dict[str, str | None] = {}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the problem document (docs/api.md, section 7) with this status and code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    return body


def assert_jwt_answer(response: Any, status: int, msg: str) -> None:
    """The response is flask-jwt-extended's own answer (its default callbacks):
    what a host app's route gives when the host registered no callback."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json() == {"msg": msg}


def http(
    method: str, url: str, *, token: str | None = None, body: dict[str, Any] | None = None,
    user_agent: str | None = None,
) -> tuple[int, Any]:  # fmt: skip
    """One HTTP request over a new connection; returns (status, parsed JSON or None)."""
    status, _, parsed = exchange(method, url, token=token, body=body, user_agent=user_agent)
    return status, parsed


def exchange(
    method: str, url: str, *, token: str | None = None, body: dict[str, Any] | None = None,
    user_agent: str | None = None,
) -> tuple[int, Message, Any]:  # fmt: skip
    """:func:`http`, with the response's headers: (status, headers, parsed JSON or None)."""
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if user_agent:
        headers["User-Agent"] = user_agent
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, error.headers, json.loads(raw) if raw else None


def assert_page_headers(response: Any, csp: str) -> None:
    """An HTML page of ours: 200, its CSP, no framing, sniffing, referrer or caching."""
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


class Page(HTMLParser):
    """Every start tag with its attributes, and the text inside <script>/<style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(data)

    def inline_code(self) -> list[str]:
        """What the page would run or style inline, which its CSP forbids:
        <script>/<style> text, <style> tags, ``style`` and ``on*`` attributes."""
        found = [*self.inline, *(f"<{tag}>" for tag, _ in self.tags if tag == "style")]
        for tag, attrs in self.tags:
            found += [
                f"<{tag} {name}>" for name in attrs if name == "style" or name.startswith("on")
            ]
        return found

    def assets(self) -> list[str]:
        """The scripts and stylesheets it loads, in order."""
        return [
            str(attrs.get("src") or attrs.get("href"))
            for tag, attrs in self.tags
            if tag in ("script", "link")
        ]

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]]:
        found = [(tag, attrs) for tag, attrs in self.tags if attrs.get("id") == element_id]
        assert len(found) == 1, f"#{element_id}: {found}"
        return found[0]
