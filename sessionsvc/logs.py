"""The service's log lines: JSON on stderr, beside gunicorn's."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("sessionsvc")


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
        return json.dumps(line, ensure_ascii=False)


def configure_logging() -> None:
    """Send the service's own log lines to stderr as JSON, beside gunicorn's.

    ``sessionsvc.events`` writes its security events as they are (each one
    JSON object on one line); every other ``sessionsvc`` line is wrapped by
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
