"""The processes the tests start: a redis-server of their own, a PostgreSQL
server when none answers, the Sentinel group, the Redis Cluster, gunicorn, a
host app served on its own and a webhook receiver; and what runs them (free
ports, polling until ready, log tails for failure messages, the service's
environment)."""

from __future__ import annotations

import contextlib
import http.server
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import redis

#: The checkout: gunicorn's working directory, and where tests find its files.
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_answers(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.exceptions.RedisError:
        return False
    return True


def wait_until(done: Callable[[], bool], limit: float, failure: Callable[[], str]) -> None:
    """Poll ``done`` until it holds; after ``limit`` seconds raise with ``failure()``."""
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(failure())
        time.sleep(0.05)


def log_tails(root: Path, paths: Iterable[Path], lines: int = 15) -> str:
    """The last lines of each existing log, for a failure message."""
    tails = []
    for path in paths:
        if path.exists():
            last = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"== {path.relative_to(root)}\n" + "\n".join(last))
    return "\n".join(tails)


def stop_servers(clients: Iterable[redis.Redis], procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Close a group's clients and kill its redis-server processes."""
    for client in clients:
        client.close()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


class RedisProcess:
    """A redis-server of the test's own on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="sessionsvc-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.dir),
                # Fault tests hang the server with DEBUG SLEEP (refused by default).
                *("--enable-debug-command", "local"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: redis_answers(self.url),
            10,
            lambda: f"redis-server did not start on port {self.port}",
        )
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def service_env(**values: str) -> dict[str, str]:
    """The environment for a service process: ours, less any sessionsvc settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SESSIONSVC_", "JWT_", "WEB_CONCURRENCY"))
    }
    env.update(values)
    return env


def stop_logged(proc: subprocess.Popen[bytes] | None, log: IO[bytes]) -> None:
    """End a server gently (SIGTERM, then kill), and delete its log file."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if not log.closed:  # stop() may run twice: after a failed start, then in cleanup
        log.close()
        os.unlink(log.name)


def helper_pids(group: str) -> list[int]:
    """The processes on this host that a gunicorn master started beside its
    workers for ``group`` (``webhooks``, ``audit``): ``sessions GROUP run --exit-with``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if group.encode() in command and b"run" in command and b"--exit-with" in command:
            found.append(int(entry))
    return found


class HostProcess:
    """A server of the checkout started by a command of its own (``flask
    run``, plain gunicorn) on ``port``; started once :attr:`probe` answers,
    its output (stdout and stderr) kept in a log file."""

    #: The path whose answer, any answer, says the server is up (a host
    #: app's routes are its own).
    probe = "/"

    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.command, self.env, self.port = command, env, port
        self.proc: subprocess.Popen[bytes] | None = None
        #: Run in the child before the command (``ulimit``, say).
        self.preexec: Callable[[], None] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.command[:4]} exited:\n{self.output()}")
        try:
            with urllib.request.urlopen(self.base + self.probe, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # an answer all the same: the app is up
        except OSError:
            return False

    def start(self) -> HostProcess:
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        try:
            wait_until(self.answers, 30, lambda: f"{self.command} did not start:\n{self.output()}")
        except RuntimeError:
            self.stop()
            raise
        return self

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        stop_logged(self.proc, self.log)
        self.proc = None


class Gunicorn(HostProcess):
    """``gunicorn -c gunicorn.conf.py wsgi:app``, as ``make run`` starts it."""

    probe = "/healthz"

    def __init__(
        self,
        env: dict[str, str],
        *,
        port: int | None = None,
        workers: int | None = 4,
        host: str = "127.0.0.1",
        open_files: int | None = None,
        config: str = "gunicorn.conf.py",
    ) -> None:
        port = port or free_port()
        #: What ``-c`` names: the repository's file, or ``python:sessionsvc.gunicorn_config``.
        self.config = config
        #: Its ``ulimit -n`` (None: ours).
        self.open_files = open_files
        # The tests reach it on 127.0.0.1 whatever it binds (``[::]``: dual-stack).
        env = {**env, "SESSIONSVC_BIND": f"{host}:{port}"}
        if workers is not None:  # None: the shipped default
            env["WEB_CONCURRENCY"] = str(workers)
        super().__init__([sys.executable, "-m", "gunicorn", "-c", config, "wsgi:app"], env, port)
        if open_files is not None:
            self.preexec = self._limit_files

    def _limit_files(self) -> None:
        """In the child, before gunicorn runs: its ``ulimit -n``."""
        assert self.open_files is not None
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, hard))

    def flask(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``flask --app wsgi ARGS`` in the checkout, with the service's environment."""
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.env,
            timeout=60,
            check=False,
        )


class SentinelGroup:
    """A primary, its replica and one sentinel watching them: redis-servers of
    the test's own on free loopback ports, with their files in a temp dir.

    One sentinel with quorum 1 decides a failover alone. That is all the
    client's side needs (ask a sentinel for the primary, follow a switch);
    how several sentinels agree is Redis's to test, not ours, and each more
    would only slow the failover down.
    """

    service = "sessionsvc-test"

    def __init__(self) -> None:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.primary_port, self.replica_port, self.sentinel_port = sorted(ports)
        self._dir = tempfile.TemporaryDirectory(prefix="sessionsvc-sentinel-")
        self.dir = Path(self._dir.name)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    def url(self, db: int | None = None) -> str:
        """The service's ``redis+sentinel://`` URL."""
        path = self.service if db is None else f"{self.service}/{db}"
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{path}"

    def start(self) -> SentinelGroup:
        common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        # No waiting 5 s (the default) for more replicas before a full sync.
        common += ("--repl-diskless-sync-delay", "0")
        self._spawn("primary", "--port", str(self.primary_port), *common)
        self._spawn(
            "replica",
            *("--port", str(self.replica_port), *common),
            *("--replicaof", "127.0.0.1", str(self.primary_port)),
        )
        # The sentinel learns of replicas from the primary's INFO, every 10 s:
        # started after the replica is in sync, it knows the replica at once.
        wait_until(
            lambda: self._linked(self.replica_port),
            10,
            lambda: "the replica did not sync:\n" + self.logs(),
        )
        # Sentinel rewrites its config file: it must be a writable file of ours.
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
        )
        self.procs["sentinel"] = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()
        return self

    def _spawn(self, name: str, *args: str) -> None:
        home = self.dir / name
        home.mkdir()
        self.procs[name] = subprocess.Popen(
            ["redis-server", *args, "--dir", str(home), "--logfile", str(home / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self, port: int, db: int = 0) -> redis.Redis:
        """A plain client of one server of the group (closed by :meth:`stop`)."""
        key = port * 100 + db
        if key not in self._clients:
            self._clients[key] = redis.Redis(
                port=port, db=db, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
            )
        return self._clients[key]

    @property
    def sentinel(self) -> redis.Redis:
        return self.client(self.sentinel_port)

    def primary(self) -> int:
        """The port of the primary, as the sentinel names it to redis-py.

        ``SENTINEL MASTER``, which redis-py reads: during a failover
        ``GET-MASTER-ADDR-BY-NAME`` names the promoted replica a little
        earlier, before the sentinel has switched.
        """
        return int(self.sentinel.sentinel_master(self.service)["port"])

    def role(self, port: int) -> str:
        """``master`` or ``slave``: what the server itself says it is."""
        return str(self.client(port).execute_command("ROLE")[0])

    def other(self, port: int) -> int:
        """The other data node."""
        return self.replica_port if port == self.primary_port else self.primary_port

    def wait_ready(self, limit: float = 15.0) -> None:
        """Until the replica is in sync and the sentinel can fail over to it."""
        wait_until(
            self._ready, limit, lambda: "the Sentinel group did not get ready:\n" + self.logs()
        )

    def _linked(self, replica: int) -> bool:
        """Whether ``replica`` is in sync with the other data node."""
        try:
            link = self.client(replica).info("replication")
        except redis.exceptions.RedisError:
            return False
        return bool(
            link.get("master_port") == self.other(replica)
            and link.get("master_link_status") == "up"
        )

    def _ready(self) -> bool:
        try:
            primary = self.primary()
            replica = self.other(primary)
            state = self.sentinel.sentinel_master(self.service)
            known = self.sentinel.sentinel_slaves(self.service)
            role = self.role(primary)
        except redis.exceptions.RedisError:
            return False
        return (
            role == "master"
            and self._linked(replica)
            and state["flags"] == "master"
            and any(
                entry["port"] == replica
                and entry["flags"] == "slave"
                and entry["master-link-status"] == "ok"
                for entry in known
            )
        )

    def wait_replicated(self, limit: float = 5.0) -> int:
        """Until the replica has processed every write the primary has taken so
        far (their replication offsets); returns that offset."""
        primary = self.primary()
        offset = int(self.client(primary).info("replication")["master_repl_offset"])
        replica = self.client(self.other(primary))
        deadline = time.monotonic() + limit
        while int(replica.info("replication")["slave_repl_offset"]) < offset:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not reach offset {offset}:\n" + self.logs())
            time.sleep(0.01)
        return offset

    def logs(self) -> str:
        """The last lines of every server's log, for a failure message."""
        paths = [self.dir / "sentinel.log", *sorted(self.dir.glob("*/redis.log"))]
        return log_tails(self.dir, paths)

    def stop(self) -> None:
        stop_servers(self._clients.values(), self.procs.values())
        self._clients.clear()
        self.procs.clear()
        self._dir.cleanup()


class ClusterGroup:
    """A Redis Cluster of the test run's own: three masters, no replicas,
    cluster-mode redis-servers on free loopback ports with their files in a
    temp dir, joined by ``redis-cli --cluster create``.

    Three masters is the least ``redis-cli`` accepts, and enough for a
    user's keys to land on one node and another user's on another.
    """

    masters = 3

    def __init__(self) -> None:
        self.ports = _cluster_ports(self.masters)
        self._dir = tempfile.TemporaryDirectory(prefix="sessionsvc-cluster-")
        self.dir = Path(self._dir.name)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """The documented ``redis+cluster://host:port,host:port...`` form."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> ClusterGroup:
        for port in self.ports:
            home = self.dir / str(port)
            home.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        *("redis-server", "--cluster-enabled", "yes"),
                        *("--cluster-config-file", str(home / "nodes.conf")),
                        *("--port", str(port), "--bind", "127.0.0.1"),
                        *("--save", "", "--appendonly", "no", "--dir", str(home)),
                        *("--logfile", str(home / "redis.log")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_until(
            lambda: all(redis_answers(f"redis://127.0.0.1:{port}") for port in self.ports),
            10,
            lambda: "the cluster's redis-servers did not start:\n" + self.logs(),
        )
        created = subprocess.run(
            [
                *("redis-cli", "--cluster", "create"),
                *(f"127.0.0.1:{port}" for port in self.ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}\n"
                + self.logs()
            )
        self.wait_ok()
        return self

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (closed by :meth:`stop`)."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
            )
        return self._clients[port]

    def wait_ok(self, limit: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` and knows every other."""
        wait_until(
            self._ok, limit, lambda: "the cluster did not reach cluster_state:ok:\n" + self.logs()
        )

    def _ok(self) -> bool:
        try:
            infos = [self.node(port).cluster("INFO") for port in self.ports]
        except redis.exceptions.RedisError:
            return False
        return all(
            info["cluster_state"] == "ok"
            and int(info["cluster_known_nodes"]) == self.masters
            and int(info["cluster_slots_ok"]) == 16384
            for info in infos
        )

    def keyslot(self, key: str) -> int:
        """The slot the cluster itself gives a key (``CLUSTER KEYSLOT``)."""
        return int(self.node(self.ports[0]).cluster("KEYSLOT", key))

    def owner(self, slot: int) -> int:
        """The port of the master that serves a slot (``CLUSTER SLOTS``)."""
        for start, end, primary, *_ in self.node(self.ports[0]).execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
        raise LookupError(f"no node serves slot {slot}")

    def logs(self) -> str:
        """The last lines of every node's log, for a failure message."""
        return log_tails(self.dir, sorted(self.dir.glob("*/redis.log")))

    def stop(self) -> None:
        stop_servers(self._clients.values(), self.procs)
        self._clients.clear()
        self.procs.clear()
        self._dir.cleanup()


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@dataclass(frozen=True)
class Received:
    """One POST a :class:`WebhookReceiver` got."""

    headers: dict[str, str]
    body: bytes
    at: float


class WebhookReceiver:
    """A webhook endpoint on loopback that records every POST.

    It answers each with the next of ``statuses`` (200 once they run out).
    While ``held`` is clear it answers nothing, and holds the connection
    open until it is set (a receiver that hangs); ``trickle`` answers one
    byte of the status line per that many seconds instead; ``linger`` sends
    its status line and headers, then keeps the connection open without
    a body for that many seconds.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self.held = threading.Event()
        self.held.set()
        self.trickle = 0.0
        self.linger = 0.0
        #: Seconds to take over each answer.
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.held.wait(60)
                time.sleep(receiver.delay)
                if receiver.trickle:
                    for byte in b"HTTP/1.1 200 OK\r\n":
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(receiver.trickle)
                    return
                if receiver.linger:
                    self.wfile.write(f"HTTP/1.1 {status} OK\r\n\r\n".encode())
                    self.wfile.flush()
                    time.sleep(receiver.linger)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/sessions"

    def ids(self) -> list[str]:
        """The ``webhook-id`` of every POST, in arrival order."""
        with self._lock:
            return [r.headers["webhook-id"] for r in self.received]

    def close(self) -> None:
        self.held.set()
        self.server.shutdown()
        self.server.server_close()


#: The PostgreSQL server the tests use when it answers (``make``'s
#: environment and CI have one); else they start one of their own.
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_answers(url: str) -> bool:
    """Whether a PostgreSQL server takes a connection at ``url`` (a SQLAlchemy URL)."""
    import psycopg

    try:
        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


class PostgresProcess:
    """A PostgreSQL server of the test run's own: a fresh cluster in a
    temporary directory, trusting user ``postgres``, on a Unix socket only
    (no TCP port to collide with). As root it runs as the ``postgres``
    system user: the server refuses to run as root."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sessionsvc-postgres-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/postgres?host={self.dir}&port={self.port}"

    def _as_owner(self) -> dict[str, str]:
        return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}

    def start(self) -> PostgresProcess:
        owner = self._as_owner()
        if owner:
            shutil.chown(self.dir, **owner)
        subprocess.run(
            [
                *("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust"),
                *("-E", "UTF8", "--no-locale", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            **cast(Any, owner),
        )
        return self.resume()

    def resume(self) -> PostgresProcess:
        """Run the server on its cluster (again, after :meth:`halt`)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *("postgres", "-D", str(self.dir / "data"), "-k", str(self.dir)),
                    *("-p", str(self.port), "-c", "listen_addresses=", "-c", "fsync=off"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                **cast(Any, self._as_owner()),
            )
        wait_until(
            lambda: postgres_answers(self.url),
            30,
            lambda: "postgres did not start:\n" + self.log.read_text(errors="replace"),
        )
        return self

    def halt(self) -> None:
        """Shut the server down, keeping its cluster for :meth:`resume`."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: PostgreSQL's fast shutdown (ends the sessions, then exits).
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


class FreezingProxy:
    """A TCP proxy to ``target`` (host, port) that can stop forwarding while
    keeping every connection open: a server (or a network) that has gone
    silent, not one that refuses: what a paused VM or a stopped process
    looks like to its clients, whose kernel still takes their bytes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.running = threading.Event()
        self.running.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.running.clear()

    def thaw(self) -> None:
        self.running.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.running.wait()
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.thaw()
        self._listener.close()
        for end in self._sockets:
            end.close()
