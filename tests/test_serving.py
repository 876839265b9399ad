"""The standalone service as shipped: gunicorn with gunicorn.conf.py, over real sockets.

One test (or one table) per serving rule: slow and silent clients, heads
and bodies read whole in the poller, clients that read their answers
slowly or not at all, what a full worker (or one short of files) closes,
the cap on connections per client address, what
gunicorn refuses, uncached token answers, JSON access lines that no client
byte can break, only our Swagger UI, the Bearer scheme in any case, /metrics
counted under the run command and only for whom it is meant, and no shared
control socket.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionsvc.serving.sockets import (
    HEAD_BUFFER,
    HEAD_TIMEOUT,
    ResponseTimeout,
    TimedSocket,
    body_of,
    client_of,
)
from tests.backends import served
from tests.clients import CHROME, http
from tests.servers import Gunicorn, service_env

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
METRICS_TOKEN = "scrape-" + secrets.token_urlsafe(16)
CREATE_ALICE = ("sessions", "create-user", "alice", "--password-stdin")


@pytest.fixture(scope="module")
def shipped(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """The service as ``make run`` starts it (default worker count), on the real
    Redis under a key prefix of its own, with user alice; HOME is a fresh folder."""
    home = tmp_path_factory.mktemp("home")
    with served(
        redis_url,
        {"alice": PASSWORD},
        workers=None,
        SESSIONSVC_LOGIN_RATE_LIMIT="",
        HOME=str(home),
    ) as service:
        yield service


def raw(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send bytes as they are; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def login(base: str) -> dict[str, Any]:
    status, tokens = http(
        "POST",
        f"{base}/api/v1/auth/login",
        body={"username": "alice", "password": PASSWORD},
        user_agent=CHROME,
    )
    assert status == 200, tokens
    return tokens


def get_healthz(port: int) -> float:
    started = time.perf_counter()
    status, _, _ = parse(
        raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert status == 200
    return time.perf_counter() - started


def assert_healthz_prompt(port: int) -> None:
    """Ten GET /healthz, once the connections just opened have settled, each under 1 s."""
    time.sleep(0.5)
    delays = [get_healthz(port) for _ in range(10)]
    assert max(delays) < 1.0, delays


# -- 1. slow clients -------------------------------------------------------------


def test_forty_slow_clients_delay_nobody_and_are_cut_off(shipped: Gunicorn) -> None:
    # More than both workers' threads together (2 x 16): their heads are read
    # by the workers' pollers, and no thread is taken until a head is whole.
    stop = threading.Event()
    answers: list[bytes] = []
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200

    def slow() -> None:
        with socket.create_connection(("127.0.0.1", shipped.port), timeout=30) as sock:
            for byte in head:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break  # cut off
                if stop.wait(1.0):
                    return
            answers.append(sock.recv(65536))

    clients = [threading.Thread(target=slow, daemon=True) for _ in range(40)]
    started = time.monotonic()
    for client in clients:
        client.start()
    time.sleep(1.5)  # all forty are sending
    delays = []
    while time.monotonic() - started < HEAD_TIMEOUT - 2:
        delays.append(get_healthz(shipped.port))
        time.sleep(0.2)
    assert len(delays) > 20
    assert max(delays) < 1.0, delays
    # Past the deadline for their headers, each is answered 408 and closed.
    for client in clients:
        client.join(HEAD_TIMEOUT + 10)
    stop.set()
    assert len(answers) == 40
    for answer in answers:
        status, headers, body = parse(answer)
        assert status == 408
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "request_timeout"
    assert time.monotonic() - started < HEAD_TIMEOUT + 5


def test_forty_silent_connections_hold_no_thread_and_are_closed(shipped: Gunicorn) -> None:
    # More than both workers' threads together (2 x 16).
    silent = [socket.create_connection(("127.0.0.1", shipped.port)) for _ in range(40)]
    try:
        assert_healthz_prompt(shipped.port)
        # The keep-alive timeout (5 s) closes them, answered with nothing.
        for sock in silent:
            sock.settimeout(10)
            assert sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()


def test_clients_that_keep_their_side_open_after_the_answer_delay_nobody(
    shipped: Gunicorn,
) -> None:
    # An answer that closes the connection waits up to 2 s for the client to
    # close its side too; gthread waited in its loop, holding up everything.
    stop = threading.Event()

    def lingering() -> None:
        with socket.create_connection(("127.0.0.1", shipped.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    sock.sendall(b"x")  # never closes, and keeps the server reading
                except OSError:
                    return

    clients = [threading.Thread(target=lingering, daemon=True) for _ in range(20)]
    for client in clients:
        client.start()
    try:
        assert_healthz_prompt(shipped.port)
    finally:
        stop.set()


def test_forty_slow_bodies_delay_nobody(shipped: Gunicorn) -> None:
    # A whole head, then its body a byte a second: the poller reads bodies
    # too, so a thread is taken only once one has all arrived. Read by
    # threads, forty of them had held both workers' 32 threads for the
    # body's 30 s (/healthz 29 s).
    # No username: answered without a password hash (40 at once would be busy).
    body = json.dumps({"password": "x" * 20, "padding": "y" * 20}).encode()
    framings = {
        "length": (b"Content-Length: %d\r\n" % len(body), [body[:1], body[1:2], body[2:]]),
        "chunked": (
            b"Transfer-Encoding: chunked\r\n",
            [
                b"1\r\n" + body[:1],
                b"\r\n1\r\n" + body[1:2] + b"\r",
                b"\n%x\r\n" % (len(body) - 2) + body[2:] + b"\r\n0\r\n\r\n",
            ],
        ),
    }
    clients = []
    for n in range(40):
        framing, pieces = framings["chunked" if n % 2 else "length"]
        sock = connect(shipped.port, f"127.0.0.{10 + n % 20}")
        sock.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n" + framing + b"\r\n" + pieces[0]
        )
        clients.append((sock, pieces))
    try:
        for piece in range(1, 3):
            assert_healthz_prompt(shipped.port)
            for sock, pieces in clients:
                sock.sendall(pieces[piece])
        # Each body, once whole, is served: read whole, it lacks the username.
        for sock, _ in clients:
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            status, _, text = parse(answer)
            problem = json.loads(text)
            assert (status, problem["code"]) == (400, "invalid_request")
            assert "username" in problem["detail"]
    finally:
        for sock, _ in clients:
            sock.close()


def test_forty_bodies_too_large_to_read_delay_nobody(shipped: Gunicorn) -> None:
    # A body over the 64 KiB the service reads is refused unread (413), and
    # the rest of it is not waited for by a thread: the connection closes, its
    # last bytes read in the poller. A thread had waited on each for the
    # body's 30 s.
    clients = []
    try:
        for n in range(40):
            sock = connect(shipped.port, f"127.0.0.{10 + n % 20}")
            sock.sendall(
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{"
            )
            clients.append(sock)
        assert_healthz_prompt(shipped.port)
        for sock in clients:
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            status, headers, text = parse(answer)
            assert (status, json.loads(text)["code"]) == (413, "payload_too_large")
            assert headers["connection"] == "close"  # its body is not read
    finally:
        for sock in clients:
            sock.close()


def test_a_chunked_body_in_more_framing_than_the_poller_holds_is_cut_short(
    shipped: Gunicorn,
) -> None:
    # One-byte chunks: 128 KiB of framing for 22 KB of body. A thread given
    # the rest to read would wait on the client for the body's 30 s.
    framing = b"1\r\n \r\n" * 22_000
    assert len(framing) > 2 * 64 * 1024
    with connect(shipped.port) as sock:
        sock.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + framing
        )
        sock.settimeout(5)  # and sends no more, its connection open
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, headers, text = parse(answer)
    assert (status, json.loads(text)["code"]) == (400, "invalid_request")
    assert headers["connection"] == "close"


def test_a_body_the_client_sends_after_100_continue_is_served(shipped: Gunicorn) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    with socket.create_connection(("127.0.0.1", shipped.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nUser-Agent: " + CHROME.encode() + b"\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    # Told once (by the poller), not again by the thread that serves it.
    assert b"100 Continue" not in answer
    assert parse(answer)[0] == 200


def test_the_poller_waits_for_the_body_a_head_announces() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n"
    request = bytearray(head % b"Content-length:  5 \r\nExpect: 100-Continue")
    announced = body_of(request)
    assert announced is not None
    length, expect = announced
    assert expect
    assert not length.arrived(request + b"abcd")
    assert length.arrived(request + b"abcdeGET")
    # Chunked, read on from where the last piece ended; extensions and trailers.
    announced = body_of(bytearray(head % b"Transfer-Encoding: chunked"))
    assert announced is not None and not announced[1]
    chunked = announced[0]
    request = bytearray(head % b"Transfer-Encoding: chunked")
    for piece, whole in [
        (b"3;x=y\r\nab", False),
        (b"c\r\n", False),
        (b"0\r\nX-Trailer: 1\r\n", False),
        (b"\r\n", True),
    ]:
        request += piece
        assert chunked.arrived(request) is whole
    # A malformed chunk is gunicorn's to refuse: a thread takes it at once.
    assert body_of(bytearray(head % b"Transfer-Encoding: chunked"))[0].arrived(  # type: ignore[index]
        bytearray(head % b"Transfer-Encoding: chunked") + b"zz\r\n"
    )
    # No body, or one refused unread, or a head gunicorn refuses: no wait.
    for fields in (
        b"Content-Length: 0",
        b"Content-Length: 65537",
        b"Content-Length: -1",
        b"Content-Length: 5\r\nContent-Length: 5",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"X-Other: 1",
        b"Content-Length: 5\r\nX-Bare: a\nb",
    ):
        assert body_of(bytearray(head % fields)) is None, fields
    assert (
        body_of(bytearray(b"POST /%s HTTP/1.1\r\nContent-Length: 5\r\n\r\n" % (b"a" * 50)), 40)
        is None
    )


def test_a_client_that_stops_reading_holds_a_thread_only_until_the_response_deadline() -> None:
    server, client = socket.socketpair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    timed = TimedSocket(server, threading.BoundedSemaphore(1))
    outcome: list[BaseException] = []

    def write(send: Any) -> None:
        timed.send_deadline = time.monotonic() + 0.5
        try:
            send()
        except OSError as exc:
            outcome.append(exc)

    with open("/dev/zero", "rb") as zeros:
        try:
            for send in (
                lambda: timed.sendall(b"x" * 8_000_000),
                lambda: timed.sendfile(zeros, 0, 8_000_000),
            ):
                writer = threading.Thread(target=write, args=(send,), daemon=True)
                started = time.monotonic()
                writer.start()
                writer.join(5)
                assert not writer.is_alive()
                assert isinstance(outcome.pop(), ResponseTimeout)
                assert time.monotonic() - started < 2
        finally:
            client.close()
            server.close()


def test_threads_wait_on_clients_that_stop_reading_only_up_to_their_share() -> None:
    # One thread waits on a client that reads nothing; with no other place
    # left, a second such client is closed at once instead of holding one more.
    places = threading.BoundedSemaphore(1)
    pairs = [socket.socketpair() for _ in range(3)]
    first, second, third = (TimedSocket(server, places) for server, _ in pairs)
    waited: list[BaseException] = []

    def wait_on_first() -> None:
        first.send_deadline = time.monotonic() + 3
        try:
            first.sendall(b"x" * 8_000_000)
        except OSError as exc:
            waited.append(exc)

    writer = threading.Thread(target=wait_on_first, daemon=True)
    writer.start()
    try:
        time.sleep(0.3)  # the first holds the place
        second.send_deadline = time.monotonic() + 3
        started = time.monotonic()
        with pytest.raises(ResponseTimeout, match="busy"):
            second.sendall(b"x" * 8_000_000)
        assert time.monotonic() - started < 0.5
        # What the buffer takes at once needs no place.
        third.sendall(b"y" * 100)
        assert pairs[2][1].recv(1000) == b"y" * 100
        writer.join(5)
        assert isinstance(waited.pop(), ResponseTimeout)
        # The first kept its place through the end of its request.
        with pytest.raises(ResponseTimeout, match="busy"):
            second.sendall(b"x" * 8_000_000)
        first.release()
        second.send_deadline = time.monotonic() + 0.3
        with pytest.raises(ResponseTimeout, match="in time"):
            second.sendall(b"x" * 8_000_000)
        second.release()
    finally:
        for server, client in pairs:
            client.close()
            server.close()


def test_forty_clients_that_read_no_answer_delay_nobody(shipped: Gunicorn) -> None:
    # Each asks for the Swagger UI bundle (1.7 MB) four times at once and
    # reads nothing: the answers fill the socket buffers and the threads
    # writing them wait. Before, all 32 threads waited for good.
    request = b"GET /docs/assets/swagger-ui/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n"
    readers = []
    try:
        for n in range(40):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind((f"127.0.0.{10 + n % 20}", 0))
            sock.connect(("127.0.0.1", shipped.port))
            sock.sendall(request * 4)
            readers.append(sock)
        assert_healthz_prompt(shipped.port)
    finally:
        for sock in readers:
            sock.close()


def send_slowly(sock: socket.socket, data: bytes, pieces: int) -> None:
    """``data`` in ``pieces`` packets, a little apart."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        sock.sendall(data[start : start + size])
        time.sleep(0.01)


def test_a_head_in_many_packets_is_read_whole(shipped: Gunicorn) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    request = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nUser-Agent: " + CHROME.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", shipped.port), timeout=10) as sock:
        send_slowly(sock, request, 60)  # the empty line ending it split too
        send_slowly(sock, body, 5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, body = parse(answer)
    assert status == 200
    assert json.loads(body)["token_type"] == "Bearer"


def test_a_head_larger_than_the_poller_holds_is_served(shipped: Gunicorn) -> None:
    # Within gunicorn's limits (100 headers of 8190 bytes), past HEAD_BUFFER.
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(90))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"
    assert len(request) > HEAD_BUFFER
    with socket.create_connection(("127.0.0.1", shipped.port), timeout=10) as sock:
        send_slowly(sock, request, 20)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert parse(answer)[0] == 200


def test_a_kept_alive_connection_serves_requests_sent_apart_and_pipelined(
    shipped: Gunicorn,
) -> None:
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", shipped.port), timeout=HEAD_TIMEOUT + 5) as sock,
        sock.makefile("rb") as file,
    ):

        def answer() -> tuple[int, bytes]:
            status = int(file.readline().split()[1])
            length = 0
            while (line := file.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            return status, file.read(length)

        for _ in range(3):  # each sent once the last is answered
            sock.sendall(healthz)
            assert answer() == (200, b'{"status":"ok"}\n')
            time.sleep(0.2)
        # Two at once, the second head cut in two: it waits in the poller.
        sock.sendall(healthz + healthz[:10])
        assert answer()[0] == 200
        time.sleep(0.3)
        send_slowly(sock, healthz[10:], 4)
        assert answer()[0] == 200
        # A kept-alive connection's next head has its deadline too.
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        status, _ = answer()
        assert status == 408
        assert HEAD_TIMEOUT - 0.5 <= time.monotonic() - started < HEAD_TIMEOUT + 3
        assert file.read() == b""


@pytest.fixture(scope="module")
def capped(redis_url: str) -> Iterator[Gunicorn]:
    """One worker, five connections per client address."""
    with served(
        redis_url, {}, workers=1, SESSIONSVC_MAX_CONNECTIONS_PER_CLIENT=str(CAP)
    ) as service:
        yield service


CAP = 5


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def test_a_client_address_holds_at_most_the_cap_of_connections(capped: Gunicorn) -> None:
    held = [connect(capped.port, "127.0.0.3") for _ in range(CAP)]
    try:
        time.sleep(0.3)
        # The next one from that address is closed at once, unanswered.
        with connect(capped.port, "127.0.0.3") as refused:
            assert refused.recv(65536) == b""
        # Another address is served.
        assert get_healthz(capped.port) < 1.0
        # A connection closed makes room for one more.
        held.pop().close()
        time.sleep(0.3)
        with connect(capped.port, "127.0.0.3") as again:
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert again.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


@pytest.fixture(scope="module")
def small(redis_url: str) -> Iterator[Gunicorn]:
    """One worker of 40 connections."""
    with served(redis_url, {}, workers=1, GUNICORN_CMD_ARGS="--worker-connections 40") as service:
        yield service


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
def test_a_full_worker_closes_its_longest_waiting_connection_for_a_new_one(
    small: Gunicorn, sent: bytes
) -> None:
    # gthread stops accepting at worker_connections: connections from a few
    # addresses, each under the cap, that send nothing or send their heads
    # slowly (a real client's arrives at once) would keep everyone else out.
    waiting = []
    try:
        for n in range(60):
            waiting.append(connect(small.port, f"127.0.0.{4 + n % 3}"))
            waiting[-1].sendall(sent)
            time.sleep(0.005)  # each one's bytes read before the next is accepted
        assert_healthz_prompt(small.port)
        # The first ones made room, answered with nothing; the last are open.
        for sock in waiting:
            sock.settimeout(0.2)
        assert waiting[0].recv(1) == b""
        with pytest.raises(TimeoutError):
            waiting[-1].recv(1)
    finally:
        for sock in waiting:
            sock.close()


def test_a_full_worker_closes_a_connection_waiting_for_its_body_past_the_heads_deadline(
    small: Gunicorn,
) -> None:
    # Whole heads, then bodies that do not come: past the heads' 10 s they
    # wait only for their bodies' 30 s, and must still make room.
    waiting = []
    try:
        for n in range(40):
            waiting.append(connect(small.port, f"127.0.0.{4 + n % 3}"))
            waiting[-1].sendall(
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
        time.sleep(HEAD_TIMEOUT + 0.5)
        # An idle client takes the last place; the next must still get in.
        waiting.append(connect(small.port, "127.0.0.8"))
        assert_healthz_prompt(small.port)
    finally:
        for sock in waiting:
            sock.close()


def test_a_full_worker_reads_a_request_that_came_with_a_new_connection_before_closing(
    small: Gunicorn,
) -> None:
    # The connection silent the longest makes room for a new one, unless its
    # request has just arrived: it is served, not closed unanswered.
    held = [connect(small.port, f"127.0.0.{4 + n % 3}") for n in range(45)]
    try:
        time.sleep(0.3)
        for sock in held:
            sock.setblocking(False)
        live = []
        for sock in held:
            try:
                sock.recv(1)
            except BlockingIOError:
                live.append(sock)  # not closed to make room
        [worker] = (
            Path(f"/proc/{small.proc.pid}/task/{small.proc.pid}/children").read_text().split()
        )
        os.kill(int(worker), signal.SIGSTOP)
        try:
            # While the worker is stopped: a new connection, then a request on
            # each open one, all seen in the same poll, the new one first.
            newcomer = connect(small.port, "127.0.0.7")
            held.append(newcomer)
            for sock in live:
                sock.setblocking(True)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        finally:
            os.kill(int(worker), signal.SIGCONT)
        for sock in [*live, newcomer]:
            if sock is newcomer:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert parse(answer)[0] == 200
    finally:
        for sock in held:
            sock.close()


def test_a_worker_holds_no_more_connections_than_it_may_open_files(redis_url: str) -> None:
    # ulimit -n below worker_connections (1000): accepting past it failed with
    # EMFILE, which ended the worker and every request it was serving.
    env = service_env(
        SESSIONSVC_REDIS_URL=redis_url,
        SESSIONSVC_KEY_PREFIX=f"sessionsvc-test-{secrets.token_hex(6)}",
        JWT_SECRET_KEY="test-" + secrets.token_urlsafe(32),
    )
    service = Gunicorn(env, workers=1, open_files=300).start()
    silent = []
    try:
        for n in range(400):  # five addresses, each under the cap
            sock = socket.socket()
            silent.append(sock)
            sock.bind((f"127.0.0.{20 + n % 5}", 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", service.port))
        assert_healthz_prompt(service.port)
        output = service.output()
        assert output.count("Booting worker") == 1, output[-2000:]
        assert "ulimit -n is 300: a worker holds at most 204 connections, not 1000" in output
    finally:
        for sock in silent:
            sock.close()
        service.stop()


def test_connections_are_counted_by_client() -> None:
    assert client_of(("203.0.113.9", 5000)) == "203.0.113.9"
    # A dual-stack socket shows an IPv4 client IPv4-mapped: counted as itself.
    assert client_of(("::ffff:203.0.113.9", 5000, 0, 0)) == "203.0.113.9"
    assert client_of(("::ffff:cb00:7109", 5000, 0, 0)) == "203.0.113.9"
    # An IPv6 client by its /64, which it picks addresses from.
    assert client_of(("2001:db8:1:2::5", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert client_of(("2001:db8:1:2:ffff::9", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert client_of("") is None  # a Unix socket


# -- 2. what gunicorn refuses is a problem document too -------------------------------

REFUSED = {
    "header too large": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    "request line too long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "control byte in a header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", 400),
    # Refused at once, not after waiting for the body they announce.
    "bare LF before a body": (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX: a\nb\r\n\r\n",
        400,
    ),
    "request line too long before a body": (
        b"POST /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        414,
    ),
    "Content-Length with Transfer-Encoding": (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "too many headers, past what the poller holds": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(120))
        + b"\r\n",
        431,
    ),
    "too many headers": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"\r\n",
        431,
    ),
    "not HTTP at all": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    "bad method": (b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "space before the colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", REFUSED)
def test_what_gunicorn_refuses_is_a_problem_document(shipped: Gunicorn, case: str) -> None:
    request, expected = REFUSED[case]
    status, headers, body = parse(raw(shipped.port, request))
    assert status == expected
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert problem["status"] == expected
    assert (
        problem["code"]
        in {
            400: ("invalid_request",),
            414: ("request_uri_too_long",),
            431: ("request_header_fields_too_large",),
        }[expected]
    )
    assert b"<html" not in body.lower()
    # The service is still there.
    assert get_healthz(shipped.port) < 1.0


# -- 3. token answers are not cached -------------------------------------------------


def test_token_and_session_answers_say_no_store(shipped: Gunicorn) -> None:
    tokens = login(shipped.base)
    request = (
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n{body}"
    )
    body = json.dumps({"username": "alice", "password": PASSWORD})
    status, headers, _ = parse(raw(shipped.port, request.format(n=len(body), body=body).encode()))
    assert (status, headers["cache-control"]) == (200, "no-store")
    listing = (
        "GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {tokens['access_token']}\r\nUser-Agent: {CHROME}\r\n\r\n"
    )
    status, headers, _ = parse(raw(shipped.port, listing.encode()))
    assert (status, headers["cache-control"]) == (200, "no-store")


# -- 4. access lines are JSON, and no client byte breaks them -----------------------------


def test_access_lines_are_json_and_client_bytes_cannot_forge_or_color_them(
    shipped: Gunicorn,
) -> None:
    marker = secrets.token_hex(6)
    user = f'{marker}\n{{"forged": true}}\x1b[31mred\r\x00'
    basic = base64.b64encode(f"{user}:pw".encode()).decode()
    request = (
        f"GET /healthz/%0a%1b%5b31m%e2%80%a8{marker}?q=%0a HTTP/1.1\r\n"
        "Host: x\r\nConnection: close\r\n"
        f"Authorization: Basic {basic}\r\nX-Request-Id: {marker}\r\n"
        f"User-Agent: {marker}\u00e9\u2028\r\n\r\n"
    )
    status, headers, _ = parse(raw(shipped.port, request.encode("utf-8")))
    assert status == 404
    assert headers["x-request-id"] == marker
    deadline = time.monotonic() + 10
    while marker not in shipped.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    output = shipped.output()
    for byte in ("\x1b", "\x00", "\r", "\u2028", "\u0085"):
        assert byte not in output, repr(byte)
    lines = output.splitlines()
    records = [json.loads(line) for line in lines]  # every line, the service's and gunicorn's
    assert all(isinstance(record, dict) for record in records)
    [access] = [r for r in records if r.get("request_id") == marker]
    assert access["logger"] == "access"
    assert access["method"] == "GET"
    assert access["status"] == 404
    assert access["route"] is None  # matched no route: the path is logged instead
    assert access["path"] == f"/healthz/\n\x1b[31m\u2028{marker}"  # JSON-escaped on the line
    assert access["client"] == "127.0.0.1"
    assert isinstance(access["duration_ms"], float) and access["bytes"] > 0
    assert not any("forged" in record for record in records)
    login(shipped.base)
    routed = [json.loads(line) for line in shipped.output().splitlines()]
    assert any(r.get("route") == "/api/v1/auth/login" and r["status"] == 200 for r in routed)


def test_a_refused_request_is_logged_as_json_without_what_it_sent(shipped: Gunicorn) -> None:
    marker = secrets.token_hex(6)
    status, _, _ = parse(
        raw(shipped.port, f"GET / HTTP/1.1\r\nHost: x\r\nX-{marker}: \x1b[31m\x01\r\n\r\n".encode())
    )
    assert status == 400
    time.sleep(0.5)
    output = shipped.output()
    assert marker not in output and "\x1b" not in output
    assert all(isinstance(json.loads(line), dict) for line in output.splitlines())


# -- 5. only our Swagger UI, and /docs protected ---------------------------------------


def test_only_the_shipped_swagger_ui_is_served(shipped: Gunicorn) -> None:
    for path in ("/flasgger_static/swagger-ui-bundle.js", "/flasgger_static/lib/jquery.min.js"):
        status, body = http("GET", shipped.base + path)
        assert (status, body["code"]) == (404, "not_found")
    status, headers, page = parse(
        raw(shipped.port, b"GET /docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert status == 200
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert b"/docs/assets/swagger-ui/swagger-ui-bundle.js" in page


# -- 6. the Bearer scheme in any case ----------------------------------------------------


def test_bearer_in_lower_case_is_accepted(shipped: Gunicorn) -> None:
    tokens = login(shipped.base)
    request = (
        "GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: bearer {tokens['access_token']}\r\nUser-Agent: {CHROME}\r\n\r\n"
    )
    status, _, body = parse(raw(shipped.port, request.encode()))
    assert status == 200
    assert tokens["session_id"] in {s["id"] for s in json.loads(body)["sessions"]}


# -- 7. /metrics only for whom it is meant ---------------------------------------------


@pytest.fixture
def behind_a_proxy(redis_url: str) -> Iterator[Gunicorn]:
    """The service behind one trusted proxy, with a metrics token."""
    with served(redis_url, {}, workers=1, SESSIONSVC_TRUSTED_PROXIES="1") as service:
        yield service


def metrics_status(port: int, *headers: str) -> int:
    head = "".join(f"{header}\r\n" for header in headers)
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{head}\r\n"
    return parse(raw(port, request.encode()))[0]


def test_metrics_are_for_loopback_or_a_token(shipped: Gunicorn, behind_a_proxy: Gunicorn) -> None:
    assert metrics_status(shipped.port) == 200  # we are on loopback
    # Behind a trusted proxy, the forwarded client decides.
    assert metrics_status(behind_a_proxy.port, "X-Forwarded-For: 203.0.113.9") == 404
    assert metrics_status(behind_a_proxy.port, "X-Forwarded-For: 127.0.0.1") == 200


def test_a_metrics_token_opens_them_to_other_addresses(redis_url: str) -> None:
    with served(
        redis_url,
        {},
        workers=1,
        SESSIONSVC_TRUSTED_PROXIES="1",
        SESSIONSVC_METRICS_TOKEN=METRICS_TOKEN,
    ) as service:
        remote = "X-Forwarded-For: 203.0.113.9"
        assert metrics_status(service.port, remote) == 404
        assert metrics_status(service.port, remote, "Authorization: Bearer wrong-token") == 404
        assert metrics_status(service.port, remote, f"Authorization: Bearer {METRICS_TOKEN}") == 200
        assert METRICS_TOKEN not in service.output()


def test_the_shipped_config_comes_before_prometheus_client() -> None:
    # gunicorn imports sessionsvc.gunicorn_config (and with it the package's
    # __init__) first: prometheus_client, imported by the app's modules,
    # must find PROMETHEUS_MULTIPROC_DIR set, or every worker counts alone
    # and /metrics is empty.
    script = (
        "import os, sys, sessionsvc.gunicorn_config; "
        "print('prometheus_client' in sys.modules, bool(os.environ['PROMETHEUS_MULTIPROC_DIR']))"
    )
    env = service_env()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_metrics_count_under_the_run_command_as_shipped() -> None:
    # `make run` exactly: the embedded store, and no PROMETHEUS_MULTIPROC_DIR
    # (gunicorn.conf.py makes one before gunicorn imports prometheus_client).
    env = service_env()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    service = Gunicorn(env, workers=None).start()
    try:
        created = service.flask(*CREATE_ALICE, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        login(service.base)
        status, _, body = parse(
            raw(service.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        assert status == 200
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }
        assert samples["sessionsvc_sessions_opened_total"] >= 1
        # Whichever worker answers, the scrape sums both: every /healthz
        # either one logged is counted once.
        answered_by: set[int] = set()
        for _ in range(200):
            get_healthz(service.port)
            lines = [json.loads(line) for line in service.output().splitlines()]
            healthz = [r for r in lines if r.get("route") == "/healthz" and r["status"] == 200]
            answered_by = {r["pid"] for r in healthz}
            if len(answered_by) == 2 and len(healthz) >= 10:
                break
        assert len(answered_by) == 2
        _, _, body = parse(
            raw(service.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        counted = {
            sample.labels["route"]: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "sessionsvc_http_requests_total" and sample.labels["status"] == "200"
        }
        # (A line is written just after its answer: wait for the last ones.)
        deadline = time.monotonic() + 5
        while counted["/healthz"] != len(healthz) and time.monotonic() < deadline:
            time.sleep(0.1)
            lines = [json.loads(line) for line in service.output().splitlines()]
            healthz = [r for r in lines if r.get("route") == "/healthz" and r["status"] == 200]
        assert counted["/healthz"] == len(healthz)
    finally:
        service.stop()


# -- 8. no control socket shared between services ------------------------------------------


def test_two_services_on_one_host_share_no_control_socket(
    shipped: Gunicorn, redis_url: str
) -> None:
    home = Path(shipped.env["HOME"])
    second = Gunicorn({**shipped.env}, workers=1).start()
    try:
        assert get_healthz(second.port) < 1.0
        assert get_healthz(shipped.port) < 1.0
        # gunicorn's default would be ~/.gunicorn/gunicorn.ctl for both.
        assert not (home / ".gunicorn").exists()
        assert "control" not in (shipped.output() + second.output()).lower()
    finally:
        second.stop()
