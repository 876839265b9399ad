"""What a worker reads and writes on a connection: deadlines on its socket
(:class:`TimedSocket`), where a request's head and body end
(:func:`head_ready`, :func:`body_of`), and whose connection it is
(:func:`client_of`, for the cap per client address)."""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import threading
import time
from typing import Any

from gunicorn.http import errors as http_errors

from ..payloads import MAX_BODY
from ..store.keys import address_group

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


class TimedSocket:
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


class Body:
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


def body_of(head: bytearray, line_limit: int = 0) -> tuple[Body, bool] | None:
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
        return Body(end + 4, None), expect
    if chunked or not length or length > MAX_BODY:
        return None
    return Body(end + 4, length), expect


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
