"""What gunicorn runs around the standalone app (``gunicorn.conf.py`` names it).

- :class:`Worker`: gunicorn's threaded worker, with two changes. A request
  gets :data:`HEAD_TIMEOUT` seconds to send its request line and headers and
  :data:`BODY_TIMEOUT` for its body, so a slow client holds a thread for
  seconds, not for as long as it likes. And what gunicorn refuses before
  the app runs (a request line or headers too long, a malformed request)
  is answered with the same RFC 9457 problem documents as the app's own
  errors, not gunicorn's HTML page.
- :class:`Logger`: gunicorn's logger, writing one JSON object per line: the
  access log (method, route, path, status, duration, bytes, client, request
  id) and gunicorn's own messages alike, each a plain-ASCII
  :func:`~sessionsvc.logs.json_line`, so nothing a client sends can start
  a line of its own or carry a terminal escape.

gunicorn is the ``server`` extra: only a gunicorn process imports this.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from gunicorn import glogging, util
from gunicorn.http import errors as http_errors
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker
from werkzeug import exceptions as http

from .app import REQUEST_ID, ROUTE
from .devices import normalised
from .errors import SessionsvcError, error_response, http_error_response
from .logs import JsonLines, json_line

#: Seconds a client has to send a request line and its headers.
HEAD_TIMEOUT = 10.0
#: Seconds a client has to send a request body (the service reads 64 KiB at most).
BODY_TIMEOUT = 30.0


class HeadTimeout(http_errors.ParseException):
    """The client did not send its request line and headers in time."""


class _TimedSocket:
    """A connection's socket whose reads end at a deadline.

    The worker starts a deadline for each request's head and then for its
    body. Reading the head past it raises :class:`HeadTimeout` (answered 408
    by :meth:`Worker.handle_error`); reading the body past it raises
    ``TimeoutError``, which the app takes as a client gone (400). Everything
    else is the socket's own.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = 0.0
        self.in_head = True

    def start_head(self) -> None:
        self.deadline = time.monotonic() + HEAD_TIMEOUT
        self.in_head = True

    def start_body(self) -> None:
        self.deadline = time.monotonic() + BODY_TIMEOUT
        self.in_head = False

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("read deadline passed")
            self._sock.settimeout(remaining)
            try:
                return self._sock.recv(size)
            finally:
                self._sock.settimeout(None)
        except TimeoutError:
            if self.in_head:
                raise HeadTimeout() from None
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Worker(ThreadWorker):
    """gunicorn's ``gthread`` worker with read deadlines and problem-document refusals."""

    def handle(self, conn: Any) -> Any:
        if not conn.initialized and not conn.wait_for_data(0):
            # A new connection that has sent nothing yet waits in the poller,
            # holding no thread (gthread would hold one for 5 s), and is
            # closed after the keep-alive timeout if it stays silent.
            return gthread._DEFER  # gthread's own "back to the poller" answer
        # Each call reads one request head (a new or a kept-alive connection).
        if not self.cfg.is_ssl:  # TLS ends at the proxy; the wrapper is for plain sockets
            if not isinstance(conn.sock, _TimedSocket):
                conn.sock = _TimedSocket(conn.sock)
            conn.sock.start_head()
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn.sock, _TimedSocket):
            conn.sock.start_body()
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer a request gunicorn refused, or an error outside the app, as a problem."""
        status, problem = refusal(exc)
        peer = (addr or ("-",))[0]
        if status >= 500:
            self.log.exception("error handling a request: %s", type(exc).__name__)
        else:
            # The exception's text quotes what the client sent: not logged.
            self.log.warning("refused a request from %s: %s", peer, type(exc).__name__)
        body = problem.get_data()
        head = [f"HTTP/1.1 {problem.status}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in problem.headers.items()]
        # One access-log line for every refusal, with what was read of the request.
        environ = {
            "REQUEST_METHOD": getattr(req, "method", None),
            "PATH_INFO": getattr(req, "path", None),
            "REMOTE_ADDR": peer,
        }
        self.log.access(_Refused(status, len(body)), req, environ, timedelta(0))
        try:
            util.write_nonblock(client, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            self.log.debug("could not send the refusal")


class _Refused:
    """What the access log needs of a refusal."""

    def __init__(self, status: int, sent: int) -> None:
        self.status = str(status)
        self.sent = sent
        self.headers: list[tuple[str, str]] = []


#: gunicorn's refusals as the HTTP errors the app answers the same way.
_REFUSALS: list[tuple[type[BaseException], type[http.HTTPException], str]] = [
    (http_errors.LimitRequestLine, http.RequestURITooLarge, "The request line is too long."),
    (
        http_errors.LimitRequestHeaders,
        http.RequestHeaderFieldsTooLarge,
        "The request has too many headers, or one too large.",
    ),
    (HeadTimeout, http.RequestTimeout, "The request headers did not arrive in time."),
    (
        http_errors.UnsupportedTransferCoding,
        http.NotImplemented,
        "That transfer coding is not supported.",
    ),
    (http_errors.ExpectationFailed, http.ExpectationFailed, "That expectation cannot be met."),
    (http_errors.ForbiddenProxyRequest, http.Forbidden, "Proxy requests are not accepted."),
    # Everything else gunicorn refuses is a malformed request: a bad request
    # line, method, version, header name or value (a control byte), a
    # Content-Length beside Transfer-Encoding, a bad chunk.
    (http_errors.ParseException, http.BadRequest, "The request is malformed."),
]


def refusal(exc: BaseException) -> tuple[int, Any]:
    """The status and problem document for what gunicorn could not serve."""
    if not isinstance(exc, http_errors.ConfigurationProblem):  # gunicorn's, not the client's
        for kind, answer, detail in _REFUSALS:
            if isinstance(exc, kind):
                return answer.code or 400, http_error_response(answer(detail))
    # A bug, or the app's response that gunicorn could not send.
    return 500, error_response(SessionsvcError("An unexpected error occurred."))


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
