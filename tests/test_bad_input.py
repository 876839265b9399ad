"""Bad input, one table: each request with the status and code docs/api.md gives.

Run against the standalone app over fakeredis. A row's credential is made
when the row needs it (:class:`World`); paths may name ``{sid}``, the
session of the caller's access token. After every refused request the
caller's sessions are exactly what they were: a bad request changes nothing.

Where docs/api.md names no status for an input (oversized headers, a deleted
user), the row says which rule of docs/api.md decides it.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from flask import Flask
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from sessionsvc import current_manager
from tests.clients import CHROME, JWT_KEY, Auth, assert_problem

SESSIONS = "/api/v1/sessions"
EVENTS = "/api/v1/sessions/events"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ADMIN = "/api/v1/admin/users"
KIB_64 = 64 * 1024
#: Another HMAC key, long enough that only the signature gives it away.
OTHER_KEY = "another-key-that-is-also-long-enough-for-hs256"


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON, padded with whitespace to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def login_body(username: str = "alice", password: str = "pw") -> bytes:
    return json.dumps({"username": username, "password": password}).encode()


class GoneStream(io.BytesIO):
    """A request body whose client disconnects part way: reads then fail."""

    def __init__(self, data: bytes, gone_after: int) -> None:
        super().__init__(data)
        self.gone_after = gone_after

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.gone_after:
            raise OSError("client disconnected")
        return super().read(size)


class World:
    """The app, its users, and the credentials rows ask for, made on first use."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.auth = Auth(app)
        self.auth.create_user("root", admin=True)
        #: The caller: alice, signed in once; ``{sid}`` in a path is this session.
        self.alice = self.auth.login("alice")
        self._made: dict[str, str] = {}

    def claims(self, token: str) -> dict[str, Any]:
        with self.app.app_context():
            decoded: dict[str, Any] = decode_token(token)
        return decoded

    def expired(self, token: str) -> str:
        """The same token, validly signed, but expired a minute ago."""
        now = int(time.time())
        return jwt.encode({**self.claims(token), "iat": now - 3600, "exp": now - 60}, JWT_KEY)

    def hs512(self, token: str) -> str:
        """The same claims signed with the app's own key, but HS512."""
        with warnings.catch_warnings():
            # PyJWT finds the 45-byte key short for HS512; only this token uses it so.
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            return jwt.encode(self.claims(token), JWT_KEY, "HS512")

    def revoked(self, username: str) -> dict[str, Any]:
        """A token pair whose session was signed out."""
        tokens = self.auth.login(username)
        with self.app.app_context():
            assert current_manager().revoke(username, tokens["session_id"], reason="user")
        return tokens

    def deleted(self, username: str, *, revoke: bool) -> dict[str, Any]:
        """A token pair of a user whose record is gone from the user store."""
        tokens = self.auth.login(username)
        with self.app.app_context():
            manager = current_manager()
            if revoke:
                manager.revoke_all(username, reason="admin")
            store = manager.store
            assert store.client.delete(store.user_key(username)) == 1
        return tokens

    def reused(self) -> str:
        """A refresh token already rotated by a refresh."""
        tokens = self.auth.login("erin")
        response = self.auth.client.post(REFRESH, headers=Auth.headers(tokens, "refresh_token"))
        assert response.status_code == 200
        return str(tokens["refresh_token"])

    def _make(self, name: str) -> str:
        access, refresh = self.alice["access_token"], self.alice["refresh_token"]
        with self.app.app_context():
            makers: dict[str, Callable[[], str]] = {
                "access": lambda: access,
                "refresh": lambda: refresh,
                "admin": lambda: self.auth.login("root")["access_token"],
                "alg_none": lambda: jwt.encode(self.claims(access), None, "none"),
                "other_key": lambda: jwt.encode(self.claims(access), OTHER_KEY, "HS256"),
                # The right key, an algorithm the app does not pin.
                "hs512": lambda: self.hs512(access),
                "no_sid": lambda: create_access_token(identity="alice"),
                "no_sid_refresh": lambda: create_refresh_token(identity="alice"),
                "expired": lambda: self.expired(access),
                "expired_refresh": lambda: self.expired(refresh),
                "revoked": lambda: self.revoked("bob")["access_token"],
                "revoked_refresh": lambda: self.revoked("bob")["refresh_token"],
                "reused_refresh": self.reused,
                "deleted_user_revoked": lambda: self.deleted("carol", revoke=True)["access_token"],
                "deleted_user": lambda: self.deleted("dave", revoke=False)["access_token"],
            }
            return makers[name]()

    def credential(self, name: str) -> str:
        if name not in self._made:
            self._made[name] = self._make(name)
        return self._made[name]

    def sessions(self) -> list[str]:
        with self.app.app_context():
            return [session.id for session in current_manager().list_for("alice")]


@dataclass(frozen=True)
class Row:
    """One request and what docs/api.md says it gets."""

    id: str
    method: str
    #: The URL as a client sends it (percent-encoded); ``{sid}`` is alice's session.
    path: str
    status: int
    #: The problem document's code; ``None`` for a success.
    code: str | None
    #: A credential of :class:`World` sent as ``Bearer``, or ``None``.
    token: str | None = "access"
    #: A raw ``Authorization`` value instead of ``token``.
    authorization: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    #: Send the body without a Content-Length, as gunicorn passes a chunked one.
    chunked: bool = False
    #: The client of a chunked body goes away after this many bytes.
    gone_after: int | None = None
    #: WSGI environ values: raw bytes in the path or query arrive as latin-1
    #: characters in ``PATH_INFO`` / ``QUERY_STRING`` (PEP 3333).
    environ: dict[str, str] = field(default_factory=dict)
    #: Extra request headers.
    headers: dict[str, str] = field(default_factory=dict)
    #: App config for this row only.
    config: dict[str, Any] = field(default_factory=dict)
    #: Members a successful JSON answer must have.
    expect: dict[str, Any] = field(default_factory=dict)


SID_BODY = b'{"name": "laptop"}'

TABLE = [
    # -- the Authorization header (7: no / malformed header; 10: Bearer alone or
    # with extra parts) ------------------------------------------------------------
    Row("no-header", "GET", SESSIONS, 401, "authorization_required", token=None),
    Row("bearer-alone", "GET", SESSIONS, 401, "authorization_required", authorization="Bearer"),
    Row("bearer-space", "GET", SESSIONS, 401, "authorization_required", authorization="Bearer "),
    Row("bearer-a-b", "GET", SESSIONS, 401, "authorization_required", authorization="Bearer a b"),
    Row(
        "bearer-token-and-more",
        "GET",
        SESSIONS,
        401,
        "authorization_required",
        authorization="Bearer {access} {access}",
    ),
    Row("basic", "GET", SESSIONS, 401, "authorization_required", authorization="Basic YTpi"),
    # Oversized headers: docs/api.md names no limit. (Behind gunicorn a header
    # line over 8190 bytes never reaches the app.) In the app, a 100 kB token
    # is just a token that does not parse...
    Row(
        "authorization-100kB",
        "GET",
        SESSIONS,
        401,
        "invalid_token",
        authorization="Bearer " + "x" * 100_000,
    ),
    # ...and big headers that are not credentials change nothing (a stored
    # User-Agent is cut to 512 characters).
    Row("user-agent-100kB", "GET", SESSIONS, 200, None, headers={"User-Agent": "U" * 100_000}),
    Row("other-header-1MB", "GET", SESSIONS, 200, None, headers={"X-Padding": "p" * 1_000_000}),
    Row(
        "authorization-not-utf8",
        "GET",
        SESSIONS,
        401,
        "invalid_token",
        token=None,
        environ={"HTTP_AUTHORIZATION": "Bearer \xff\xfe.\xff.\xff"},
    ),
    # -- tokens (7: signature, format or claims invalid; 10: no sid) --------------------
    Row("alg-none", "GET", SESSIONS, 401, "invalid_token", token="alg_none"),
    Row("signed-with-another-key", "GET", SESSIONS, 401, "invalid_token", token="other_key"),
    Row("hs512-with-the-right-key", "GET", SESSIONS, 401, "invalid_token", token="hs512"),
    Row("no-sid", "GET", SESSIONS, 401, "invalid_token", token="no_sid"),
    Row("no-sid-refresh", "POST", REFRESH, 401, "invalid_token", token="no_sid_refresh"),
    Row("expired-access", "GET", SESSIONS, 401, "token_expired", token="expired"),
    Row("expired-refresh", "POST", REFRESH, 401, "token_expired", token="expired_refresh"),
    Row("refresh-for-access", "GET", SESSIONS, 401, "wrong_token_type", token="refresh"),
    Row("refresh-for-logout", "POST", LOGOUT, 401, "wrong_token_type", token="refresh"),
    Row("access-for-refresh", "POST", REFRESH, 401, "wrong_token_type", token="access"),
    Row("revoked-session", "GET", SESSIONS, 401, "session_revoked", token="revoked"),
    Row("revoked-refresh", "POST", REFRESH, 401, "session_revoked", token="revoked_refresh"),
    Row("reused-refresh", "POST", REFRESH, 401, "refresh_token_reused", token="reused_refresh"),
    # A deleted user: removing one from the user store signs them out with
    # revoke-all; their tokens then fail like any revoked session's...
    Row("deleted-user", "GET", SESSIONS, 401, "session_revoked", token="deleted_user_revoked"),
    # ...while the user record alone decides nothing but sign-in: a token is
    # accepted while its session exists (docs/api.md, section 2), and no new one is given.
    Row("deleted-user-record-only", "GET", SESSIONS, 200, None, token="deleted_user"),
    Row(
        "deleted-user-signs-in",
        "POST",
        LOGIN,
        401,
        "invalid_credentials",
        token=None,
        body=login_body("dave"),
        content_type="application/json",
    ),
    Row("admin-route-user-token", "GET", f"{ADMIN}/alice/sessions", 403, "forbidden"),
    # -- body size (7: too large; 10: over 64 KiB is 413) -------------------------------
    Row(
        "login-64KiB-plus-1",
        "POST",
        LOGIN,
        413,
        "payload_too_large",
        token=None,
        body=padded({"username": "alice", "password": "pw"}, KIB_64 + 1),
        content_type="application/json",
    ),
    Row(
        "login-1MB",
        "POST",
        LOGIN,
        413,
        "payload_too_large",
        token=None,
        body=b"x" * 1_000_000,
        content_type="application/json",
    ),
    Row(
        "patch-64KiB-plus-1",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        413,
        "payload_too_large",
        body=padded({"name": "laptop"}, KIB_64 + 1),
        content_type="application/json",
    ),
    Row(
        "patch-exactly-64KiB",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        200,
        None,
        body=padded({"name": "laptop"}, KIB_64),
        content_type="application/json",
        expect={"name": "laptop"},
    ),
    # Without a Content-Length (chunked) the body used to be cut at 64 KiB and
    # parsed: JSON padded past the limit was accepted.
    Row(
        "patch-chunked-100kB",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        413,
        "payload_too_large",
        body=padded({"name": "laptop"}, 100_000),
        content_type="application/json",
        chunked=True,
    ),
    Row(
        "patch-chunked-exactly-64KiB",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        200,
        None,
        body=padded({"name": "laptop"}, KIB_64),
        content_type="application/json",
        chunked=True,
        expect={"name": "laptop"},
    ),
    # A client that goes away at the limit sent a request that cannot be read.
    Row(
        "patch-chunked-client-gone-at-64KiB",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=padded({"name": "laptop"}, 100_000),
        content_type="application/json",
        chunked=True,
        gone_after=KIB_64,
    ),
    # The rate limiter reads the body before the view: one byte over is
    # still over when the view reads it again.
    Row(
        "login-chunked-64KiB-plus-1-limiter-on",
        "POST",
        LOGIN,
        413,
        "payload_too_large",
        token=None,
        body=padded({"username": "alice", "password": "pw"}, KIB_64 + 1),
        content_type="application/json",
        chunked=True,
        config={"SESSIONSVC_LOGIN_RATE_LIMIT": "10/minute"},
    ),
    # -- what the body says (7: not JSON, wrong types) ------------------------------------
    Row(
        "body-not-utf8",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=b'{"username": "al\xffce", "password": "pw"}',
        content_type="application/json",
    ),
    Row(
        "body-latin1-declared",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body='{"name": "caf\u00e9"}'.encode("latin-1"),
        content_type="application/json; charset=latin-1",
    ),
    Row(
        "body-utf16",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=login_body().decode().encode("utf-16"),
        content_type="application/json",
    ),
    Row(
        "duplicate-keys-login",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=b'{"username": "mallory", "username": "alice", "password": "pw"}',
        content_type="application/json",
    ),
    Row(
        "duplicate-keys-patch",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=b'{"name": "a", "name": "b"}',
        content_type="application/json",
    ),
    Row(
        "duplicate-keys-nested",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=b'{"name": "a", "x": {"k": 1, "k": 2}}',
        content_type="application/json",
    ),
    Row(
        "nan",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=b'{"name": NaN}',
        content_type="application/json",
    ),
    Row(
        "lone-surrogate",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=b'{"name": "\\ud800"}',
        content_type="application/json",
    ),
    Row(
        "nested-30000-deep",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=b"[" * 30_000 + b"]" * 30_000,
        content_type="application/json",
    ),
    Row(
        "body-an-array",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=b"[]",
        content_type="application/json",
    ),
    Row(
        "body-empty",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=b"",
        content_type="application/json",
    ),
    # -- content types (7: a body that is not JSON) ---------------------------------------
    Row(
        "login-text-plain",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=login_body(),
        content_type="text/plain",
    ),
    Row(
        "login-form",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=b"username=alice&password=pw",
        content_type="application/x-www-form-urlencoded",
    ),
    Row(
        "login-no-content-type",
        "POST",
        LOGIN,
        400,
        "invalid_request",
        token=None,
        body=login_body(),
    ),
    Row(
        "patch-multipart",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        400,
        "invalid_request",
        body=b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nlaptop\r\n--b--\r\n',
        content_type="multipart/form-data; boundary=b",
    ),
    Row(
        "patch-json-utf8-charset",
        "PATCH",
        f"{SESSIONS}/{{sid}}",
        200,
        None,
        body='{"name": "caf\u00e9"}'.encode(),
        content_type="application/json; charset=utf-8",
        expect={"name": "caf\u00e9"},
    ),
    # -- session ids (4: unknown or malformed is 404 session_not_found) ----------------
    Row("sid-percent-ff", "GET", f"{SESSIONS}/%FF", 404, "session_not_found"),
    Row(
        "sid-raw-byte-ff",
        "GET",
        SESSIONS,
        404,
        "session_not_found",
        environ={"PATH_INFO": f"{SESSIONS}/\xff\xfe"},
    ),
    Row("sid-encoded-surrogate", "GET", f"{SESSIONS}/%ED%A0%80", 404, "session_not_found"),
    Row("sid-nul", "GET", f"{SESSIONS}/%00", 404, "session_not_found"),
    Row("sid-10000-chars", "GET", f"{SESSIONS}/{'a' * 10_000}", 404, "session_not_found"),
    Row("sid-unicode", "GET", f"{SESSIONS}/%C3%BCn%C3%AF%F0%9F%98%80", 404, "session_not_found"),
    Row("sid-dotdot", "GET", f"{SESSIONS}/..", 404, "session_not_found"),
    Row("sid-encoded-dotdot", "GET", f"{SESSIONS}/%2E%2E", 404, "session_not_found"),
    Row("delete-sid-10000-chars", "DELETE", f"{SESSIONS}/{'b' * 10_000}", 404, "session_not_found"),
    Row(
        "patch-sid-nul",
        "PATCH",
        f"{SESSIONS}/%00",
        404,
        "session_not_found",
        body=SID_BODY,
        content_type="application/json",
    ),
    Row(
        "sid-of-another-user",
        "GET",
        f"{SESSIONS}/{{sid}}",
        404,
        "session_not_found",
        token="admin",
    ),
    # -- query values (7: bad query value; 10: booleans) --------------------------------
    Row("limit-percent-ff", "GET", f"{EVENTS}?limit=%FF", 400, "invalid_request"),
    # A raw byte that is not UTF-8 (not a %-escape) used to answer 500.
    Row(
        "limit-raw-byte-ff",
        "GET",
        EVENTS,
        400,
        "invalid_request",
        environ={"QUERY_STRING": "limit=\xff"},
    ),
    Row(
        "include-current-raw-byte",
        "DELETE",
        SESSIONS,
        400,
        "invalid_request",
        environ={"QUERY_STRING": "include_current=tr\xfce"},
    ),
    Row("limit-twice", "GET", f"{EVENTS}?limit=1&limit=2", 400, "invalid_request"),
    Row("include-current-empty", "DELETE", f"{SESSIONS}?include_current=", 400, "invalid_request"),
    # A query the route does not read is not looked at.
    Row("unread-query-raw-byte", "GET", SESSIONS, 200, None, environ={"QUERY_STRING": "\xff=\xfe"}),
    # -- paths and methods (7) ------------------------------------------------------------
    Row("unknown-path-not-utf8", "GET", "/api/v1/%FF%FE", 404, "not_found"),
    Row("method-not-allowed", "PUT", f"{SESSIONS}/{{sid}}", 405, "method_not_allowed"),
    # Admin routes take any user id; one with no sessions is an empty list (10).
    Row(
        "admin-odd-user-id",
        "GET",
        f"{ADMIN}/%7B%7D%3A%20%00%C3%BC/sessions",
        200,
        None,
        token="admin",
        expect={"sessions": []},
    ),
]


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
@pytest.mark.parametrize("row", TABLE, ids=[row.id for row in TABLE])
def test_bad_input(make_app: Any, row: Row) -> None:
    world = World(make_app(**row.config))
    headers = {"User-Agent": CHROME, **row.headers}
    if row.token is not None:
        headers["Authorization"] = f"Bearer {world.credential(row.token)}"
    if row.authorization is not None:
        headers["Authorization"] = row.authorization.format(access=world.credential("access"))
    if row.content_type is not None:
        headers["Content-Type"] = row.content_type
    environ: dict[str, Any] = dict(row.environ)
    request: dict[str, Any] = {"data": row.body}
    if row.chunked:
        # What gunicorn hands the app for a chunked body: no Content-Length,
        # a stream the server ends.
        body = row.body or b""
        stream = io.BytesIO(body) if row.gone_after is None else GoneStream(body, row.gone_after)
        request = {"input_stream": stream}
        headers["Transfer-Encoding"] = "chunked"
        environ["wsgi.input_terminated"] = True
    before = world.sessions()

    response = world.app.test_client().open(
        row.path.format(sid=world.alice["session_id"]),
        method=row.method,
        headers=headers,
        environ_overrides=environ,
        **request,
    )

    if row.code is None:
        assert response.status_code == row.status, response.get_data(as_text=True)
        assert response.mimetype == "application/json"
        answer = response.get_json()
        assert {key: answer[key] for key in row.expect} == row.expect
        return
    assert_problem(response, row.status, row.code)
    assert world.sessions() == before
