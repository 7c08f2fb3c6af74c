"""The pool against a real server: bounds, counters, names, exhaustion, schemes."""

from __future__ import annotations

import functools
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from redis import ConnectionPool, Redis
from redis.exceptions import ConnectionError, MaxConnectionsError

from flask_redispool import PoolExhaustedError, RedisPool
from flask_redispool._stats import HOST
from flask_redispool.testing import RedisServer, free_port

from .conftest import our_connections, run_in_threads, wait_until


def test_init_app_makes_no_connection(make_app: Callable[..., Flask], redis_url: str, server: Redis) -> None:
    app = make_app(REDIS_URL=redis_url)
    RedisPool(app)
    assert our_connections(server, app.import_name) == []


@pytest.mark.parametrize("blocking", [True, False])
def test_the_pool_is_redis_pys_own(make_app: Callable[..., Flask], redis_url: str, blocking: bool) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_POOL_BLOCKING=blocking, REDIS_MAX_CONNECTIONS=3)
    pool = RedisPool(app).get_pool(app)
    assert isinstance(pool, ConnectionPool)
    assert pool.max_connections == 3


def test_connections_are_named_with_host_and_pid(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    with app.app_context():
        name = redis_pool.client.client_getname()
    assert name == f"{app.import_name}:{HOST}:{os.getpid()}"
    assert [c["name"] for c in our_connections(server, app.import_name)] == [name]


def test_counters_follow_checkouts(app: Flask, redis_pool: RedisPool) -> None:
    pool = redis_pool.get_pool(app)
    held = [pool.get_connection() for _ in range(3)]
    stats = redis_pool.stats(app)
    assert (stats["in_use"], stats["idle"], stats["created"], stats["peak_in_use"]) == (3, 0, 3, 3)
    for connection in held:
        pool.release(connection)
    with app.app_context():
        redis_pool.client.ping()
    stats = redis_pool.stats(app)
    assert (stats["in_use"], stats["idle"], stats["created"], stats["peak_in_use"]) == (0, 3, 3, 3)
    assert (stats["checkouts"], stats["waits"], stats["timeouts"]) == (4, 0, 0)


def test_a_failed_connect_does_not_count_as_in_use(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_RETRIES=0)
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(ConnectionError):
        redis_pool.client.ping()
    stats = redis_pool.stats(app)
    assert (stats["in_use"], stats["idle"], stats["checkouts"]) == (0, 0, 0)  # it has no socket


def test_idle_counts_only_connections_open_to_the_server(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """A pubsub a view leaves subscribed is given back disconnected at teardown (as a
    stream's is when it ends): it waits in the pool for its next checkout, unseen by the
    server, and ``idle`` does not count it."""
    pool = redis_pool.get_pool(app)
    held = [pool.get_connection() for _ in range(3)]
    for connection in held:
        pool.release(connection)
    with app.app_context():
        pubsub = redis_pool.client.pubsub()
        pubsub.subscribe("news")
    on_server = wait_until(
        lambda: len(our_connections(server, app.import_name)) == 2 and 2, 10, "the pubsub's connection to close"
    )
    stats = redis_pool.stats(app)
    assert (stats["in_use"], stats["idle"], stats["created"]) == (0, on_server, 3)
    again = [pool.get_connection() for _ in range(3)]  # a checkout connects it again: it counts
    for connection in again:
        pool.release(connection)
    assert redis_pool.stats(app)["idle"] == len(our_connections(server, app.import_name)) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_counts_none_of_its_parents_connections_idle(app: Flask, redis_pool: RedisPool) -> None:
    """The parent's idle connection stays open in a child that forks while the parent is
    serving, but it is the parent's: the child counts only connections it made."""
    pool = redis_pool.get_pool(app)
    serving, spare = pool.get_connection(), pool.get_connection()
    pool.release(spare)
    assert pool.connection_counts() == (1, 1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        os._exit(pool.connection_counts()[1])
    pool.release(serving)
    assert os.waitpid(pid, 0)[1] == 0
    assert pool.connection_counts() == (0, 2)


@pytest.mark.parametrize(
    ("blocking", "wait", "waits"),
    [
        (True, "none was freed within REDIS_POOL_TIMEOUT=0.1 s", 1),
        (False, "REDIS_POOL_BLOCKING is false, so no wait", 0),
    ],
)
def test_an_exhausted_pool_raises_our_error(
    make_app: Callable[..., Flask], redis_url: str, blocking: bool, wait: str, waits: int
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.1, REDIS_POOL_BLOCKING=blocking)
    redis_pool = RedisPool(app)
    with app.app_context(), redis_pool.connection(), pytest.raises(PoolExhaustedError) as info:
        redis_pool.client.ping()
    assert isinstance(info.value, MaxConnectionsError)
    assert str(info.value) == (
        f"No free Redis connection: 1 in use of the 1 allowed by REDIS_MAX_CONNECTIONS, and {wait}. "
        "Raise REDIS_MAX_CONNECTIONS, or run 'flask redis-stats' to see who holds them."
    )
    stats = redis_pool.stats(app)
    assert (stats["waits"], stats["timeouts"], stats["in_use"]) == (waits, 1, 0)


def test_a_blocked_request_gets_the_connection_freed_for_it(make_app: Callable[..., Flask], redis_url: str) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=5)
    redis_pool = RedisPool(app)
    pool = redis_pool.get_pool(app)
    held = pool.get_connection()
    result: list[object] = []

    def waiter() -> None:
        with app.app_context():
            result.append(redis_pool.client.echo("got it"))

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: pool.counters.waits == 1, 5, "the waiter to find the pool full")
    pool.release(held)
    thread.join(5)
    assert result == [b"got it"]
    stats = redis_pool.stats(app)
    assert (stats["waits"], stats["timeouts"], stats["peak_in_use"], stats["created"]) == (1, 0, 1, 1)


def test_a_waiting_request_is_served_before_a_thread_that_keeps_coming_back(
    make_app: Callable[..., Flask], redis_url: str
) -> None:
    """Waiters are served first come, first served: a thread that releases and at once
    checks out again queues behind them instead of taking the connection back."""
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=10)
    redis_pool = RedisPool(app)
    pool = redis_pool.get_pool(app)
    echoed: list[object] = []

    def request() -> None:  # a view running command after command
        with app.app_context():
            echoed.extend(redis_pool.client.echo(f"turn {n}") for n in range(20))

    def queued(turn: int) -> bool:  # its turn-th wait counted, and the thread blocked in it
        return pool.counters.waits == 2 * turn + 1 and waiting(requests)

    requests = threading.Thread(target=request)
    held = pool.get_connection()  # this thread keeps coming back for the one connection
    requests.start()
    try:
        for turn in range(20):
            wait_until(functools.partial(queued, turn), 10, f"request {turn} to queue")
            pool.release(held)
            held = pool.get_connection()  # at once: served after the request that waited
            assert pool.counters.waits >= 2 * turn + 2, f"came back and took the connection before request {turn}"
    finally:
        pool.release(held)
        requests.join(10)
    assert echoed == [f"turn {n}".encode() for n in range(20)]
    assert redis_pool.stats(app)["timeouts"] == 0


def waiting(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in a ``wait()`` of :mod:`threading` (an Event's, a
    Condition's): after a pool counted a wait, that it has queued up."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code.co_name == "wait" and frame.f_code.co_filename == threading.__file__


def test_the_bound_holds_under_threads(make_app: Callable[..., Flask], redis_url: str, server: Redis) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=3, REDIS_POOL_TIMEOUT=10)
    redis_pool = RedisPool(app)

    def work() -> None:
        for _ in range(50):
            with app.app_context(), redis_pool.pipeline() as pipe:
                pipe.incr("n")
                pipe.get("n")
                pipe.execute()

    run_in_threads(work, 8)
    stats = redis_pool.stats(app)
    assert server.get("n") == b"400"
    assert stats["peak_in_use"] <= 3
    assert stats["created"] <= 3
    assert stats["in_use"] == 0
    assert stats["checkouts"] == 400
    assert len(our_connections(server, app.import_name)) <= 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_names_its_connections_with_its_own_pid(
    app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    with app.app_context():
        redis_pool.client.ping()  # the parent's pool holds a connection before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through Redis
        try:
            with app.app_context():
                client = redis_pool.client
                client.set("child", f"{client.client_getname()!s}|{redis_pool.stats()['checkouts']}")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    child_name, child_checkouts = server.get("child").decode().split("|")  # type: ignore[union-attr]
    assert child_name == f"{app.import_name}:{HOST}:{pid}"
    assert child_checkouts == "1"  # the child counts its own checkouts only
    with app.app_context():
        assert redis_pool.client.client_getname() == f"{app.import_name}:{HOST}:{os.getpid()}"


def reap(pid: int, timeout: float = 30) -> None:
    """Wait for the forked child ``pid`` to exit, at most ``timeout`` s (then kill it)."""
    try:
        wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, timeout, "the forked child to exit")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def read_within(fd: int, timeout: float) -> str:
    """What the other end writes into the pipe ``fd``, waiting at most ``timeout`` s."""
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, f"nothing came through the pipe within {timeout} s"
    return os.read(fd, 1024).decode()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_a_child_forked_while_a_thread_waits_for_a_connection_checks_out_at_once(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=3)
    redis_pool.init_app(app)
    pool = redis_pool.get_pool(app)
    held = pool.get_connection()  # the pool's one connection is out
    served: list[object] = []
    waiter = threading.Thread(target=lambda: served.append(Redis(connection_pool=pool).echo("waited")))
    waiter.start()
    try:
        wait_until(lambda: pool.counters.waits == 1, 5, "the thread to queue up for the connection")
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                try:
                    with app.app_context():
                        answer = str(redis_pool.client.incr("in-child"))
                except Exception as exc:
                    answer = type(exc).__name__
                os.write(write_end, answer.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            answer = read_within(read_end, 30)
        finally:
            os.close(read_end)
            reap(pid)
    finally:
        pool.release(held)
        waiter.join(10)
    assert answer == "1"  # not PoolExhaustedError after REDIS_POOL_TIMEOUT: the child waits for nobody
    assert served == [b"waited"]  # the parent's waiter got the connection when it came back


def test_fakeredis_url_needs_no_server(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL="fakeredis://:pw@/3", REDIS_DECODE_RESPONSES=True)
    redis_pool = RedisPool(app)

    @app.get("/")
    def view() -> dict[str, object]:
        return {"hits": redis_pool.client.incr("hits")}

    client = app.test_client()
    assert [client.get("/").json for _ in range(2)] == [{"hits": 1}, {"hits": 2}]
    assert redis_pool.stats(app)["in_use"] == 0
    with app.app_context():
        assert redis_pool.client.connection_pool.connection_kwargs["db"] == 3


def test_fakeredis_servers_are_private_to_each_pool(make_app: Callable[..., Flask]) -> None:
    one, two = make_app(REDIS_URL="fakeredis://"), make_app(REDIS_URL="fakeredis://")
    redis_pool = RedisPool()
    for app in (one, two):
        redis_pool.init_app(app)
    with one.app_context():
        redis_pool.client.set("k", "one")
    with two.app_context():
        assert redis_pool.client.get("k") is None


def test_unix_socket_url(make_app: Callable[..., Flask], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    path = tmp_path / "redis.sock"
    unix_server = RedisServer(args=("--unixsocket", str(path))).start()
    request.addfinalizer(unix_server.stop)
    app = make_app(REDIS_URL=f"unix://{path}?db=2")
    redis_pool = RedisPool(app)
    with app.app_context():
        redis_pool.client.set("k", "v")
        info = redis_pool.client.client_info()
    assert info["db"] == 2
    assert str(info["name"]).startswith(f"{app.import_name}:{HOST}:")
