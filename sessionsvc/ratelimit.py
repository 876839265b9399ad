"""Login rate limiting: ``SESSIONSVC_LOGIN_RATE_LIMIT`` on the standalone login route.

Flask-Limiter counts every request to ``POST /api/v1/auth/login``, whatever
its outcome, against two fixed-window limits of the same value: one per
client address (as :func:`~sessionsvc.devices.client_ip` sees it, so behind
trusted proxies only) and one per username named in the body. The counters
live in the session store's Redis, under the key prefix, so every worker and
host shares them; when they cannot be counted the login fails closed (503),
as every session check does. A refused attempt is 429 ``rate_limited`` with
``Retry-After`` (rendered by :mod:`sessionsvc.errors`).

``POST /api/v1/auth/password`` counts into the same two counters (the
username being the token's): each attempt before its current password is
checked, given back afterwards unless that password was wrong.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from flask_limiter import Limiter, RequestLimit
from limits.errors import StorageError

from . import accounts, auth, devices, tokens
from .errors import InvalidCredentials, StoreUnavailable
from .settings import Settings
from .store import UNAVAILABLE_ERRORS, SessionStore, address_group, user_tag

logger = logging.getLogger("sessionsvc")

#: The view the limits apply to.
LOGIN_ENDPOINT = "sessionsvc_auth.login"
#: A password change: a wrong current password counts as a failed login.
PASSWORD_ENDPOINT = "sessionsvc_auth.change_password"  # noqa: S105 (an endpoint name)

#: The per-address key of a request whose address is not a valid IP address:
#: such requests share one counter rather than escape the limit.
UNKNOWN_ADDRESS = "unknown"

_DETAIL = "Too many login attempts; try again later."


def init_app(app: Flask, settings: Settings, store: SessionStore) -> None:
    """Limit the login view of ``app`` (registered before); nothing when the limit is off.

    :raises ConfigError: the store cannot keep the counters (Redis Cluster).
    """
    limit = settings.login_rate_limit
    if limit is None:
        return
    storage_uri, storage_options = store.limiter_storage()
    limiter = Limiter(
        _client_address,
        storage_uri=storage_uri,
        # limits raises its StorageError for any Redis error: errors.py
        # answers 503. No in-memory fallback and no swallowed errors: an
        # attempt that cannot be counted is not let through.
        storage_options={**storage_options, "wrap_exceptions": True},
        strategy="fixed-window",
        swallow_errors=False,
        in_memory_fallback_enabled=False,
        headers_enabled=False,
        on_breach=_retry_after,
    )
    limiter.init_app(app)
    # The limiter sees every request of the app: all but the login skip it
    # at once (and with it any RATELIMIT_DEFAULT of the host's config).
    limiter.request_filter(lambda: request.endpoint not in (LOGIN_ENDPOINT, PASSWORD_ENDPOINT))
    per_address = limiter.shared_limit(limit, "login:ip", error_message=_DETAIL)
    per_username = limiter.shared_limit(
        limit,
        "login:user",
        key_func=_username,
        # A body the view will refuse names no account: only its address
        # counts. And a stranger must not lock a user out: an address the
        # user signed in from within a session lifetime passes this limit
        # (its own per-address limit still holds).
        exempt_when=lambda: _known_address(auth.attempted_username(request)),
        error_message=_DETAIL,
    )
    # Decorated here rather than in auth.py: the blueprint and its view are
    # shared by every app, the limiter is this app's.
    view: Callable[..., Any] = app.view_functions[LOGIN_ENDPOINT]
    app.view_functions[LOGIN_ENDPOINT] = _fail_closed(per_address(per_username(view)), store.where)
    # The same counters for a password change, the user being the token's.
    # Each attempt is counted before its current password is checked (one
    # atomic INCR per counter, refused past the limit), so attempts sent at
    # once cannot all pass a count taken before any of them was wrong; the
    # attempt is given back unless the current password was wrong.
    change_username = limiter.shared_limit(
        limit,
        "login:user",
        key_func=lambda: user_tag(_token_user()),
        exempt_when=lambda: _known_address(_token_user()),
        error_message=_DETAIL,
    )
    change: Callable[..., Any] = _given_back_unless_wrong(
        limiter, app.view_functions[PASSWORD_ENDPOINT]
    )
    app.view_functions[PASSWORD_ENDPOINT] = _fail_closed(
        per_address(change_username(change)), store.where
    )


#: Errors that mean "the counters cannot be reached".
_COUNTING_ERRORS: tuple[type[Exception], ...] = (StorageError, *UNAVAILABLE_ERRORS)


def _fail_closed(view: Callable[..., Any], where: str) -> Callable[..., Any]:
    """Answer 503 when the counters cannot be reached: the one place for it.

    limits wraps redis-py's ``RedisError`` in its ``StorageError``, but not a
    cluster client's ``RedisClusterException``, raised when no node of the
    cluster answers; both mean the login cannot be counted, so it fails
    closed. The view itself never lets a Redis error out: the store
    converts them.
    """

    @functools.wraps(view)
    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except _COUNTING_ERRORS as exc:
            cause = exc.storage_error if isinstance(exc, StorageError) else exc
            logger.warning(
                "rate-limit store %s unavailable: %s: %s", where, type(cause).__name__, cause
            )
            raise StoreUnavailable("The session store is unavailable; try again shortly.") from exc

    return counted


def _client_address() -> str:
    address = devices.client_ip(request)
    return address_group(address) if address else UNKNOWN_ADDRESS


def _known_address(username: str | None) -> bool:
    """Whether the user signed in from this client's address group before.

    ``None`` (a body the view will refuse names no account) is exempt too:
    only its address counts.
    """
    return username is None or accounts.signed_in_here(username)


def _token_user() -> str:
    """The user of the request's access token, verified (a bad token is its usual 401).

    Asked by the key and the exemption of each limit: verified (and checked
    against the store) once per request.
    """
    if "_sessionsvc_token_user" not in g:
        verify_jwt_in_request()
        g._sessionsvc_token_user = tokens.token_session(get_jwt())[0]
    user: str = g._sessionsvc_token_user
    return user


def _given_back_unless_wrong(limiter: Limiter, view: Callable[..., Any]) -> Callable[..., Any]:
    """Run the password change, counted already; give its count back unless
    the current password was wrong.

    Only a wrong current password is a guess: a right one, a new password
    the policy refuses (checked first, with no hash) or a busy answer costs
    the user nothing once answered. It held its place in the count while it
    ran, which is what keeps attempts sent at once within the limit.
    """

    @functools.wraps(view)
    def counted(*args: Any, **kwargs: Any) -> Any:
        wrong = False
        try:
            return view(*args, **kwargs)
        except InvalidCredentials:
            wrong = True
            raise
        finally:
            if not wrong:
                _give_back(limiter)

    return counted


def _give_back(limiter: Limiter) -> None:
    """Take this request's hit off each counter it was counted in."""
    strategy = limiter.limiter
    for hit in limiter.current_limits:
        try:
            strategy.hit(hit.limit, *hit.request_args, cost=-1)
        except _COUNTING_ERRORS as exc:
            # The change itself is done: the attempt stays counted, no more.
            logger.warning("could not give back a counted attempt: %s", type(exc).__name__)


def _username() -> str:
    # Base64 of the name: any username is one short, printable key part.
    return user_tag(auth.attempted_username(request) or "")


def _retry_after(limit: RequestLimit) -> Response:
    """When the breached window ends, for the 429's ``Retry-After``.

    Flask-Limiter embeds this response in its ``RateLimitExceeded``;
    :func:`sessionsvc.errors.http_error_response` keeps its header.
    """
    seconds = max(1, int(limit.reset_at - time.time()))
    return Response(status=429, headers={"Retry-After": str(seconds)})
