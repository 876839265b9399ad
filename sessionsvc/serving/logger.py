"""gunicorn's logger, writing JSON lines: the access log and its own."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from typing import Any

from gunicorn import glogging

from ..app import REQUEST_ID, ROUTE
from ..devices import normalised
from ..logs import JsonLines, json_line


def _text(wsgi: str | None) -> str | None:
    """A WSGI string (bytes as latin-1, PEP 3333) as the text the client meant (UTF-8)."""
    if wsgi is None:
        return None
    return wsgi.encode("latin-1", "replace").decode("utf-8", "replace")


class Logger(glogging.Logger):
    """gunicorn's logger, writing JSON lines (see the module's docstring)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonLines())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "logger": "access",
            "method": environ.get("REQUEST_METHOD"),
            "route": environ.get(ROUTE),
            "path": _text(environ.get("PATH_INFO")),
            "status": int(status) if status.isdigit() else status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None),
            # As the sessions show it: an IPv4 client of a dual-stack socket
            # as IPv4, and what a proxy forwarded only when it is an address.
            "client": normalised(environ.get("REMOTE_ADDR")),
            "request_id": environ.get(REQUEST_ID) or secrets.token_hex(8),
            # The worker that answered.
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(json_line(line))
        except (TypeError, ValueError):
            self.error(f"access log line not written: {sorted(line)}")
