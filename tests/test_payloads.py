"""Strict reading of JSON bodies and query values."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request

from sessionsvc.errors import InvalidRequest
from sessionsvc.payloads import json_object, query_bool, query_int, string_field


@pytest.fixture
def app() -> Flask:
    return Flask(__name__)


def read_json(app: Flask, data: bytes | str, content_type: str = "application/json") -> Any:
    with app.test_request_context(method="POST", data=data, content_type=content_type):
        return json_object(request)


def test_json_object_reads_an_object(app: Flask) -> None:
    body = read_json(app, '{"name": "Work laptop", "n": 1, "nested": {"a": [1, 2]}}')
    assert body == {"name": "Work laptop", "n": 1, "nested": {"a": [1, 2]}}


def test_json_object_accepts_charset_and_unicode(app: Flask) -> None:
    data = '{"name": "Büro \\u00fc \\ud83d\\ude00"}'.encode()
    body = read_json(app, data, "application/json; charset=utf-8")
    assert body == {"name": "Büro ü 😀"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_json_object_rejects_other_content_types(app: Flask, content_type: str) -> None:
    with pytest.raises(InvalidRequest):
        read_json(app, '{"name": "x"}', content_type)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"name": }',
        b"{'name': 'x'}",
        b'{"name": "x"} trailing',
        b'{"name": "\xff\xfe"}',
        b"\xef\xbb\xbf{}",
        '{"name": "x"}'.encode("utf-16"),
        b'{"a": 1, "a": 2}',
        b'{"outer": {"a": 1, "a": 1}}',
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b'{"n": -Infinity}',
        b"[]",
        b'[{"name": "x"}]',
        b'"string"',
        b"42",
        b"null",
        b"true",
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"n": ' + b"1" * 5000 + b"}",
    ],
)
def test_json_object_rejects_bad_bodies(app: Flask, data: bytes) -> None:
    with pytest.raises(InvalidRequest) as raised:
        read_json(app, data)
    assert raised.value.status == 400
    assert raised.value.code == "invalid_request"


def test_string_field() -> None:
    assert string_field({"name": "x"}, "name") == "x"
    with pytest.raises(InvalidRequest):
        string_field({}, "name")
    with pytest.raises(InvalidRequest):
        string_field({"name": 5}, "name")
    with pytest.raises(InvalidRequest):
        string_field({"name": "x" * 11}, "name", max_length=10)
    assert string_field({"name": "x" * 10}, "name", max_length=10) == "x" * 10


@pytest.mark.parametrize(
    ("query", "expected"),
    [("true", True), ("1", True), ("false", False), ("0", False)],
)
@pytest.mark.parametrize("default", [True, False])
def test_query_bool_values(app: Flask, query: str, expected: bool, default: bool) -> None:
    with app.test_request_context(query_string={"include_current": query}):
        assert query_bool(request, "include_current", default) is expected


@pytest.mark.parametrize("default", [True, False])
def test_query_bool_absent_is_the_default(app: Flask, default: bool) -> None:
    with app.test_request_context(query_string={"other": "true"}):
        assert query_bool(request, "include_current", default) is default


@pytest.mark.parametrize("value", ["", "yes", "no", "TRUE", "True", "2", " true", "1.0", "on"])
def test_query_bool_rejects_anything_else(app: Flask, value: str) -> None:
    with (
        app.test_request_context(query_string={"include_current": value}),
        pytest.raises(InvalidRequest),
    ):
        query_bool(request, "include_current", False)


def test_query_bool_rejects_a_bare_name(app: Flask) -> None:
    with (
        app.test_request_context("/?include_current"),
        pytest.raises(InvalidRequest),
    ):
        query_bool(request, "include_current", False)


def limit_of(app: Flask, value: str | None) -> int:
    query = {} if value is None else {"limit": value}
    with app.test_request_context(query_string=query):
        return query_int(request, "limit", 50, minimum=1, maximum=200)


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("50", 50), ("200", 200), ("007", 7)])
def test_query_int_within_bounds(app: Flask, value: str, expected: int) -> None:
    assert limit_of(app, value) == expected


def test_query_int_absent_is_the_default(app: Flask) -> None:
    assert limit_of(app, None) == 50


@pytest.mark.parametrize(
    "value",
    ["0", "201", "-1", "", "1e3", "٣", "²", " 5", "5 ", "+5", "5.0", "0x10", "99999999", "abc"],
)
def test_query_int_rejects_junk_and_out_of_range(app: Flask, value: str) -> None:
    with pytest.raises(InvalidRequest):
        limit_of(app, value)


def test_string_field_rejects_a_lone_surrogate() -> None:
    # json.loads('"\\ud800"') is a valid JSON string but not encodable text.
    with pytest.raises(InvalidRequest, match="Unicode"):
        string_field({"password": "pw\ud800"}, "password")


def both_include_current() -> bool:
    return query_bool(request, "include_current", False)


def both_limits() -> int:
    return query_int(request, "limit", 50, minimum=1, maximum=200)


@pytest.mark.parametrize(
    ("query", "read"),
    [
        ("include_current=false&include_current=true", both_include_current),
        ("limit=5&limit=6", both_limits),
    ],
    ids=["bool", "int"],
)
def test_a_query_value_given_twice_is_rejected(app: Flask, query: str, read: Any) -> None:
    twice = pytest.raises(InvalidRequest, match="more than once")
    with app.test_request_context(f"/?{query}"), twice:
        read()
