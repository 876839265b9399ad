"""The service's log lines: JSON on stderr, beside gunicorn's.

Every line of every logger (the security events, the service's and
gunicorn's messages, the access log) is written by :func:`json_line`: JSON
in plain ASCII. Whatever a client sends (a user agent, a username, a path)
reaches a line only as JSON escapes: not a control character (C0, DEL, C1
such as U+0085 NEL or U+009B CSI), not a line or paragraph separator
(U+2028, U+2029), not a bidirectional override or a lone surrogate. No
terminal, log shipper or ``str.splitlines`` can see a line break or an
escape sequence in it, and every line encodes in any encoding. Text outside
ASCII is escaped too (``é`` is ``\\u00e9``): a JSON reader (``jq``) shows
it as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("sessionsvc")


def json_line(value: Mapping[str, Any]) -> str:
    """``value`` as one JSON object on one line, in plain ASCII (see the module's docstring).

    :raises TypeError: a value JSON cannot hold.
    :raises ValueError: a circular reference.
    """
    return json.dumps(value, ensure_ascii=True)


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger and message."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json_line(line)


def configure_logging() -> None:
    """Send the service's own log lines to stderr as JSON, beside gunicorn's.

    ``sessionsvc.events`` writes its security events as they are (each one
    :func:`json_line`); every other ``sessionsvc`` line is wrapped by
    :class:`JsonLines`. Loggers that already have handlers (configured by
    the deployment) are left alone.
    """
    events = logging.getLogger("sessionsvc.events")
    if not events.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        events.addHandler(handler)
        events.setLevel(logging.INFO)
        events.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
