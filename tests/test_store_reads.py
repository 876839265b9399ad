"""sessionsvc.store.reads: the revocation check's read straight on a
connection of its own, exactly what ``execute_command`` would do."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionsvc.store import client_factory_from_url
from sessionsvc.store.reads import (
    _DIRECT,
    _CheckConnections,
    _may_read_directly,
    close_client,
    read_fields,
)
from tests.servers import RedisProcess

FIELDS = ("t", "ip", "b", "o", "an")


def ours(server: RedisProcess, timeout: float = 1.0) -> redis.Redis:
    return client_factory_from_url(server.url, timeout=timeout)()


def pool_sizes(client: redis.Redis) -> tuple[int, int]:
    pool = client.connection_pool
    return len(pool._available_connections), len(pool._in_use_connections)  # type: ignore[attr-defined]


def check_connections(client: redis.Redis) -> _CheckConnections:
    connections = getattr(client, _DIRECT)
    assert isinstance(connections, _CheckConnections)
    return connections


def race_on_idle(
    connections: _CheckConnections, method: str, meanwhile: Callable[[], object]
) -> list[bool]:
    """Make the idle list's ``method`` run ``meanwhile`` first, once: another
    thread's step landing between two of ours. Says (non-empty) when it ran."""
    raced: list[bool] = []

    def racing(self: list[object], *args: object) -> object:
        if not raced:
            raced.append(True)
            meanwhile()
        return getattr(list, method)(self, *args)

    connections.idle = type("Racing", (list,), {method: racing})(connections.idle)
    return raced


def test_a_client_of_ours_reads_as_execute_command_does(own_redis: RedisProcess) -> None:
    client = ours(own_redis)
    assert _may_read_directly(client)
    client.hset("s", mapping={"t": "1700000000", "b": "Chrome", "an": "é"})
    client.set("plain", "x")
    expected = client.execute_command("HMGET", "s", *FIELDS)
    assert read_fields(client, "s", FIELDS) == expected == ["1700000000", None, "Chrome", None, "é"]
    assert read_fields(client, "missing", FIELDS) == [None] * 5
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        read_fields(client, "plain", FIELDS)
    # Every read gave its connection back, the refused one too (disconnected),
    # and it still works; the pool lent only the writes.
    assert len(check_connections(client).idle) == 1
    assert pool_sizes(client) == (1, 0)
    assert read_fields(client, "s", ("b",)) == ["Chrome"]
    assert check_connections(client).made == 1


def test_a_connection_killed_by_the_server_is_reconnected_once(
    own_redis: RedisProcess,
) -> None:
    client = ours(own_redis)
    client.hset("s", "t", "1")
    assert read_fields(client, "s", ("t",)) == ["1"]
    admin = redis.Redis.from_url(own_redis.url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert read_fields(client, "s", ("t",)) == ["1"]  # the retry, as execute_command's
    assert len(check_connections(client).idle) == 1


def test_a_server_gone_raises_and_the_next_read_after_it_returns_answers(
    own_redis: RedisProcess,
) -> None:
    client = ours(own_redis, timeout=0.5)
    client.hset("s", "t", "1")
    assert read_fields(client, "s", ("t",)) == ["1"]
    own_redis.stop()
    for _ in range(2):
        with pytest.raises(redis.exceptions.ConnectionError):
            read_fields(client, "s", ("t",))
        assert len(check_connections(client).idle) == 1
    own_redis.start()
    assert read_fields(client, "s", ("t",)) == [None]  # a new, empty server
    assert len(check_connections(client).idle) == check_connections(client).made == 1


def test_a_hanging_server_times_out_without_a_retry(own_redis: RedisProcess) -> None:
    client = ours(own_redis, timeout=0.3)
    admin = redis.Redis.from_url(own_redis.url)
    sent: list[str] = []
    assert read_fields(client, "s", ("t",)) == [None]
    (connection,) = check_connections(client).idle
    send = connection.send_command

    def counting(*args: object, **kwargs: object) -> None:
        sent.append(str(args[0]))
        send(*args, **kwargs)

    connection.send_command = counting  # type: ignore[method-assign]
    admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    with pytest.raises(redis.exceptions.TimeoutError):
        read_fields(client, "s", ("t",))
    assert sent == ["HMGET"]  # as Retry(..., supported_errors=(ConnectionError,)): once
    assert check_connections(client).idle == [connection]
    assert connection._sock is None  # type: ignore[attr-defined]  # its reply unread: closed


def test_a_reply_left_unread_by_a_time_out_never_answers_the_next_read(
    own_redis: RedisProcess,
) -> None:
    # The timed-out HMGET's reply arrives later: the connection it was asked
    # on must not be lent again as it is, or the next read (another user's
    # session, say) would be answered with it.
    client = ours(own_redis, timeout=0.3)
    admin = redis.Redis.from_url(own_redis.url)
    client.hset("alice", "t", "alice's")
    client.hset("bob", "t", "bob's")
    assert read_fields(client, "alice", ("t",)) == ["alice's"]
    admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
    with pytest.raises(redis.exceptions.TimeoutError):
        read_fields(client, "alice", ("t",))
    time.sleep(0.5)  # the pause ends: alice's reply is sent
    assert read_fields(client, "bob", ("t",)) == ["bob's"]
    assert read_fields(client, "alice", ("t",)) == ["alice's"]


def test_other_clients_read_through_execute_command(own_redis: RedisProcess) -> None:
    url = own_redis.url
    others = [
        redis.Redis.from_url(url, decode_responses=True),  # a host's own client
        fakeredis.FakeRedis(decode_responses=True),
        redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(url, decode_responses=True)
        ),
    ]
    single = ours(own_redis)
    single.connection = single.connection_pool.get_connection()
    other_retry = ours(own_redis)
    other_retry.set_retry(Retry(NoBackoff(), 3))
    for client in [*others, single, other_retry]:
        sent: list[str] = []
        original = client.execute_command

        def counting(*args: object, original: object = original, sent: list[str] = sent) -> object:
            sent.append(str(args[0]))
            return original(*args)  # type: ignore[operator]

        client.execute_command = counting  # type: ignore[method-assign]
        assert read_fields(client, "nothing", ("t",)) == [None]
        assert sent == ["HMGET"], client


def test_a_wrapped_execute_command_sees_the_read(
    own_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ours(own_redis)
    assert read_fields(client, "nothing", ("t",)) == [None]  # decided: direct
    sent: list[str] = []
    plain = redis.Redis.execute_command

    def traced(self: redis.Redis, *args: object, **options: object) -> object:
        sent.append(str(args[0]))
        return plain(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", traced)  # as a tracer does
    assert read_fields(client, "nothing", ("t",)) == [None]
    assert sent == ["HMGET"]
    monkeypatch.undo()
    sent.clear()
    assert read_fields(client, "nothing", ("t",)) == [None]
    assert sent == []


def test_checks_at_once_each_read_their_own_answer(own_redis: RedisProcess) -> None:
    client = ours(own_redis)
    users = [f"user-{n}" for n in range(8)]
    for user in users:
        client.hset(user, "t", user)
    wrong: list[str] = []
    start = threading.Barrier(len(users))

    def reader(user: str) -> None:
        start.wait()
        for _ in range(300):
            answer = read_fields(client, user, ("t",))
            if answer != [user]:
                wrong.append(f"{user} read {answer}")

    threads = [threading.Thread(target=reader, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    connections = check_connections(client)
    # As many as read at once, every one given back.
    assert 1 <= connections.made <= len(users)
    assert len(connections.idle) == connections.made


def test_a_max_connections_in_the_url_bounds_all_of_the_processs_connections(
    own_redis: RedisProcess,
) -> None:
    # ?max_connections=N is what keeps a process's sockets (and so a fleet's,
    # under Redis's maxclients) at N: checks kept on connections of their
    # own beside a bounded pool would make it 2N.
    client = client_factory_from_url(own_redis.url + "?max_connections=2", timeout=2.0)()
    client.hset("s", "t", "1")
    admin = redis.Redis.from_url(own_redis.url)
    admin.client_setname("admin")
    admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except redis.exceptions.ConnectionError as exc:  # "Too many connections"
            errors.append(exc)

    calls: list[Callable[[], object]] = [
        *[lambda: read_fields(client, "s", ("t",))] * 2,
        *[lambda: client.hset("s", "x", "1")] * 2,
    ]
    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    ours_now = [c for c in admin.client_list(_type="normal") if c["name"] != "admin"]
    for thread in threads:
        thread.join()
    assert len(ours_now) <= 2
    assert read_fields(client, "s", ("t",)) == ["1"]  # on the pool's connections
    assert check_connections(client).made == 0


def test_a_forked_child_never_reads_on_its_parents_connections(
    own_redis: RedisProcess,
) -> None:
    client = ours(own_redis)
    client.hset("s", "t", "1")
    assert read_fields(client, "s", ("t",)) == ["1"]
    (parents,) = check_connections(client).idle
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of forking with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: reads on a connection of its own
        ok = read_fields(client, "s", ("t",)) == ["1"]
        ok = ok and check_connections(client).idle[0] is not parents
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.close(write)
    # The parent's connection is the parent's still.
    assert check_connections(client).idle == [parents]
    assert read_fields(client, "s", ("t",)) == ["1"]


def test_closing_the_client_closes_the_checks_connections(own_redis: RedisProcess) -> None:
    client = ours(own_redis)
    assert read_fields(client, "s", ("t",)) == [None]
    (connection,) = check_connections(client).idle
    assert connection._sock is not None  # type: ignore[attr-defined]
    close_client(client)
    assert check_connections(client).idle == []
    assert connection._sock is None  # type: ignore[attr-defined]
    assert read_fields(client, "s", ("t",)) == [None]  # a new one, when used again


def test_an_execute_command_wrapped_before_import_is_never_bypassed(
    own_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tracer that instrumented redis-py with functools.wraps keeps
    # redis-py's names; the check still reads through it.
    plain = redis.Redis.execute_command
    sent: list[str] = []

    @functools.wraps(plain)
    def traced(self: redis.Redis, *args: object, **options: object) -> object:
        sent.append(str(args[0]))
        return plain(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", traced)
    client = ours(own_redis)
    assert _may_read_directly(client) is None
    assert read_fields(client, "nothing", ("t",)) == [None]
    assert sent == ["HMGET"]


def test_a_check_in_flight_when_the_client_closes_leaves_nothing_open(
    own_redis: RedisProcess,
) -> None:
    client = ours(own_redis, timeout=2.0)
    assert read_fields(client, "s", ("t",)) == [None]
    admin = redis.Redis.from_url(own_redis.url)
    admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
    reader = threading.Thread(target=read_fields, args=(client, "s", ("t",)))
    reader.start()
    time.sleep(0.1)  # the check is reading
    close_client(client)  # SessionStore.close(), app teardown
    reader.join()
    connections = check_connections(client)
    assert [c for c in connections.idle if c._sock is not None] == []  # type: ignore[attr-defined]
    assert read_fields(client, "s", ("t",)) == [None]  # a new one, when used again
    assert connections.made == len(connections.idle) == 1


def test_a_borrowed_connection_interrupted_before_its_reply_never_answers_the_next_read(
    own_redis: RedisProcess,
) -> None:
    # A gevent Timeout or KeyboardInterrupt that lands between the send and
    # the read leaves the reply unread; while the server is slow to send it,
    # the pool's poll for unread data at the next checkout sees nothing.
    client = client_factory_from_url(own_redis.url + "?max_connections=1", timeout=2.0)()
    client.hset("alice", "t", "alice's")
    client.hset("bob", "t", "bob's")
    assert read_fields(client, "alice", ("t",)) == ["alice's"]  # borrowed
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)

    def interrupted(*args: object, **kwargs: object) -> object:
        del connection.read_response  # once
        raise KeyboardInterrupt

    connection.read_response = interrupted  # type: ignore[method-assign]
    admin = redis.Redis.from_url(own_redis.url)
    admin.execute_command("CLIENT", "PAUSE", "300", "ALL")
    with pytest.raises(KeyboardInterrupt):
        read_fields(client, "alice", ("t",))
    assert read_fields(client, "bob", ("t",)) == ["bob's"]


def test_closing_while_a_check_takes_the_last_idle_connection_closes_quietly(
    own_redis: RedisProcess,
) -> None:
    client = ours(own_redis)
    assert read_fields(client, "s", ("t",)) == [None]
    connections = check_connections(client)
    taken: list[object] = []
    # Another thread's check takes it between close's test and its pop.
    race_on_idle(connections, "pop", lambda: taken.append(connections.take()))
    close_client(client)  # app teardown with requests still in flight
    assert taken != [None]


def test_a_check_ending_while_the_client_closes_leaves_nothing_open(
    own_redis: RedisProcess,
) -> None:
    client = ours(own_redis)
    assert read_fields(client, "s", ("t",)) == [None]
    connections = check_connections(client)
    # The close runs just before the check gives its connection back.
    raced = race_on_idle(connections, "append", lambda: close_client(client))
    assert read_fields(client, "s", ("t",)) == [None]
    assert raced
    assert [c for c in connections.idle if c._sock is not None] == []  # type: ignore[attr-defined]


def test_a_change_by_another_process_between_two_checks_on_one_connection_is_read(
    own_redis: RedisProcess,
) -> None:
    # Revoked in another worker: the very next check, on the same kept
    # connection, reads it (nothing is cached on the connection).
    client = ours(own_redis)
    client.hset("s", "r", "")
    assert read_fields(client, "s", ("r",)) == [""]
    (connection,) = check_connections(client).idle
    revoke = f"import redis; redis.Redis(port={own_redis.port}).hset('s', 'r', 'revoked')"
    subprocess.run([sys.executable, "-c", revoke], check=True, timeout=30)
    assert read_fields(client, "s", ("r",)) == ["revoked"]
    assert check_connections(client).idle == [connection]
