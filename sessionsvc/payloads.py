"""Reading what a client sent: JSON bodies and query values, strictly.

Anything that does not parse is :class:`InvalidRequest` (400), so no input
reaches a view half-understood.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from .errors import InvalidRequest

#: Largest request body the service reads (the spec's "64 KiB is plenty").
MAX_BODY = 64 * 1024


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest(f"Duplicate key {key!r} in the JSON body.")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidRequest(f"{name} is not valid JSON.")


def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object.

    :raises InvalidRequest: wrong content type, bytes that are not UTF-8,
        JSON that does not parse, duplicate keys, or anything but an object.
    """
    if not request.is_json:
        raise InvalidRequest("The body must be JSON (Content-Type: application/json).")
    raw = request.get_data(cache=True)
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


def _single(request: Request, name: str) -> str:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name!r} is given more than once.")
    return values[0]


def query_bool(request: Request, name: str, default: bool) -> bool:
    """A boolean query value: ``true``/``false``/``1``/``0``; anything else is 400."""
    if name not in request.args:
        return default
    value = _single(request, name)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidRequest(f"{name!r} must be true, false, 1 or 0.")


def query_int(request: Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query value within ``[minimum, maximum]``; anything else is 400."""
    if name not in request.args:
        return default
    value = _single(request, name)
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise InvalidRequest(f"{name!r} must be a whole number from {minimum} to {maximum}.")
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidRequest(f"{name!r} must be a whole number from {minimum} to {maximum}.")
    return number
