"""What clients send and get: JSON bodies and query values, read strictly,
and the answers every blueprint shares.

Anything that does not parse is :class:`InvalidRequest` (400), so no input
reaches a view half-understood.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Request, Response, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from .errors import InvalidRequest
from .models import MAX_NAME
from .store.keys import user_of_tag, user_tag

#: Largest request body the service reads (docs/api.md, section 7: 64 KiB).
MAX_BODY = 64 * 1024


def limit_body() -> None:
    """A blueprint's ``before_request``: bodies over :data:`MAX_BODY` are 413.

    Per blueprint, so that a host app's own routes keep its own limit.
    """
    request.max_content_length = MAX_BODY


def no_store(response: Response) -> Response:
    """A blueprint's ``after_request``: its answers are never cached.

    Tokens and session data (RFC 6749, section 5.1), problem documents
    included; ``Pragma`` for HTTP/1.0 caches.
    """
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def page_headers(response: Response, csp: str) -> Response:
    """The headers of an HTML page of ours: its Content-Security-Policy, and
    no framing, no content sniffing, no referrer."""
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def no_content() -> Response:
    """An empty 204 answer.

    werkzeug labels every response ``text/html`` by default, even one without
    a body; a 204 has no content, so it has no ``Content-Type`` either (the
    OpenAPI document promises JSON or problem documents only).
    """
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


# The WSGI environ key that remembers whether a body sent without a
# Content-Length went on past the limit.
_OVER_LIMIT = "sessionsvc.body_over_limit"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest(f"Duplicate key {key!r} in the JSON body.")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidRequest(f"{name} is not valid JSON.")


def _body(request: Request) -> bytes:
    """The request's body, refused when it is over the limit however it was sent.

    werkzeug refuses a ``Content-Length`` over the limit itself. A body sent
    without one (chunked, which gunicorn passes on with
    ``wsgi.input_terminated``) is read through a stream that stops at the
    limit and reads as if the body ended there: the first 64 KiB of a larger
    body would be parsed, and a JSON value padded past the limit accepted.
    """
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and len(raw) >= limit and request.content_length is None:
        # The server terminates this stream (or it would have been empty):
        # one more byte past the limit means the body was larger. Asked once
        # per request (the rate limiter reads the body before the view does).
        over = request.environ.get(_OVER_LIMIT)
        if over is None:
            try:
                over = bool(request.environ["wsgi.input"].read(1))
            except (OSError, ValueError):  # as werkzeug's own reads take it
                raise ClientDisconnected() from None
            request.environ[_OVER_LIMIT] = over
        if over:
            # werkzeug's own refusal of a Content-Length over the limit: 413
            # payload_too_large, and what auth.attempted_username expects.
            raise RequestEntityTooLarge()
    return raw


def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object.

    :raises InvalidRequest: wrong content type, bytes that are not UTF-8,
        JSON that does not parse, duplicate keys, or anything but an object.
    :raises RequestEntityTooLarge: a body over the limit, even one sent
        without a ``Content-Length`` (413 ``payload_too_large``).
    """
    if not request.is_json:
        raise InvalidRequest("The body must be JSON (Content-Type: application/json).")
    raw = _body(request)
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        raise InvalidRequest("The body is not valid UTF-8 JSON.") from None
    except RecursionError:
        raise InvalidRequest("The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def string_field(body: dict[str, Any], name: str, *, max_length: int = 1024) -> str:
    """A required string member of a JSON body."""
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"{name!r} is required and must be a string.")
    if len(value) > max_length:
        raise InvalidRequest(f"{name!r} is longer than {max_length} characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: valid JSON, not text
        raise InvalidRequest(f"{name!r} is not valid Unicode text.") from None
    return value


def session_name(body: dict[str, Any]) -> str | None:
    """The ``name`` member of a rename: trimmed, 1 to MAX_NAME printable
    characters, or ``null`` to clear it."""
    if "name" not in body:
        raise InvalidRequest("'name' is required (a string, or null to clear it).")
    name = body["name"]
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidRequest("'name' must be a string or null.")
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidRequest(f"'name' must be 1 to {MAX_NAME} printable characters.")
    return name


#: What a role may be: a short word (no comma: roles are stored comma-separated).
ROLE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Most roles a user may have.
MAX_ROLES = 32

#: Longest username a login accepts.
MAX_USERNAME = 256


def user_changes(body: dict[str, Any]) -> tuple[bool | None, tuple[str, ...] | None]:
    """The ``disabled`` and ``roles`` of an admin's change to a user (each may be absent)."""
    unknown = set(body) - {"disabled", "roles"}
    if unknown or not body:
        raise InvalidRequest("The body takes 'disabled' (a boolean) and/or 'roles' (a list).")
    disabled = body.get("disabled")
    if "disabled" in body and not isinstance(disabled, bool):
        raise InvalidRequest("'disabled' must be true or false.")
    if "roles" not in body:
        return disabled, None
    roles = body["roles"]
    if not isinstance(roles, list) or len(roles) > MAX_ROLES:
        raise InvalidRequest(f"'roles' must be a list of at most {MAX_ROLES} roles.")
    if not all(isinstance(role, str) and ROLE_RE.fullmatch(role) for role in roles):
        raise InvalidRequest("Each role is 1 to 64 letters, digits or '_.:-'.")
    return disabled, tuple(dict.fromkeys(roles))


def _args(request: Request) -> MultiDict[str, str]:
    """The query values; a query string that is not UTF-8 is a bad query value.

    werkzeug decodes ``%``-escapes leniently but the raw query string
    strictly: a byte such as ``0xFF`` sent as is (not as ``%FF``) would
    otherwise raise ``UnicodeDecodeError`` and answer 500.
    """
    try:
        return request.args
    except UnicodeDecodeError:
        raise InvalidRequest("The query string is not valid UTF-8.") from None


def _single(request: Request, name: str) -> str:
    values = _args(request).getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name!r} is given more than once.")
    return values[0]


_TRUE, _FALSE = ("true", "1"), ("false", "0")
#: What a boolean query value may be.
BOOLEAN_VALUES = (*_TRUE, *_FALSE)


def query_bool(request: Request, name: str, default: bool) -> bool:
    """A boolean query value: ``true``/``false``/``1``/``0``; anything else is 400."""
    if name not in _args(request):
        return default
    value = _single(request, name)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequest(f"{name!r} must be true, false, 1 or 0.")


def query_int(request: Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query value within ``[minimum, maximum]``; anything else is 400."""
    if name not in _args(request):
        return default
    value = _single(request, name)
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise InvalidRequest(f"{name!r} must be a whole number from {minimum} to {maximum}.")
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidRequest(f"{name!r} must be a whole number from {minimum} to {maximum}.")
    return number


def query_text(request: Request, name: str, *, max_length: int) -> str:
    """A text query value (``""`` when absent) of at most ``max_length`` characters."""
    if name not in _args(request):
        return ""
    value = _single(request, name)
    if len(value) > max_length:
        raise InvalidRequest(f"{name!r} is longer than {max_length} characters.")
    return value


def page_cursor(user_id: str) -> str:
    """The opaque cursor of a page that ends at ``user_id``: base64url of its
    UTF-8 bytes, a lone surrogate's too (the encoding of a user's hash tag)."""
    return user_tag(user_id)


def query_cursor(request: Request) -> str | None:
    """The user id the ``cursor`` query value ends a page at (``None``: absent);
    anything :func:`page_cursor` does not make is 400."""
    value = query_text(request, "cursor", max_length=MAX_USERNAME * 6)
    if "cursor" not in _args(request):
        return None
    # Canonical only: what page_cursor makes, of a username's length.
    user_id = user_of_tag(value)
    if not user_id or len(user_id) > MAX_USERNAME:
        raise InvalidRequest("'cursor' is not one a page of this listing gave.")
    return user_id
