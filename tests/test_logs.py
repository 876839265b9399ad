"""sessionsvc.logs: every log line is one JSON object in plain ASCII."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from sessionsvc.logs import JsonLines, configure_logging, json_line
from tests.backends import AppFactory, served
from tests.clients import CHROME, FIREFOX_LINUX, Auth, http
from tests.servers import wait_until

#: What a line must never carry raw: C0 (ESC starts a terminal escape), DEL,
#: C1 (NEL is a line break to str.splitlines, CSI a terminal escape), the
#: Unicode line and paragraph separators, the other separators splitlines
#: breaks at, a bidirectional override, a lone surrogate.
RAW = "\x1b\x00\n\r\x0b\x0c\x1c\x1d\x1e\x7f\x80\x85\x9b\x9f\u2028\u2029\u202e\ud800"
#: A username a client may choose: each of them, with a letter outside ASCII.
NAME = "zoë\x85\x9b\u2028\u2029\x1b[31m"
#: A path with the same characters, percent-encoded as a client sends them.
PATH = "/api/v1/sessions/zoë\x85\x9b\u2028\u2029\x1b[31m"


def lines_of(text: str) -> list[dict[str, Any]]:
    """Each line of ``text`` (ended by ``\\n``) as JSON, after checking that
    it carries nothing raw: only printable ASCII."""
    lines = text.split("\n")
    assert lines[-1] == "", "the last line is not ended"
    for line in lines[:-1]:
        assert line.isascii() and line.isprintable(), line
        assert not set(line) & set(RAW), line
    return [json.loads(line) for line in lines[:-1]]


def test_service_log_lines_are_json() -> None:
    record = logging.LogRecord(
        "sessionsvc", logging.WARNING, __file__, 1, "store %s: %s", ("down", '"x"'), None
    )
    line = json.loads(JsonLines().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "sessionsvc"
    assert line["message"] == 'store down: "x"'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", line["time"])


@pytest.mark.parametrize("char", [*RAW, "é", "😀"])
def test_a_line_escapes_everything_outside_printable_ascii(char: str) -> None:
    value = {"text": f"a{char}b", "nested": {"list": [char]}}
    line = json_line(value)
    assert line.isascii() and line.isprintable()
    assert len(line.splitlines()) == 1
    assert json.loads(line) == value


def test_a_service_message_with_control_characters_is_one_ascii_line() -> None:
    record = logging.LogRecord("sessionsvc", logging.ERROR, __file__, 1, "path %s", (PATH,), None)
    try:
        raise RuntimeError(NAME)
    except RuntimeError:
        record.exc_info = sys.exc_info()
    (line,) = lines_of(JsonLines().format(record) + "\n")
    assert line["message"] == f"path {PATH}"
    assert NAME in line["error"]


@pytest.fixture
def service_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The service's logging as ``wsgi.py`` sets it up, writing to a buffer for stderr."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    loggers = [logging.getLogger("sessionsvc"), logging.getLogger("sessionsvc.events")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    for each in loggers:
        each.handlers.clear()
    configure_logging()
    try:
        yield stderr
    finally:
        for each, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            each.handlers[:] = handlers
            each.setLevel(level)
            each.propagate = propagate


def test_every_service_line_escapes_what_a_client_sends(
    make_app: AppFactory, service_logs: io.StringIO
) -> None:
    app: Flask = make_app()

    @app.get("/api/v1/sessions/<path:rest>/explode")
    def explode(rest: str) -> str:
        raise RuntimeError(rest)

    app.config["PROPAGATE_EXCEPTIONS"] = False
    auth = Auth(app)
    agent = f"{FIREFOX_LINUX} {NAME}"
    tokens = auth.login(NAME, user_agent=CHROME)
    client = app.test_client()
    # Another browser with the token: an anomaly, one more event line.
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "User-Agent": agent}
    assert client.get("/api/v1/sessions", headers=headers).status_code == 200
    assert client.get(urllib.parse.quote(PATH) + "/explode").status_code == 500
    lines = lines_of(service_logs.getvalue())
    events = [line for line in lines if "event" in line]
    assert {line["event"] for line in events} >= {"session.created", "session.anomaly"}
    assert {line["user_id"] for line in events} == {NAME}
    (error,) = [line for line in lines if line.get("level") == "ERROR"]
    assert error["message"] == f"unhandled error on GET {PATH}/explode"


@pytest.mark.slow
def test_every_gunicorn_line_escapes_what_a_client_sends(redis_url: str) -> None:
    with served(redis_url, {NAME: "zoë-password"}) as service:
        status, tokens = http(
            "POST",
            service.base + "/api/v1/auth/login",
            body={"username": NAME, "password": "zoë-password"},
        )
        assert status == 200, tokens
        status, _ = http("GET", service.base + urllib.parse.quote(PATH))
        assert status == 401

        def paths() -> list[str]:
            return [line["path"] for line in lines_of(service.output()) if "path" in line]

        # The access line is written after the answer is sent.
        wait_until(lambda: PATH in paths(), 5, service.output)
        lines = lines_of(service.output())
    assert [line["user_id"] for line in lines if line.get("event")] == [NAME]
