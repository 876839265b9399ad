"""What gunicorn runs around the standalone app (``gunicorn.conf.py`` names it).

- :class:`Worker`: gunicorn's threaded worker, changed so that a slow or
  silent client holds no thread. Its poller (the loop that accepts
  connections) reads each request head itself, without blocking, a
  connection's bytes buffered until the head is whole, and then the body
  the head announces (:func:`body_of`), and only then hands the connection
  to a thread, which parses the request from that buffer; a kept-alive
  connection's next request comes back the same way. A head has
  :data:`HEAD_TIMEOUT` seconds from its first byte (then 408), a body
  :data:`BODY_TIMEOUT` seconds from the head's end, a response
  :data:`RESPONSE_TIMEOUT` seconds to be taken by the client (a thread
  writes it; at most half the threads wait at once on clients taking their
  responses slowly, and past that such a connection is closed at once).
  A client address holds at most :attr:`Worker.max_connections_per_client`
  open connections in a worker; past that its new ones are closed at once,
  unanswered; and a worker holding as many connections as gunicorn (or
  ``ulimit -n``) lets it closes one waiting in the poller
  (:meth:`Worker.longest_waiting`) for each new one, where gthread would
  stop accepting (or end, out of files). Connections are closed gracefully
  in the poller too (gthread's own close waited for the client in its loop,
  up to 2 s). What gunicorn refuses before the app runs (a request line or
  headers too long, a malformed request) is answered with the same RFC 9457
  problem documents as the app's own errors, not gunicorn's HTML page.
- :class:`Logger`: gunicorn's logger, writing one JSON object per line: the
  access log (method, route, path, status, duration, bytes, client, request
  id) and gunicorn's own messages alike, each a plain-ASCII
  :func:`~sessionsvc.logs.json_line`, so nothing a client sends can start
  a line of its own or carry a terminal escape.

gunicorn is the ``server`` extra: only a gunicorn process imports this.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import secrets
import selectors
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from functools import partial
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
from .payloads import MAX_BODY
from .store.keys import address_group

#: Seconds a client has to send a request line and its headers, from their first byte.
HEAD_TIMEOUT = 10.0
#: Seconds a client has to send a request body (the service reads 64 KiB at most).
BODY_TIMEOUT = 30.0
#: Seconds a client has to take a response, from its request's end: a client
#: that stops reading holds a thread only that long (see Worker.slow_writers).
RESPONSE_TIMEOUT = 30.0
#: Bytes of a request head the poller holds for a connection. gunicorn's limits
#: allow heads of about 800 KiB: one not whole by then is read on by a thread,
#: by the same deadline.
HEAD_BUFFER = 64 * 1024
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
#: Bytes of a chunked request body the poller holds (room for the chunks'
#: framing around the largest body the service reads).
CHUNKED_BUFFER = 2 * MAX_BODY

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class HeadTimeout(http_errors.ParseException):
    """The client did not send its request line and headers in time."""


class ResponseTimeout(BrokenPipeError):
    """The client did not take its response in time, or took it slowly while
    enough threads already wait on such clients (closed like a client gone)."""

    def __init__(self, reason: str = "the response was not taken in time") -> None:
        super().__init__(errno.EPIPE, reason)


class _TimedSocket:
    """A connection's socket whose reads and writes end at deadlines.

    The worker starts a deadline for each request's head and then for its
    body. Reading the head past it raises :class:`HeadTimeout` (answered 408
    by :meth:`Worker.handle_error`); reading the body past it raises
    ``TimeoutError``, which the app takes as a client gone (400). Writing the
    response past its own deadline raises :class:`ResponseTimeout`, and the
    connection is closed. Everything else is the socket's own.
    """

    def __init__(self, sock: socket.socket, slow_writers: threading.Semaphore) -> None:
        self._sock = sock
        self.deadline = 0.0
        self.in_head = True
        self.send_deadline = 0.0
        self.timeout: float | None = None
        #: The worker's places for threads waiting on a client to take its
        #: response, and whether this request's thread holds one.
        self.slow_writers = slow_writers
        self.holding = False

    def start_head(self, deadline: float) -> None:
        self.deadline = deadline
        self.in_head = True
        self.send_deadline = 0.0

    def start_body(self, deadline: float | None = None) -> None:
        self.deadline = deadline or time.monotonic() + BODY_TIMEOUT
        self.in_head = False
        self.send_deadline = time.monotonic() + RESPONSE_TIMEOUT

    def sendall(self, data: Any) -> None:
        if self._sock.gettimeout() == 0.0:  # gunicorn's write_nonblock: as asked
            self._sock.sendall(data)
            return
        view = memoryview(data).cast("B")
        sent = 0
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while sent < len(view):  # what the socket's buffer takes now
                sent += self._sock.send(view[sent:], socket.MSG_DONTWAIT)
        if sent == len(view):
            return
        # The client takes it more slowly than it comes: wait for it, unless
        # enough threads wait on such clients already. The place is kept for
        # the rest of the request (Worker.handle gives it back), so a response
        # written in pieces is not cut off between two of them.
        if not self.holding:
            if not self.slow_writers.acquire(blocking=False):
                raise ResponseTimeout("the response was taken too slowly while the worker was busy")
            self.holding = True
        deadline = self.send_deadline or time.monotonic() + RESPONSE_TIMEOUT
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ResponseTimeout()
        self._sock.settimeout(remaining)
        try:
            self._sock.sendall(view[sent:])
        except TimeoutError:
            raise ResponseTimeout() from None
        finally:
            self._sock.settimeout(None)

    def release(self) -> None:
        """Give back the worker's place for waiting on this client, if taken."""
        if self.holding:
            self.holding = False
            self.slow_writers.release()

    def send(self, data: Any) -> int:
        self.sendall(data)
        return len(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """The file through :meth:`sendall`, so its deadline holds for the whole file
        (``socket.sendfile``'s timeout holds for each wait, however many)."""
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            chunk = file.read(65536 if count is None else min(65536, count - sent))
            if not chunk:
                break
            self.sendall(chunk)
            sent += len(chunk)
        return sent

    def settimeout(self, value: float | None) -> None:
        """A caller's own bound on each read (gunicorn's drain of an unread
        body sets one), kept within the deadline."""
        self.timeout = value

    def gettimeout(self) -> float | None:
        return self.timeout

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if self.timeout is not None:
            remaining = min(remaining, self.timeout)
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


def head_ready(head: bytes | bytearray, start: int, line_limit: int) -> bool:
    """Whether gunicorn's parser can act on ``head`` without waiting for more.

    ``start`` is where the bytes just added begin. True once the head has
    ended (an empty line), or holds what gunicorn refuses before its end (a
    bare LF, a request line over ``line_limit``), or fills :data:`HEAD_BUFFER`.
    """
    if len(head) >= HEAD_BUFFER or head.find(b"\r\n\r\n", max(start - 3, 0)) >= 0:
        return True
    if head.count(b"\n", start) != head.count(b"\r\n", max(start - 1, 0)):
        return True  # an LF without its CR among the new bytes
    return 0 < line_limit < len(head) - 2 and head.find(b"\n", 0, line_limit + 3) < 0


class _Body:
    """The body the poller waits for behind a whole head (see :func:`body_of`)."""

    def __init__(self, start: int, length: int | None) -> None:
        self.start = start
        #: Its Content-Length; None: chunked.
        self.length = length
        #: Chunked: where the next chunk's size line starts, and how far the
        #: trailers have been searched for their end.
        self.at = start
        self.searched = start
        #: Chunked: larger than the poller holds, so cut short (see Worker.add_to_head).
        self.overflowed = False

    def arrived(self, data: bytearray) -> bool:
        """Whether a thread can take it: all of it has come, or it is
        malformed (gunicorn refuses it) or larger than the poller holds."""
        if self.length is not None:
            return len(data) >= self.start + self.length
        if len(data) - self.start > CHUNKED_BUFFER:
            self.overflowed = True
            return True
        while True:
            end = data.find(b"\r\n", self.at, self.at + 1024)
            if end < 0:
                return len(data) - self.at > 1024  # a size line that long is refused
            size = bytes(data[self.at : end]).split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size):
                return True
            if int(size, 16) == 0:  # the last chunk, then trailers up to an empty line
                ended = data.find(b"\r\n\r\n", max(end, self.searched - 3)) >= 0
                self.searched = len(data)
                return ended
            following = end + 2 + int(size, 16) + 2
            if following > len(data):
                return False
            self.at = following


def body_of(head: bytearray, line_limit: int = 0) -> tuple[_Body, bool] | None:
    """The body a whole request head announces, for the poller to wait for,
    and whether the client waits for ``100 Continue`` before sending it.

    None when there is none, or when gunicorn refuses the head (a bare LF, a
    request line over ``line_limit``, a framing it does not accept), or when
    the service refuses the body unread (a Content-Length over
    ``MAX_BODY``): then a thread takes the request at once, as before.
    """
    end = head.find(b"\r\n\r\n")
    if end < 0 or head.count(b"\n", 0, end) != head.count(b"\r\n", 0, end):
        return None
    lines = bytes(head[:end]).split(b"\r\n")
    if not lines[0]:  # the one empty line gunicorn allows before a request
        lines.pop(0)
    if not lines or 0 < line_limit < len(lines[0]):
        return None
    length: int | None = None
    chunked = expect = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.lower(), value.strip().lower()
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            if chunked or value != b"chunked":
                return None
            chunked = True
        elif name == b"expect":
            expect = value == b"100-continue" and lines[0].endswith(b"HTTP/1.1")
    if chunked and length is None:
        return _Body(end + 4, None), expect
    if chunked or not length or length > MAX_BODY:
        return None
    return _Body(end + 4, length), expect


def has_body(headers: list[tuple[str, str]]) -> bool:
    """Whether a request's headers (gunicorn's, names in capitals) announce a body."""
    return any(
        name == "TRANSFER-ENCODING" or (name == "CONTENT-LENGTH" and value.strip() != "0")
        for name, value in headers
    )


def received(sock: socket.socket, size: int) -> bytes | None:
    """What a non-blocking socket has to read: None if nothing yet, b"" once
    the client has closed it (or it failed)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def client_of(addr: Any) -> str | None:
    """Whose connection this is, for the cap on connections per client.

    An IPv4 address, also when a dual-stack socket shows it IPv4-mapped
    (``::ffff:a.b.c.d``), or the /64 network of an IPv6 one (one
    subscriber's, as for the login limits); ``None`` on a Unix socket.
    """
    if not isinstance(addr, tuple) or not addr:
        return None
    try:
        return address_group(addr[0])
    except ValueError:
        return str(addr[0])


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
        self.body: _Body | None = None
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
        return self.sock._sock if isinstance(self.sock, _TimedSocket) else self.sock

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
            if not isinstance(conn.sock, _TimedSocket):
                conn.sock = _TimedSocket(conn.sock, self.slow_writers)
            # A head longer than HEAD_BUFFER is read on by the same deadline.
            conn.sock.start_head(conn.head_deadline or time.monotonic() + HEAD_TIMEOUT)
        if conn.head:
            conn.init()  # the parser, made on the first request
            conn.parser.unreader.unread(bytes(conn.head))
            conn.head = bytearray()
        try:
            return super().handle(conn)
        finally:
            if isinstance(conn.sock, _TimedSocket):
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
        if isinstance(conn.sock, _TimedSocket):
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
