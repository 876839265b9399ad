"""gunicorn settings for the standalone service.

``gunicorn -c gunicorn.conf.py wsgi:app``. With no ``SESSIONSVC_REDIS_URL``
the master starts one embedded development store that every worker reaches
over loopback (an in-process store per worker would give each worker its own
sessions), and one JWT key for all workers; both live only as long as the
master does.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from typing import Any

bind = os.environ.get("SESSIONSVC_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = "-"

log = logging.getLogger("sessionsvc")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def on_starting(server: Any) -> None:
    if not os.environ.get("SESSIONSVC_REDIS_URL"):
        from fakeredis import TcpFakeServer

        port = _free_port()
        store = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        threading.Thread(target=store.serve_forever, name="embedded-store", daemon=True).start()
        os.environ["SESSIONSVC_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        server.log.warning(
            "SESSIONSVC_REDIS_URL is not set: serving the embedded development store on "
            "127.0.0.1:%d to all workers; it keeps nothing when gunicorn stops",
            port,
        )
    if not os.environ.get("JWT_SECRET_KEY"):
        os.environ["JWT_SECRET_KEY"] = secrets.token_urlsafe(32)
        server.log.warning(
            "JWT_SECRET_KEY is not set: generated one for this run; tokens stop working "
            "when gunicorn stops"
        )
