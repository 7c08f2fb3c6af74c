"""Faults against real redis-servers: restarts, raising views, exhaustion, slow and
forgetful servers, forks. Each leaves nothing lost and nothing leaked.

All traffic goes to servers these tests start on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError, TimeoutError

from flask_redispool import RedisPool
from flask_redispool.testing import RedisServer

from .conftest import our_connections, run_in_threads, wait_until
from .views import (
    client_for,
    leave_a_subscription,
    leave_a_transaction,
    raise_after_a_command,
    raise_in_a_connection_block,
)

pytestmark = pytest.mark.servers


@pytest.fixture
def own_app(make_app: Callable[..., Flask], own_server: RedisServer) -> tuple[Flask, RedisPool]:
    app = make_app(REDIS_URL=own_server.url)
    return app, RedisPool(app)


def assert_pool_is_clean(app: Flask, redis_pool: RedisPool, observer: Redis) -> None:
    """Nothing checked out, no more connections than allowed, and none owes a reply."""
    stats = redis_pool.stats(app)
    assert stats["in_use"] == 0
    assert len(our_connections(observer, app.import_name)) <= stats["max_connections"]
    pool = redis_pool.get_pool(app)
    lent = [pool.get_connection() for _ in range(stats["created"])]  # each one, connected or not
    try:
        for number, connection in enumerate(lent):
            connection.send_command("ECHO", f"probe-{number}")
            assert connection.read_response() == f"probe-{number}".encode()
    finally:
        for connection in lent:
            pool.release(connection)


@dataclass
class Outcome:
    started: float
    ended: float
    error: str | None


def test_redis_killed_and_restarted_under_load(own_app: tuple[Flask, RedisPool], own_server: RedisServer) -> None:
    app, redis_pool = own_app
    worst_case = redis_pool.settings(app).worst_case_seconds

    @app.get("/incr")
    def incr() -> tuple[str, int]:
        try:
            return str(redis_pool.client.incr("n")), 200
        except RedisError as exc:
            return type(exc).__name__, 503

    outcomes: list[Outcome] = []
    stop = threading.Event()

    def hammer() -> None:
        client = app.test_client()
        deadline = time.monotonic() + 120  # bounded even if the test body fails
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            response = client.get("/incr")
            error = None if response.status_code == 200 else response.text
            outcomes.append(Outcome(started, time.monotonic(), error))

    def seen(count: int, what: Callable[[Outcome], bool]) -> bool:
        return sum(map(what, outcomes[:])) >= count

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: seen(50, lambda o: o.error is None), 30, "load before the crash")
        killed = time.monotonic()
        own_server.kill()
        wait_until(lambda: seen(50, lambda o: o.error is not None), 30, "requests to fail while Redis is down")
        own_server.start()  # same port; returns once it answers PING
        back = time.monotonic()
        wait_until(lambda: seen(50, lambda o: o.started >= back and o.error is None), 30, "requests served again")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads)

    failures = [o for o in outcomes if o.error]
    assert failures, "the crash was not noticed"
    # An INCR whose connection died after it was sent may have run: it says so. Once the
    # failures repeat, the circuit breaker fails the others at once.
    may_have_run = {"MayHaveRunConnectionError", "MayHaveRunTimeoutError"}
    assert {o.error for o in failures} <= {"ConnectionError", "TimeoutError", "CircuitOpenError", *may_have_run}
    assert all(o.started >= killed - worst_case for o in failures)
    assert max(o.ended - o.started for o in failures) <= min(worst_case, 2.0)
    # Served again by itself (the breaker's probe closes it within a cooldown of 0.5 s, later
    # on a busy machine), and for good: every request begun once one was served succeeds.
    # (By when it ended: a thread may take its start time, then wait for the GIL.)
    first_served = min(o.ended for o in outcomes if o.started >= back and o.error is None)
    assert first_served - back < 5.0
    recovered = [o for o in outcomes if o.started >= first_served]
    assert recovered
    assert all(o.error is None for o in recovered), sorted((o.started - back, o.error) for o in recovered if o.error)
    assert_pool_is_clean(app, redis_pool, Redis.from_url(own_server.url))


@pytest.mark.one_server  # our pool's bookkeeping: the server only answers GET, MULTI, SUBSCRIBE
@pytest.mark.parametrize(
    "view", [leave_a_transaction, leave_a_subscription, raise_in_a_connection_block, raise_after_a_command]
)
def test_2500_raising_requests_of_each_kind_leave_a_clean_pool(
    app: Flask, redis_pool: RedisPool, server: Redis, view: Callable[[RedisPool], None]
) -> None:
    """Four kinds x 2,500 requests: the 10,000 raising requests of the hardening plan."""
    client = client_for(app, redis_pool, view)
    statuses = {client.get("/view").status_code for _ in range(2500)}
    assert statuses == {500}
    assert_pool_is_clean(app, redis_pool, server)
    assert server.pubsub_numsub("news") == [(b"news", 0)]
    assert server.get("guarded-counter") is None  # no abandoned transaction ran


def test_waiting_for_a_connection_succeeds_when_the_timeout_allows(
    make_app: Callable[..., Flask], own_server: RedisServer
) -> None:
    # The server runs the two connections' sleeps one after the other, so a reply may
    # come 0.4 s after its command, and later on a busy machine: a socket timeout of 2 s
    # keeps this test about waiting for a connection (DEBUG SLEEP is not retried).
    app = make_app(REDIS_URL=own_server.url, REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=5, REDIS_SOCKET_TIMEOUT=2)
    redis_pool = RedisPool(app)
    results: list[object] = []
    all_started = threading.Barrier(10, timeout=10)  # ten requests at once for two connections

    def sleepy() -> None:
        all_started.wait()
        with app.app_context():
            results.append(redis_pool.client.execute_command("DEBUG", "SLEEP", "0.2"))

    run_in_threads(sleepy, 10)
    assert results == [b"OK"] * 10
    stats = redis_pool.stats(app)
    assert (stats["timeouts"], stats["created"], stats["in_use"]) == (0, 2, 0)
    assert stats["waits"] >= 1


def test_socket_timeout_is_honoured_and_the_timed_out_connection_is_not_reused(
    make_app: Callable[..., Flask], own_server: RedisServer
) -> None:
    app = make_app(REDIS_URL=own_server.url, REDIS_SOCKET_TIMEOUT=0.5, REDIS_RETRIES=0)
    redis_pool = RedisPool(app)
    pauser = Redis.from_url(own_server.url)
    with app.app_context():
        client = redis_pool.client
        client.set("k", "before")
        first_id = client.client_id()
        pauser.execute_command("CLIENT", "PAUSE", "1500")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.get("k")
        elapsed = time.monotonic() - started
        pauser.execute_command("CLIENT", "UNPAUSE")
        # One REDIS_SOCKET_TIMEOUT, not two: a retry (REDIS_RETRIES=0) or a second wait for
        # the reply would take 1 s or more. A read without a timeout would get its answer
        # when the 1.5 s pause ends, and raise nothing.
        assert 0.5 <= elapsed < 1.0
        client.set("k", "after")
        assert client.get("k") == b"after"  # not the reply the timed-out GET left behind
        assert client.client_id() != first_id
    assert redis_pool.stats(app)["in_use"] == 0
    pauser.close()


@dataclass
class TricklingServer:
    """A stand-in for Redis on loopback that answers each command ``+OK`` at once, but a
    ``GET`` with a 30-byte reply sent one byte every ``gap`` seconds: a server or link
    that is slow but never silent. Its threads end when the ``with`` block does."""

    gap: float
    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    clients: list[socket.socket] = field(default_factory=list)

    REPLY = b"$23\r\n" + b"x" * 23 + b"\r\n"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def __enter__(self) -> TricklingServer:
        self.listener.settimeout(0.1)  # how often the accept loop looks at ``stop``
        self._start(self._accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for client in self.clients:
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # ends a read in _serve
        for thread in self.threads:
            thread.join(10)
        self.listener.close()
        assert not any(thread.is_alive() for thread in self.threads)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        self.threads.append(threading.Thread(target=target, args=args, daemon=True))
        self.threads[-1].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:  # timed out: look at ``stop`` again
                continue
            self.clients.append(client)
            self._start(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        with client, client.makefile("rb") as commands:
            while (name := self._command_name(commands)) is not None:
                try:
                    if name != b"GET":
                        client.sendall(b"+OK\r\n")
                        continue
                    for byte in self.REPLY:
                        if self.stop.wait(self.gap):  # paces the reply; ends at once when stopped
                            return
                        client.sendall(bytes([byte]))
                except OSError:  # the client gave up and closed
                    return

    @staticmethod
    def _command_name(commands: IO[bytes]) -> bytes | None:
        """The next command's name (upper case), its arguments read; ``None`` once closed."""
        header = commands.readline()
        if not header.startswith(b"*"):
            return None
        args = []
        for _ in range(int(header[1:])):
            length = int(commands.readline()[1:])
            args.append(commands.read(length + 2)[:length])
        return args[0].upper()


def test_the_worst_case_bounds_each_wait_for_the_server_not_a_trickling_reply(
    make_app: Callable[..., Flask],
) -> None:
    """What ``worst_case_seconds`` bounds, as config.rst says: each wait for the server.
    A reply that trickles in, each byte within ``REDIS_SOCKET_TIMEOUT``, keeps a sync
    command as long as it trickles (redis-py times each socket read); ``async_client``
    times the whole reply, so there the bound holds."""
    with TricklingServer(gap=0.1) as trickling:  # 30 bytes: 3 s, each 0.1 s within the timeout
        app = make_app(
            REDIS_URL=trickling.url, REDIS_OPTIONS={"protocol": 2}, REDIS_SOCKET_TIMEOUT=0.5, REDIS_RETRIES=0
        )
        redis_pool = RedisPool(app)
        worst_case = redis_pool.settings(app).worst_case_seconds
        assert worst_case == 0.7  # connect 0.2 s, then one reply

        @app.get("/async")
        async def async_get() -> dict[str, object]:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await redis_pool.async_client.get("key")
            return {"elapsed": time.monotonic() - started}

        with app.app_context():
            started = time.monotonic()
            assert redis_pool.client.get("key") == b"x" * 23
            assert time.monotonic() - started >= len(TricklingServer.REPLY) * 0.1 > worst_case
        elapsed = app.test_client().get("/async").json["elapsed"]  # type: ignore[index]
        assert elapsed < 2.0  # given up at REDIS_SOCKET_TIMEOUT (0.7 s at worst), not after the 3 s trickle
        redis_pool.close(app)


def _server_closes_idle_clients(server: Redis, name: str) -> None:
    server.config_set("timeout", 1)
    # The server's own clock decides when the idle timeout strikes.
    wait_until(lambda: not our_connections(server, name), 10, "the server to close the idle connection")
    server.config_set("timeout", 0)


def _kill_normal_clients(server: Redis, name: str) -> None:
    server.client_kill_filter(_type="normal", skipme=True)


@pytest.mark.parametrize("drop", [_server_closes_idle_clients, _kill_normal_clients])
def test_a_connection_dropped_while_idle_is_replaced_unseen(
    own_app: tuple[Flask, RedisPool], own_server: RedisServer, drop: Callable[[Redis, str], None]
) -> None:
    app, redis_pool = own_app
    app.add_url_rule("/", "incr", lambda: str(redis_pool.client.incr("n")))
    client = app.test_client()
    assert client.get("/").text == "1"
    observer = Redis.from_url(own_server.url)
    assert len(our_connections(observer, app.import_name)) == 1
    drop(observer, app.import_name)
    assert our_connections(observer, app.import_name) == []
    assert client.get("/").text == "2"  # no "Connection closed by server" for the user
    assert redis_pool.stats(app)["in_use"] == 0
    observer.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_parent_and_forked_child_share_no_socket(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    with app.app_context():
        parent_id = redis_pool.client.client_id()  # the pool holds a connection before the fork
    pool = redis_pool.get_pool(app)
    serving = pool.get_connection()  # and it is in use: a parent that forks idle closes it first
    pid = os.fork()
    if pid != 0:
        pool.release(serving)
    if pid == 0:  # pragma: no cover - the child reports through Redis
        try:
            with app.app_context():
                client = redis_pool.client
                for _ in range(1000):
                    client.incr("total")
                client.set("child-id", client.client_id())
        finally:
            os._exit(0)
    with app.app_context():
        client = redis_pool.client
        for _ in range(1000):
            client.incr("total")
        own_id = client.client_id()
    assert os.waitpid(pid, 0)[1] == 0
    assert server.get("total") == b"2000"
    assert int(server.get("child-id") or 0) not in (parent_id, own_id, 0)
    assert own_id == parent_id  # the parent's connection survived the fork and the child
    assert_pool_is_clean(app, redis_pool, server)
