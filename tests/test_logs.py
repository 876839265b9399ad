"""sessionsvc.logs: the service's own log lines are JSON."""

from __future__ import annotations

import json
import logging
import re

from sessionsvc.logs import JsonLines


def test_service_log_lines_are_json() -> None:
    record = logging.LogRecord(
        "sessionsvc", logging.WARNING, __file__, 1, "store %s: %s", ("down", '"x"'), None
    )
    line = json.loads(JsonLines().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "sessionsvc"
    assert line["message"] == 'store down: "x"'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", line["time"])
