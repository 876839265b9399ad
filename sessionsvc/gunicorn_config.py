"""gunicorn settings for the service, shipped in the package.

``gunicorn -c python:sessionsvc.gunicorn_config wsgi:app`` (the repository's
``gunicorn.conf.py``, which ``make run`` uses, is these settings); a host app
serves itself the same way, naming its own app. With no
``SESSIONSVC_REDIS_URL`` the master serves one embedded development store on
127.0.0.1:6390 that every worker (and ``flask --app wsgi sessions ...``)
reaches over loopback — an in-process store per worker would give each
worker its own sessions, which the package refuses at start-up — and makes
one JWT key for all workers; both live only as long as the master.

Only gunicorn should import this module: importing it sets
``PROMETHEUS_MULTIPROC_DIR`` for the process (below).

Metrics: each worker counts in its own process, so prometheus_client runs in
multiprocess mode — every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them, whichever worker
answers. When the variable is unset the master makes a temporary directory
(removed when the master exits) as soon as it reads this file: gunicorn loads
the worker and logger classes, which import prometheus_client, before any
hook runs, and prometheus_client picks in-memory or file-backed values once,
at import. A directory you set yourself should be emptied between runs. ``child_exit`` tells
prometheus_client a worker is gone, so its live-only series are dropped.

Webhooks and the audit trail: with ``SESSIONSVC_WEBHOOK_URLS`` set, the
master starts one deliverer (``flask --app <the served app> sessions webhooks
run``) once it is ready, and with ``SESSIONSVC_AUDIT_URL`` set one audit
writer (``... sessions audit run``); it stops them when it exits, and they
also stop by themselves if the master is gone. Any number of deliverers and
of writers share the work, so each host running this config adds one of
each. Their metrics go to the same ``PROMETHEUS_MULTIPROC_DIR``, so
``/metrics`` shows them too.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from typing import Any, cast

#: What gunicorn reads: its settings and hooks (a config file that does
#: ``from sessionsvc.gunicorn_config import *`` gets exactly these).
__all__ = [
    "accesslog",
    "bind",
    "child_exit",
    "control_socket_disable",
    "graceful_timeout",
    "keepalive",
    "logger_class",
    "on_exit",
    "on_starting",
    "post_worker_init",
    "threads",
    "timeout",
    "when_ready",
    "worker_class",
    "workers",
]


def _remove_dir(path: str, owner: int) -> None:
    if os.getpid() == owner:  # not in a worker, which runs the master's atexit too
        shutil.rmtree(path, ignore_errors=True)


# First, before gunicorn imports prometheus_client (see above). gunicorn
# reads this file again on SIGHUP: the variable, set by then, is kept.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sessionsvc-metrics-")
    atexit.register(_remove_dir, os.environ["PROMETHEUS_MULTIPROC_DIR"], os.getpid())

# Threaded workers (gunicorn's gthread, see sessionsvc.serving.Worker): a
# request spends its time in one Redis round trip and a JWT decode, both
# short, so threads cost little. A worker's poller reads each request's line,
# headers and body (up to 64 KiB) without blocking and takes a thread only
# once they have all arrived, so clients sending slowly or nothing hold no
# thread (with sync workers two such clients stopped the service). A request
# gets 10 s from its first byte for its headers and 30 s for its body (408 /
# 400 after that); a client has 30 s to take its response, and at most half
# the threads wait on clients taking theirs slowly. A proxy in front
# should still buffer requests and responses (README, "Operations"). Scale
# with WEB_CONCURRENCY (about two per core).
# The store's Redis client is made lazily in each worker after the fork
# (SessionStore.client checks the pid), so no connection is shared across
# processes, with or without --preload; a worker's pool holds at most one
# connection per thread.
bind = os.environ.get("SESSIONSVC_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sessionsvc.serving.Worker"
threads = int(os.environ.get("SESSIONSVC_THREADS", "16"))
# Open connections one client address (an IPv6 client's /64) may hold in
# each worker; its next ones are closed at once, unanswered; 0 turns the cap
# off. Behind a proxy every connection comes from the proxy: set it above
# what the proxy opens to a worker, or 0. A worker holds at most
# worker_connections (gunicorn's 1000, or fewer under a lower ulimit -n),
# so one address takes a tenth of them: 3,000 silent connections from one
# address leave 200 open (2 workers) and the rest are closed at once. A
# full worker closes its longest-silent connection (or else the one whose
# request has been arriving the longest) for each new one.
max_connections_per_client = int(os.environ.get("SESSIONSVC_MAX_CONNECTIONS_PER_CLIENT", "100"))
# A request waits at most SESSIONSVC_STORE_TIMEOUT (0.5 s) for Redis: 30 s
# only catches a stuck worker.
timeout = 30
graceful_timeout = 10
keepalive = 5
# gunicorn's request-line and header limits are kept (4094 bytes, 100
# headers of 8190 bytes); what it refuses is answered as a problem document.
# Access-log lines and gunicorn's own are JSON (sessionsvc.serving.Logger).
accesslog = "-"
logger_class = "sessionsvc.serving.Logger"
# No control socket: gunicorn's default is one per user (~/.gunicorn/
# gunicorn.ctl), which two services on one host would share.
control_socket_disable = True


#: The processes this master started beside its workers (the webhook
#: deliverer, the audit writer), to stop on exit.
_helpers: list[subprocess.Popen[bytes]] = []


def on_starting(server: Any) -> None:
    if os.environ.get("SESSIONSVC_REDIS_URL"):
        # A real store: the app itself insists on a JWT_SECRET_KEY.
        return
    from .settings import ConfigError
    from .store import DEV_STORE_PORT, serve_dev_store

    try:
        url = serve_dev_store()
    except ConfigError as exc:
        # No embedded extra: an app whose Redis is not in the environment (its
        # config, a redis_client) needs none; one that does says so itself.
        server.log.warning("not serving the embedded development store: %s", exc)
        return
    except OSError as exc:
        raise SystemExit(
            f"cannot serve the embedded development store on port {DEV_STORE_PORT} ({exc}); "
            "stop what uses it, or set SESSIONSVC_REDIS_URL"
        ) from None
    server.log.warning(
        "SESSIONSVC_REDIS_URL is not set: serving the embedded development store at %s "
        "to all workers; it keeps nothing when gunicorn stops",
        url,
    )
    if not os.environ.get("JWT_SECRET_KEY"):
        # Development only. One key for every worker, or tokens would only
        # work in the worker that signed them.
        os.environ["JWT_SECRET_KEY"] = secrets.token_urlsafe(32)
        server.log.warning(
            "JWT_SECRET_KEY is not set: generated one for this run; tokens stop working "
            "when gunicorn stops"
        )


def _start_helper(server: Any, group: str, what: str) -> None:
    # The app gunicorn serves (wsgi:app for the standalone service).
    app = getattr(server.app, "app_uri", None) or "wsgi:app"
    command = [sys.executable, "-m", "flask", "--app", app, "sessions", group, "run"]
    helper = subprocess.Popen([*command, "--exit-with", str(os.getpid())])  # noqa: S603
    _helpers.append(helper)
    server.log.info("started %s (pid %d)", what, helper.pid)


def when_ready(server: Any) -> None:
    if os.environ.get("SESSIONSVC_WEBHOOK_URLS", "").strip():
        _start_helper(server, "webhooks", "a webhook deliverer")
    if os.environ.get("SESSIONSVC_AUDIT_URL", "").strip():
        _start_helper(server, "audit", "an audit writer")


def post_worker_init(worker: Any) -> None:
    worker.max_connections_per_client = max_connections_per_client


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    # Any: prometheus_client types this only in some releases.
    cast(Any, multiprocess).mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    from prometheus_client import multiprocess

    # SIGTERM: each ends what it has in progress (a delivery: 10 s at most;
    # an audit batch) and stops; all at once, then wait for them.
    for helper in _helpers:
        if helper.poll() is None:
            helper.terminate()
    for helper in _helpers:
        try:
            helper.wait(15)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        # Its live gauges (the audit lag) leave the sums with it.
        cast(Any, multiprocess).mark_process_dead(helper.pid)
    _helpers.clear()
