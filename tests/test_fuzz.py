"""Schemathesis against the service's own ``/apispec.json``, in process.

The standalone app runs over fakeredis and is called through its WSGI
interface; the document it serves (flasgger, built from the real routes) is
the only description of the API the fuzzer gets. Every response must be
documented (status, media type, body schema), no input may produce a 5xx,
and every error must be the problem document of docs/api.md (section 7).

Each case signs in afresh (:class:`FreshSession`), so a case that revokes
its own session or all of them leaves the next one a working token.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from sessionsvc import create_app, current_manager
from tests.clients import JWT_KEY, Auth

USER, ADMIN = "alice", "root"

#: Cases per operation and test in the generate phase (schemathesis adds its
#: deterministic examples and coverage cases on top). Sized so that this file
#: stays well under a minute on a 2-core machine.
EXAMPLES = 75

#: Timing on a shared CI machine is noise, not a finding; no example
#: database is written (nothing to replay between CI runs); the health
#: checks would only complain that schemathesis filters many inputs.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

#: The codes docs/api.md, section 7, allows for each status.
CODES = {
    400: {"invalid_request", "weak_password", "invalid_dpop_proof"},
    401: {
        "authorization_required",
        "invalid_token",
        "token_expired",
        "session_revoked",
        "wrong_token_type",
        "refresh_token_reused",
        "invalid_credentials",
        "invalid_dpop_proof",
    },
    403: {"forbidden", "user_disabled", "review_not_allowed"},
    404: {"session_not_found", "not_found", "user_not_found"},
    405: {"method_not_allowed"},
    409: {"last_admin", "nothing_to_review"},
    413: {"payload_too_large"},
    429: {"rate_limited"},
    503: {"store_unavailable"},
}


def _app(**config: Any) -> Flask:
    """The standalone service over its own fakeredis, with a user and an admin."""
    values = {
        "TESTING": True,
        "JWT_SECRET_KEY": JWT_KEY,
        # Fresh sign-ins for every case would hit the limit at once;
        # test_login_with_the_rate_limiter_on turns it back on.
        "SESSIONSVC_LOGIN_RATE_LIMIT": "",
        **config,
    }
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    app = create_app(values, redis_client=client)
    reset_users(app)
    return app


def reset_users(app: Flask) -> Auth:
    """The user and the admin as a case expects them: a case may have deleted
    or disabled one, changed its password or its roles."""
    auth = Auth(app)
    with app.app_context():
        for name in (USER, ADMIN):
            current_manager().store.delete_user(name)
    auth.create_user(USER)
    auth.create_user(ADMIN, admin=True)
    return auth


APP = _app()
schema = schemathesis.openapi.from_wsgi("/apispec.json", APP)


@schema.hook
def filter_path_parameters(
    ctx: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> bool:
    """No session id ``events``: ``/api/v1/sessions/events`` is a route of its
    own (docs/api.md, section 4), so that path never addresses a session, and
    its answer is rightly not a Session. Hypothesis draws string literals of
    the code under test (``"events"`` among them) as examples, so without
    this a run now and then judges the events list by the Session schema."""
    return (path_parameters or {}).get("session_id") != "events"


def _secured(ctx: schemathesis.HookContext) -> bool:
    assert ctx.operation is not None
    return bool(ctx.operation.definition.raw.get("security"))


def _is_admin(operation: schemathesis.APIOperation) -> bool:
    return operation.path.startswith("/api/v1/admin/")


class FreshSession:
    """Auth hook: a new session per case, with the token the operation needs.

    The admin's access token on admin routes, the refresh token on the
    refresh route, the user's access token everywhere else.
    """

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> dict[str, Any]:
        auth = reset_users(ctx.app)
        return auth.login(ADMIN if _is_admin(ctx.operation) else USER, create=False)

    def set(
        self, case: schemathesis.Case, data: dict[str, Any], ctx: schemathesis.AuthContext
    ) -> None:
        kind = "refresh_token" if ctx.operation.path == "/api/v1/auth/refresh" else "access_token"
        case.headers = {**(case.headers or {}), **Auth.headers(data, kind)}


def problem_document(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every error is the problem document of docs/api.md, with a code its status allows."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.split(";")[0].strip() == "application/problem+json", content_type
    body = response.json()
    assert isinstance(body, dict), body
    assert body.keys() == {"type", "title", "status", "detail", "code"}, body
    assert body["status"] == response.status_code, body
    assert body["type"] == "about:blank", body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str), body
    assert body["code"] in CODES.get(response.status_code, set()), body
    if response.status_code in (429, 503):
        assert response.headers.get("retry-after"), response.headers


def content_type_documented(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """``content_type_conformance``, but a 204 has no content and so no media type.

    Swagger 2.0 lists media types per operation, not per response, so the
    built-in check wants one even on a 204.
    """
    if response.status_code == 204:
        assert not response.content, response.content
        assert "content-type" not in response.headers, response.headers
        return None
    return content_type_conformance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_documented,
    response_schema_conformance,
    response_headers_conformance,
    problem_document,
]
#: Checks that send probes of their own or judge how the case was generated.
PROBES = [ignored_auth, negative_data_rejection, missing_required_header, unsupported_method]


@schema.auth(FreshSession, refresh_interval=None, retry_on=[])
@schema.parametrize()
@FUZZ
def test_authenticated(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[*CHECKS, *PROBES])


@schema.include(_secured).parametrize()
@FUZZ
def test_unauthenticated(case: schemathesis.Case) -> None:
    """Whatever ``Authorization`` schemathesis makes up (or none) is refused."""
    response = case.call_and_validate(checks=[*CHECKS, negative_data_rejection])
    # The coverage phase also tries methods the route does not have (405)
    # and OPTIONS, which Flask answers for every route with its methods.
    if case.method.upper() == case.operation.method.upper():
        assert response.status_code == 401


@schema.include(path_regex=r"\{(session|user)_id\}").parametrize()
@schema.given(data=st.data())
@settings(FUZZ, phases=[Phase.generate, Phase.shrink])
def test_own_and_others_ids(case: schemathesis.Case, data: st.DataObject) -> None:
    """Ids that exist: the caller's own session and user, another user's session.

    Random ids only ever reach the 404 branch; these reach 200 and 204, and
    another user's session must be 404 too, never 403. Admin routes get an
    admin token or, sometimes, a plain user's (403).
    """
    auth = reset_users(APP)
    admin = _is_admin(case.operation) and data.draw(st.booleans(), label="admin token")
    tokens = auth.login(ADMIN if admin else USER, create=False)
    other = auth.login(USER if admin else ADMIN, create=False)
    path = case.path_parameters
    assert path is not None
    if "user_id" in path:
        path["user_id"] = data.draw(st.sampled_from([path["user_id"], USER, ADMIN]), "user_id")
    if "session_id" in path:
        ids = [path["session_id"], tokens["session_id"], other["session_id"]]
        path["session_id"] = data.draw(st.sampled_from(ids), label="session_id")
    case.headers = {**(case.headers or {}), **Auth.headers(tokens)}
    response = case.call_and_validate(checks=CHECKS)
    if _is_admin(case.operation) and not admin:
        assert response.status_code == 403
    elif "session_id" in path and path["session_id"] == other["session_id"] and not admin:
        assert response.status_code in (400, 404)


LIMITED = _app(SESSIONSVC_LOGIN_RATE_LIMIT="10/minute")
LOGIN = schemathesis.openapi.from_wsgi("/apispec.json", LIMITED)["/api/v1/auth/login"]["POST"]


def test_login_with_the_rate_limiter_on() -> None:
    """Past ten attempts a minute from one address: 429 ``rate_limited``, ``Retry-After``."""
    statuses: list[int] = []

    @given(case=LOGIN.as_strategy())
    @settings(FUZZ, max_examples=30)
    def fuzz(case: schemathesis.Case) -> None:
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    fuzz()
    # Ten per fixed window: a run that straddles a minute gets ten more.
    assert len(statuses) >= 30
    assert len([s for s in statuses if s != 429]) <= 20, statuses


def test_a_204_has_no_content_type() -> None:
    """Found by the fuzzer: werkzeug labelled every empty 204 ``text/html``."""
    auth, client = reset_users(APP), APP.test_client()
    mine, theirs = auth.login(USER, create=False), auth.login(USER, create=False)
    admin = auth.login(ADMIN, create=False)
    answers = [
        client.delete(f"/api/v1/sessions/{theirs['session_id']}", headers=Auth.headers(mine)),
        client.delete(
            f"/api/v1/admin/users/{USER}/sessions/{mine['session_id']}",
            headers=Auth.headers(admin),
        ),
        client.post("/api/v1/auth/logout", headers=Auth.headers(admin)),
    ]
    for response in answers:
        assert response.status_code == 204
        assert response.get_data() == b""
        assert "Content-Type" not in response.headers
