"""The worker: gunicorn's ``gthread`` worker whose poller reads request heads
and bodies, and whose refusals are problem documents (see the package's
docstring)."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from datetime import timedelta
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker
from werkzeug import exceptions as http

from ..errors import SessionsvcError, error_response, http_error_response
from .sockets import (
    BODY_TIMEOUT,
    HEAD_BUFFER,
    HEAD_TIMEOUT,
    Body,
    HeadTimeout,
    TimedSocket,
    body_of,
    client_of,
    has_body,
    head_ready,
    received,
)

#: Seconds a closed connection has to send what it still had in flight, and
#: the bytes read from it meanwhile (gunicorn's graceful close).
LINGER = 2.0
LINGER_BYTES = 64 * 1024
#: Open files a worker keeps for itself beyond its connections and two per
#: thread (see Worker.init_process).
FILES_RESERVED = 64
#: Seconds a thread reads on an unread body after the response, for the next
#: request (see Worker._keepalive_after).
DRAIN_TIMEOUT = 0.1


class _Connection(gthread.TConn):
    """A connection, with what the poller has read of its next request head."""

    def __init__(self, worker: Worker, sock: socket.socket, addr: Any, server: Any) -> None:
        super().__init__(worker.cfg, sock, addr, server)
        self.data_ready = True  # gthread's own wait for the first byte: the poller did it
        self.worker = worker
        self.client_key = client_of(addr)
        #: What has arrived of the next request (its head, and then its body),
        #: and when the head must be whole (None: nothing yet, the connection
        #: waits as a kept-alive one).
        self.head = bytearray()
        self.head_deadline: float | None = None
        #: Once the head is whole, the body the poller waits for, by when, and
        #: whether the poller told the client to send it (100 Continue).
        self.body: Body | None = None
        self.body_deadline: float | None = None
        self.continued = False
        #: All of the body is in :attr:`head`, for the thread.
        self.whole_body = False
        #: In the poller, waiting for (the rest of) a head.
        self.waiting = False
        #: Bytes read from it while it closes (see :meth:`Worker.linger`).
        self.drained = 0
        self.closed = False

    @property
    def raw(self) -> Any:
        """The socket itself, under the read deadlines' wrapper."""
        return self.sock._sock if isinstance(self.sock, TimedSocket) else self.sock

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self)
        else:
            self.worker.forget(self)


class Worker(ThreadWorker):
    """gunicorn's ``gthread`` worker, reading request heads in its poller (see the module)."""

    #: Open connections one client (see :func:`client_of`) may hold in this
    #: worker; 0: no cap. gunicorn.conf.py sets it.
    max_connections_per_client = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections_of: Counter[str | None] = Counter()
        #: (deadline, connection) of heads being read, oldest first, and of
        #: bodies; an entry whose connection has moved on since is skipped.
        self.heads: deque[tuple[float, _Connection]] = deque()
        self.bodies: deque[tuple[float, _Connection]] = deque()
        #: (deadline, connection) of gracefully closing connections.
        self.lingering: deque[tuple[float, _Connection]] = deque()
        #: Threads that may wait at once on clients taking their responses
        #: slowly (the rest serve everyone else); past that such a client's
        #: connection is closed.
        self.slow_writers = threading.BoundedSemaphore(max(self.cfg.threads // 2, 1))

    def init_process(self) -> None:
        # Each connection is an open file: hold no more than the process may
        # open, less what it needs besides (its Redis connections, one per
        # thread; files a thread sends; closing connections; its own).
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = soft - 2 * self.cfg.threads - FILES_RESERVED
        if soft != resource.RLIM_INFINITY and room < self.cfg.worker_connections:
            self.worker_connections: int = max(room, 1)
            self.log.warning(
                "ulimit -n is %d: a worker holds at most %d connections, not %d",
                soft,
                self.worker_connections,
                self.cfg.worker_connections,
            )
        super().init_process()

    def accept(self, listener: Any) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Out of files all the same (closing connections, or the host's
            # limit): make room as a full worker does, rather than end the
            # worker and every request it serves.
            self.log.warning("could not accept a connection: %s", os.strerror(exc.errno))
            self.make_room()
            return
        client = client_of(addr)
        cap = self.max_connections_per_client
        if cap and client is not None and self.connections_of[client] >= cap:
            util.close(sock)  # at once: answering would mean reading its request
            self.log.debug("closed a connection from %s: %d open", client, cap)
            return
        if self.nr_conns >= self.worker_connections - 1:
            # Full (gthread would stop accepting): one waiting in the poller
            # makes room, so slow or silent ones cannot keep others out.
            self.make_room()
        self.connections_of[client] += 1
        self.nr_conns += 1
        self.wait_for_head(_Connection(self, sock, addr, listener.getsockname()))

    def make_room(self) -> None:
        """Close the connection :meth:`longest_waiting` names, if any."""
        idle = self.longest_waiting()
        if idle is not None:
            self.stop_waiting(idle)
            self.nr_conns -= 1
            idle.close()

    def longest_waiting(self) -> _Connection | None:
        """The connection a full worker closes for a new one: the one silent
        the longest, or else the one whose request (its head, or then its
        body) has been arriving the longest (a client sending at a normal
        pace sends a request at once); never one a thread is serving."""
        while self.keepalived_conns:
            silent: _Connection = self.keepalived_conns[0]
            try:
                silent.raw.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return silent
            except OSError:
                pass
            # Its request (or its close) arrived in this very poll, behind the
            # new connection: read it now rather than close it unanswered.
            self.on_head_readable(silent, None)
        while self.heads:
            deadline, conn = self.heads[0]
            if conn.waiting and conn.head_deadline == deadline:
                return conn
            self.heads.popleft()  # moved on since: murder_pending would skip it
        # Heads past their deadline that wait for their bodies are only here.
        while self.bodies:
            deadline, conn = self.bodies[0]
            if conn.waiting and conn.body_deadline == deadline:
                return conn
            self.bodies.popleft()
        return None

    def wait_for_head(self, conn: _Connection) -> None:
        """Keep a new or kept-alive connection in the poller until its next head is whole.

        Silent, it is closed after the keep-alive timeout, as gthread closes
        kept-alive connections (sooner when the worker stops).
        """
        conn.raw.setblocking(False)
        self.poller.register(conn.raw, selectors.EVENT_READ, partial(self.on_head_readable, conn))
        conn.waiting = True
        conn.head_deadline = None
        conn.body = conn.body_deadline = None
        conn.continued = conn.whole_body = False
        conn.set_timeout()
        if not self.alive:
            conn.timeout = min(conn.timeout, time.monotonic() + gthread.STOP_KEEPALIVE_LINGER)
        self.keepalived_conns.append(conn)
        if conn.head:  # sent behind the last request (pipelined)
            head, conn.head = conn.head, bytearray()
            self.add_to_head(conn, head)

    def on_head_readable(self, conn: _Connection, _sock: Any) -> None:
        if not conn.waiting:  # closed by an earlier event of the same poll (accept)
            return
        if self.cfg.is_ssl:
            # TLS is read in a thread, as gthread does (a proxy should end it).
            self.stop_waiting(conn)
            self.enqueue_req(conn)
            return
        data = received(conn.raw, HEAD_BUFFER)
        if data is None:
            return
        if not data:  # the client closed the connection (or its side of it)
            self.stop_waiting(conn)
            if conn.body is not None:  # after a whole head: answered as a body cut short
                self.enqueue_req(conn)
                return
            self.nr_conns -= 1
            conn.close()
            return
        self.add_to_head(conn, data)

    def add_to_head(self, conn: _Connection, data: bytes | bytearray) -> None:
        """Add bytes to a connection's request; hand it to a thread once gunicorn
        can parse its head and read its body without waiting."""
        if conn.head_deadline is None:  # its first bytes start the head's deadline
            self.keepalived_conns.remove(conn)
            conn.head_deadline = time.monotonic() + HEAD_TIMEOUT
            self.heads.append((conn.head_deadline, conn))
        start = len(conn.head)
        conn.head += data
        if conn.body is None:
            if not head_ready(conn.head, start, self.cfg.limit_request_line):
                return
            announced = body_of(conn.head, self.cfg.limit_request_line)
            if announced is None:
                self.stop_waiting(conn)
                self.enqueue_req(conn)
                return
            # A slow body holds no thread either: it has BODY_TIMEOUT from here.
            conn.body, expect = announced
            conn.body_deadline = time.monotonic() + BODY_TIMEOUT
            self.bodies.append((conn.body_deadline, conn))
            if expect and not conn.body.arrived(conn.head):
                conn.continued = True
                with contextlib.suppress(OSError):  # a fresh socket's buffer has room
                    conn.raw.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if conn.body.arrived(conn.head):
            if conn.body.overflowed:
                # Chunks of a few bytes in more framing than the poller holds:
                # the thread reads none more (the app's answer to a body cut
                # short), or a client trickling them would hold it.
                conn.body_deadline = time.monotonic()
            else:
                conn.whole_body = True
            self.stop_waiting(conn)
            self.enqueue_req(conn)

    def stop_waiting(self, conn: _Connection) -> None:
        self.poller.unregister(conn.raw)
        conn.waiting = False
        if conn.head_deadline is None:
            self.keepalived_conns.remove(conn)

    def murder_pending(self) -> None:
        """Answer 408 to heads past their deadline; close lingering connections past theirs.

        (gthread's own pending connections, deferred by a thread, are none here.)
        """
        now = time.monotonic()
        while self.bodies and self.bodies[0][0] <= now:
            deadline, conn = self.bodies.popleft()
            if conn.waiting and conn.body_deadline == deadline:
                # Its thread finds the deadline passed: the app's answer to a client gone.
                self.stop_waiting(conn)
                self.enqueue_req(conn)
        while self.heads and self.heads[0][0] <= now:
            deadline, conn = self.heads.popleft()
            if conn.waiting and conn.head_deadline == deadline and conn.body is None:
                self.stop_waiting(conn)
                self.handle_error(None, conn.raw, conn.client, HeadTimeout())
                self.nr_conns -= 1
                conn.close(graceful=True)
        while self.lingering and self.lingering[0][0] <= now:
            _, conn = self.lingering.popleft()
            if not conn.closed:
                self.poller.unregister(conn.raw)
                self.forget(conn)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # gthread's loop wakes every second: sooner when a deadline falls due.
        for due in (self.heads, self.bodies, self.lingering):
            if due:
                timeout = min(timeout, max(due[0][0] - time.monotonic(), 0.0))
        super().wait_for_and_dispatch_events(timeout)

    def linger(self, conn: _Connection) -> None:
        """Close a connection once the client has closed its side, or after :data:`LINGER`.

        gunicorn's graceful close (RFC 9112 section 9.6: the client reads the
        whole answer, not a reset), in the poller: gthread's waits in its
        loop, up to 2 s for each client that keeps its side open.
        """
        try:
            conn.raw.shutdown(socket.SHUT_WR)
            conn.raw.setblocking(False)
            self.poller.register(
                conn.raw, selectors.EVENT_READ, partial(self.on_linger_readable, conn)
            )
        except (OSError, ValueError, KeyError):
            self.forget(conn)
            return
        self.lingering.append((time.monotonic() + LINGER, conn))

    def on_linger_readable(self, conn: _Connection, _sock: Any) -> None:
        if conn.closed:
            return
        data = received(conn.raw, LINGER_BYTES)
        if data is None:
            return
        conn.drained += len(data)
        if not data or conn.drained >= LINGER_BYTES:
            self.poller.unregister(conn.raw)
            self.forget(conn)

    def forget(self, conn: _Connection) -> None:
        """Close a connection for good, and stop counting it for its client."""
        if conn.closed:
            return
        conn.closed = True
        conn.waiting = False
        util.close(conn.sock)
        self.connections_of[conn.client_key] -= 1
        if self.connections_of[conn.client_key] <= 0:
            del self.connections_of[conn.client_key]

    def finish_request(self, conn: _Connection, fs: Future[Any]) -> None:
        """After a request: close the connection, or wait in the poller for its next head."""
        try:
            keep = not fs.cancelled() and bool(fs.result())
        except Exception:  # handle() answers what it can; the rest closes
            keep = False
        if not keep:
            self.nr_conns -= 1
            conn.close(graceful=True)
            return
        # What the client sent behind the request (its next one) starts the next head.
        conn.head = bytearray(conn.parser.unreader.take_buffered())
        self.wait_for_head(conn)

    def handle(self, conn: _Connection) -> Any:
        """Serve one request (in a thread), its head read by the poller."""
        if not self.cfg.is_ssl:  # TLS ends at the proxy; the wrapper is for plain sockets
            if not isinstance(conn.sock, TimedSocket):
                conn.sock = TimedSocket(conn.sock, self.slow_writers)
            # A head longer than HEAD_BUFFER is read on by the same deadline.
            conn.sock.start_head(conn.head_deadline or time.monotonic() + HEAD_TIMEOUT)
        if conn.head:
            conn.init()  # the parser, made on the first request
            conn.parser.unreader.unread(bytes(conn.head))
            conn.head = bytearray()
        try:
            return super().handle(conn)
        finally:
            if isinstance(conn.sock, TimedSocket):
                conn.sock.release()

    def _keepalive_after(self, conn: Any, keepalive: Any) -> bool:
        """Whether a kept-alive connection can serve another request.

        gthread first reads what the app left of the body, for up to 5 s: a
        thread each for a client sending a body larger than the service
        reads (413), slowly. The poller has read every body it could, so
        what is left is read from the buffer or for :data:`DRAIN_TIMEOUT`
        only; a body still arriving closes the connection instead, its
        client's last bytes read in the poller (:meth:`linger`).
        """
        if not keepalive:
            return False
        return bool(conn.parser.finish_body(deadline=time.monotonic() + DRAIN_TIMEOUT))

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn.sock, TimedSocket):
            conn.sock.start_body(conn.body_deadline)
        if conn.continued:  # told already, by the poller
            req._expected_100_continue = False
        if not self.cfg.is_ssl and not conn.whole_body and has_body(req.headers):
            # Its body is not all read (too large, cut short, or late): the
            # connection closes after the answer, and the answer says so.
            req.must_close = True
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
