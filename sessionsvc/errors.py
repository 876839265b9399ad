"""The exception hierarchy and its one mapping to RFC 9457 problem documents."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("sessionsvc")

PROBLEM_MIMETYPE = "application/problem+json"


class SessionsvcError(Exception):
    """Base class: every error the service answers with has a status and a code."""

    status = 500
    code = "internal_error"
    title = "Internal Server Error"
    #: Extra response headers, such as ``Retry-After``.
    headers: dict[str, str] = {}

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class AuthorizationRequired(SessionsvcError):
    status, code, title = 401, "authorization_required", "Unauthorized"


class InvalidToken(SessionsvcError):
    status, code, title = 401, "invalid_token", "Unauthorized"


class TokenExpired(SessionsvcError):
    status, code, title = 401, "token_expired", "Unauthorized"


class SessionRevoked(SessionsvcError):
    status, code, title = 401, "session_revoked", "Unauthorized"


class WrongTokenType(SessionsvcError):
    status, code, title = 401, "wrong_token_type", "Unauthorized"


class RefreshTokenReused(SessionsvcError):
    status, code, title = 401, "refresh_token_reused", "Unauthorized"


class InvalidDPoPProof(SessionsvcError):
    """A bound token without a valid proof by its key (or a proof where none fits)."""

    status, code, title = 401, "invalid_dpop_proof", "Unauthorized"
    # Raised as sessionsvc.binding.ProofRefused, with the challenge of RFC
    # 9449 (which names the algorithms sessionsvc.dpop accepts).


class InvalidLoginProof(InvalidDPoPProof):
    """A sign-in whose proof is invalid, or missing where proofs are required."""

    status, title = 400, "Bad Request"


class InvalidCredentials(SessionsvcError):
    status, code, title = 401, "invalid_credentials", "Unauthorized"


class InvalidRequest(SessionsvcError):
    status, code, title = 400, "invalid_request", "Bad Request"


class WeakPassword(SessionsvcError):
    status, code, title = 400, "weak_password", "Bad Request"


class PayloadTooLarge(SessionsvcError):
    status, code, title = 413, "payload_too_large", "Content Too Large"


class Forbidden(SessionsvcError):
    status, code, title = 403, "forbidden", "Forbidden"


class UserDisabled(SessionsvcError):
    status, code, title = 403, "user_disabled", "Forbidden"


class ReviewNotAllowed(SessionsvcError):
    """A review of the caller's own session, or from a session pending review itself."""

    status, code, title = 403, "review_not_allowed", "Forbidden"


class UserNotFound(SessionsvcError):
    status, code, title = 404, "user_not_found", "Not Found"


class SessionNotFound(SessionsvcError):
    status, code, title = 404, "session_not_found", "Not Found"


class NotFound(SessionsvcError):
    status, code, title = 404, "not_found", "Not Found"


class MethodNotAllowed(SessionsvcError):
    status, code, title = 405, "method_not_allowed", "Method Not Allowed"


class LastAdmin(SessionsvcError):
    """The change would leave the user store without an admin who is not disabled."""

    status, code, title = 409, "last_admin", "Conflict"


class NothingToReview(SessionsvcError):
    """Confirm of a session without risk flags."""

    status, code, title = 409, "nothing_to_review", "Conflict"


class RateLimited(SessionsvcError):
    status, code, title = 429, "rate_limited", "Too Many Requests"


class StoreUnavailable(SessionsvcError):
    """The session store did not answer: the service fails closed."""

    status, code, title = 503, "store_unavailable", "Service Unavailable"
    headers = {"Retry-After": "1"}


class AuditUnavailable(SessionsvcError):
    """The audit database cannot be reached or read; the detail says why, in
    one line (never its URL, which may hold a password). Only the audit
    trail's own routes and commands fail: the sessions keep working."""

    status, code, title = 503, "audit_unavailable", "Service Unavailable"
    headers = {"Retry-After": "1"}


class Busy(SessionsvcError):
    """Too many password hashes at once in this process (see ``passwords.HashSlots``)."""

    status, code, title = 503, "busy", "Service Unavailable"
    headers = {"Retry-After": "1"}


class AdminsLocked(Busy):
    """Another change of a user's admin state holds their lock (``accounts``)
    past the wait: busy, until the lock's lease runs out at the latest."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after))}


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """Render an RFC 9457 problem document with the extra member ``code``."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    response = Response(text, status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: SessionsvcError) -> Response:
    """The problem document for one of our exceptions."""
    return problem(error.status, error.code, error.title, error.detail, error.headers)


#: How werkzeug's HTTP errors map onto the codes of docs/api.md.
_HTTP_CODES: dict[int, type[SessionsvcError]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    # A wrong Content-Type is a body that is not JSON, as far as docs/api.md goes.
    415: InvalidRequest,
    # Flask-Limiter's RateLimitExceeded is werkzeug's 429.
    429: RateLimited,
}

#: The header of werkzeug's own response that the problem document keeps: the
#: methods a 405's URL allows (from the URL map), when a 429 may retry (from
#: the rate limiter).
_KEPT_HEADERS = {405: "Allow", 429: "Retry-After"}


def http_error_response(error: HTTPException) -> Response:
    """The problem document for a werkzeug HTTP error."""
    status = error.code or 500
    mapped = _HTTP_CODES.get(status)
    if mapped is not None:
        response = error_response(mapped(error.description))
    else:
        code = (error.name or "error").lower().replace(" ", "_")
        response = problem(status, code, error.name or "Error", error.description or "")
    kept = _KEPT_HEADERS.get(status)
    if kept:
        value = error.get_response().headers.get(kept)
        if value:
            response.headers[kept] = value
    return response


def register_error_handlers(app: Flask, owns: Callable[[], bool]) -> None:
    """Render our errors, and HTTP errors on paths we own, as problem documents.

    :param owns: tells, inside a request, whether the request is ours (so a
        host app keeps its own error pages for its own paths).

    Flask keeps one handler per exception class: the host's handlers for
    ``HTTPException`` and ``Exception`` registered before this call are kept
    and still answer the host's own requests.
    """
    previous = app.error_handler_spec[None][None]
    host_http = previous.get(HTTPException)
    host_unexpected = previous.get(Exception)

    @app.errorhandler(SessionsvcError)
    def _ours(error: SessionsvcError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Any:
        if not owns():
            return host_http(error) if host_http else error
        return http_error_response(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        # Flask hands HTTPExceptions here only if they have no handler; the
        # rest is a bug: log it with its traceback, answer without one.
        if isinstance(error, HTTPException):
            return error
        if not owns():
            if host_unexpected:
                return host_unexpected(error)
            raise error
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return problem(
            500, "internal_error", "Internal Server Error", "An unexpected error occurred."
        )

    taken_over = False

    @app.before_request
    def _take_over_narrower_handlers() -> None:
        """The host's handlers narrower than ours stay the host's.

        Flask picks the handler of the most specific class, and a status
        code's before any class: a host's ``errorhandler(404)`` or
        ``errorhandler(StoreUnavailable)`` (for its own routes; before or
        after ``init_app``) would answer sessionsvc's routes too. At the
        first request (after which Flask takes no new handlers) each is
        wrapped: problem documents on our paths, the host's answer elsewhere.
        """
        nonlocal taken_over
        if taken_over:
            return
        taken_over = True
        answered: dict[type[Exception], Callable[[Any], Response]] = app.extensions.get(
            _OURS_FIRST, {}
        )
        for code, by_class in app.error_handler_spec[None].items():
            for error_class, handler in list(by_class.items()):
                if code is not None:
                    by_class[error_class] = _ours_first(handler, owns, http_error_response)
                elif error_class in answered:
                    # The host's, registered after answer_ours_first wrapped the one before.
                    by_class[error_class] = _ours_first(handler, owns, answered[error_class])
                elif issubclass(error_class, SessionsvcError) and handler is not _ours:
                    by_class[error_class] = _ours_first(handler, owns, error_response)


#: Where an app keeps the error classes :func:`answer_ours_first` answers, with our answer.
_OURS_FIRST = "sessionsvc.ours_first"


def answer_ours_first(
    app: Flask,
    owns: Callable[[], bool],
    error_class: type[Exception],
    ours: Callable[[Any], Response],
) -> None:
    """Answer ``error_class`` with ``ours`` on our paths, and elsewhere with the
    handler the app has for it: the one registered before this call, or one
    the host registers after it (taken over at the first request, by the
    hook :func:`register_error_handlers` installs). With none, ``ours``
    answers everywhere.
    """
    app.extensions.setdefault(_OURS_FIRST, {})[error_class] = ours
    previous = app.error_handler_spec[None][None].get(error_class)
    app.register_error_handler(error_class, _ours_first(previous or ours, owns, ours))


def _ours_first(
    host: Callable[[Any], Any], owns: Callable[[], bool], ours: Callable[[Any], Response]
) -> Callable[[Any], Any]:
    """``host``'s answer to an error, but on our paths ``ours`` (a problem document)."""
    if getattr(host, "sessionsvc", False):  # taken over already
        return host

    def answer(error: Any) -> Any:
        return ours(error) if owns() else host(error)

    answer.sessionsvc = True  # type: ignore[attr-defined]
    return answer
