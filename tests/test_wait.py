"""The one wait for a free connection, proved on every path against real servers: a
single server, a Sentinel service's master and a cluster node, sync and async, the async
cluster's pipelines too.

Each path's pool (a cluster's: each node's) holds one connection, which the test takes
itself. Then (a) checkouts queue and get the connection in the order they came; (b) one
raises :class:`~flask_redispool.PoolExhaustedError` after ``POOL_TIMEOUT``, naming the
keys; (c) with ``POOL_BLOCKING`` false it raises at once; (d) the figures count each wait
and each timeout once; (e) closing the app wakes the waiters with the "closed" error.
The tests synchronise on the figures and on what the server sees, never on sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from flask import Flask
from redis import Redis

from flask_redispool import PoolExhaustedError, RedisPool
from flask_redispool._state import LOOPS_KEY

from .conftest import blocked_in, wait_until

#: The key every waiter increments: its reply says in which order the waiters were served.
KEY = "{wait}:served"
#: The list the async cluster's holder blocks on (the same slot as KEY).
HELD = "{wait}:held"
#: Bounds every wait of the tests themselves.
BOUND = 20.0
REDIS_PY_7 = int(redis.__version__.split(".")[0]) < 8


@dataclass(frozen=True)
class Path:
    """One way a command reaches a pool."""

    name: str
    topology: str  #: "single", "sentinel" or "cluster"
    asynchronous: bool = False
    pipeline: bool = False

    @property
    def waits(self) -> str:
        return "async_waits" if self.asynchronous else "waits"

    @property
    def timeouts(self) -> str:
        return "async_timeouts" if self.asynchronous else "timeouts"


PATHS = [
    Path("sync-single", "single"),
    Path("sync-sentinel", "sentinel"),
    Path("sync-cluster", "cluster"),
    Path("async-single", "single", asynchronous=True),
    Path("async-sentinel", "sentinel", asynchronous=True),
    Path("async-cluster", "cluster", asynchronous=True),
    Path("async-cluster-pipeline", "cluster", asynchronous=True, pipeline=True),
]


@pytest.fixture(params=PATHS, ids=[path.name for path in PATHS])
def path(request: pytest.FixtureRequest) -> Path:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def url(path: Path, request: pytest.FixtureRequest) -> str:
    if path.topology == "single":
        return str(request.getfixturevalue("redis_url"))
    if path.topology == "sentinel":
        return str(request.getfixturevalue("sentinel_service").url)
    return str(request.getfixturevalue("redis_cluster").url)


@dataclass
class Setup:
    """An app on one path whose pools hold one connection each."""

    path: Path
    app: Flask
    redis_pool: RedisPool

    def stats(self) -> Any:
        return self.redis_pool.stats(self.app)

    def client(self) -> Any:
        """The client of the path: its commands check out of the pool under test."""
        cluster, asynchronous = self.path.topology == "cluster", self.path.asynchronous
        if asynchronous:
            return self.redis_pool.async_cluster_client if cluster else self.redis_pool.async_client
        return self.redis_pool.cluster_client if cluster else self.redis_pool.client

    def server(self) -> Redis:
        """A plain client of the server KEY lives on (a cluster's node, Sentinel's master)."""
        if self.path.topology == "cluster":
            node = self.redis_pool.cluster_client.get_node_from_key(KEY)
            return Redis(host=node.host, port=node.port, socket_timeout=BOUND)
        address = self.redis_pool.get_pool(self.app).address or ""
        host, _, port = address.rpartition(":")
        return Redis(host=host, port=int(port), socket_timeout=BOUND)


@pytest.fixture
def make_setup(path: Path, url: str, make_app: Callable[..., Flask]) -> Callable[..., Setup]:
    def make(**config: Any) -> Setup:
        app = make_app(
            REDIS_URL=url, REDIS_MAX_CONNECTIONS=1, REDIS_STATS_INTERVAL=0, REDIS_SOCKET_TIMEOUT=BOUND, **config
        )
        setup = Setup(path, app, RedisPool(app))
        with app.app_context():
            if path.topology == "cluster":  # the slots are known: KEY's node has its pool
                setup.redis_pool.cluster_client.delete(KEY, HELD)
            else:
                setup.redis_pool.client.delete(KEY)
        return setup

    return make


# --- sync: the test holds the pool's connection, waiters are threads -------------------


@contextmanager
def held(setup: Setup) -> Iterator[None]:
    """The only connection of KEY's sync pool, taken by the test until the block ends."""
    redis_pool = setup.redis_pool
    if setup.path.topology == "cluster":
        pool = redis_pool.cluster_client.get_node_from_key(KEY).redis_connection.connection_pool
    else:
        pool = redis_pool.get_pool(setup.app)
    connection = pool.get_connection()
    try:
        yield
    finally:
        pool.release(connection)


def start_waiter(setup: Setup, outcomes: list[object]) -> threading.Thread:
    """A thread whose one command queues for the connection; ``outcomes`` gets its reply
    (the INCR's count: the order it was served in) or its error."""

    def run() -> None:
        with setup.app.app_context():
            try:
                outcomes.append(setup.client().incr(KEY))
            except Exception as exc:  # the test asserts on it
                outcomes.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def queued(setup: Setup, count: int) -> None:
    wait_until(lambda: setup.stats()[setup.path.waits] == count, BOUND, f"{count} checkouts to queue")


def timed_checkout(setup: Setup) -> tuple[BaseException | None, float]:
    """One command while the connection is held: what it raised, and after how long."""
    start = time.monotonic()
    try:
        with setup.app.app_context():
            if setup.path.asynchronous:
                setup.app.ensure_sync(async_timed_checkout)(setup)
            else:
                with held(setup):
                    setup.client().incr(KEY)
    except PoolExhaustedError as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


# --- async: the test holds the loop's connection, waiters are tasks ----------------------


class AsyncHold:
    """The only connection of KEY's pool on this loop (a cluster node's: a BLPOP in flight,
    which an LPUSH from outside ends), taken until :meth:`give_back`."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self._connection: Any = None
        self._pool: Any = None
        self._server: Redis | None = None
        self._blpop: asyncio.Task[Any] | None = None

    async def take(self) -> None:
        client = self.setup.client()
        if self.setup.path.topology == "cluster":
            self._blpop = asyncio.ensure_future(client.blpop(HELD, timeout=BOUND / 2))
            server = self._server = self.setup.server()  # closed by give_back()
            await until(lambda: blocked_in(server, self.setup.app.import_name, "blpop"), "the BLPOP to block")
        else:
            self._pool = client.connection_pool
            self._connection = await self._pool.get_connection()

    async def give_back(self) -> None:
        if self._blpop is not None and self._server is not None:
            with self._server as server:
                server.lpush(HELD, "go")
            await self._blpop
        else:
            await self._pool.release(self._connection)


async def until(predicate: Callable[[], object], what: str) -> None:
    """Let the loop run until ``predicate()`` holds (bounded)."""
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def async_command(setup: Setup) -> Any:
    client = setup.client()
    if setup.path.pipeline:
        async with client.pipeline() as pipe:
            pipe.incr(KEY)
            return (await pipe.execute())[0]
    return await client.incr(KEY)


async def gathered(waiters: list[Awaitable[Any]]) -> list[object]:
    return list(await asyncio.gather(*waiters, return_exceptions=True))


async def async_timed_checkout(setup: Setup) -> None:
    hold = AsyncHold(setup)
    await hold.take()
    try:
        await async_command(setup)
    finally:
        await hold.give_back()


# --- the properties -----------------------------------------------------------------------


def test_a_full_pool_serves_its_waiters_in_the_order_they_came(make_setup: Callable[..., Setup]) -> None:
    """(a) and (d): two checkouts queue behind the held connection; the first to come is
    served first (its INCR replies 1); each wait is counted once, no timeout."""
    setup = make_setup(REDIS_POOL_TIMEOUT=BOUND)
    if setup.path.asynchronous:
        outcomes = run_async_waiters(setup)
    else:
        first: list[object] = []
        second: list[object] = []
        with setup.app.app_context(), held(setup):
            threads = [start_waiter(setup, first)]
            queued(setup, 1)
            threads.append(start_waiter(setup, second))
            queued(setup, 2)
        for thread in threads:
            thread.join(BOUND)
        outcomes = [*first, *second]
    assert outcomes == [1, 2]
    stats = setup.stats()
    assert (stats[setup.path.waits], stats[setup.path.timeouts]) == (2, 0)


def run_async_waiters(setup: Setup) -> list[object]:
    """Two tasks queue behind the held connection; their INCR replies, in the order they
    were started (1, 2 when served first come first served)."""

    async def run() -> list[object]:
        hold = AsyncHold(setup)
        await hold.take()
        first = asyncio.ensure_future(async_command(setup))
        await until(lambda: setup.stats()["async_waits"] == 1, "the first to queue")
        second = asyncio.ensure_future(async_command(setup))
        await until(lambda: setup.stats()["async_waits"] == 2, "the second to queue")
        await hold.give_back()
        return await gathered([first, second])

    with setup.app.app_context():
        return list(setup.app.ensure_sync(run)())


def test_a_checkout_gives_up_after_the_pool_timeout_naming_the_keys(
    make_setup: Callable[..., Setup], path: Path
) -> None:
    """(b) and (d): PoolExhaustedError after POOL_TIMEOUT at the earliest; one wait and one
    timeout counted."""
    setup = make_setup(REDIS_POOL_TIMEOUT=0.3)
    error, took = timed_checkout(setup)
    assert error is not None
    assert took >= 0.3
    assert str(error).startswith(
        "No free Redis connection: 1 in use of the 1 allowed by REDIS_MAX_CONNECTIONS, and none was "
        "freed within REDIS_POOL_TIMEOUT=0.3 s. Raise REDIS_MAX_CONNECTIONS"
    )
    stats = setup.stats()
    assert (stats[setup.path.waits], stats[setup.path.timeouts]) == (1, 1)


def test_no_wait_when_the_pool_does_not_block(make_setup: Callable[..., Setup], path: Path) -> None:
    """(c) and (d): with POOL_BLOCKING false the checkout raises at once (long before
    POOL_TIMEOUT); no wait counted, one timeout."""
    setup = make_setup(REDIS_POOL_BLOCKING=False, REDIS_POOL_TIMEOUT=BOUND)
    error, took = timed_checkout(setup)
    assert error is not None
    assert took < BOUND
    assert "REDIS_POOL_BLOCKING is false, so no wait" in str(error)
    stats = setup.stats()
    assert (stats[setup.path.waits], stats[setup.path.timeouts]) == (0, 1)


def test_closing_the_app_wakes_its_waiters(make_setup: Callable[..., Setup], path: Path) -> None:
    """(e): a checkout waiting when the app closes raises the "closed" RuntimeError at once,
    not PoolExhaustedError after POOL_TIMEOUT."""
    setup = make_setup(REDIS_POOL_TIMEOUT=BOUND)
    if setup.path.asynchronous:
        outcomes = close_while_tasks_wait(setup)
    else:
        outcomes = []
        with setup.app.app_context(), held(setup):
            waiter = start_waiter(setup, outcomes)
            queued(setup, 1)
            setup.redis_pool.close(setup.app)
            waiter.join(BOUND)
    [error] = outcomes
    assert isinstance(error, RuntimeError), error
    assert "closed" in str(error)


def close_while_tasks_wait(setup: Setup) -> list[object]:
    """Close the app from another thread while a task of this loop waits."""

    async def run() -> list[object]:
        hold = AsyncHold(setup)
        await hold.take()
        waiter = asyncio.ensure_future(async_command(setup))
        await until(lambda: setup.stats()["async_waits"] == 1, "the task to queue")
        closer = threading.Thread(target=setup.redis_pool.close, args=(setup.app,))
        closer.start()
        outcomes = await gathered([waiter])
        await until(lambda: not closer.is_alive(), "close() to return")
        await hold.give_back()  # a command in flight ends undisturbed
        return outcomes

    with setup.app.app_context():
        outcomes = list(setup.app.ensure_sync(run)())
    # Its loop ran while the app closed, so its pool closes with the loop: now.
    setup.app.extensions[LOOPS_KEY].close()
    return outcomes


def test_an_async_connect_that_fails_leaves_the_wait_counting_right(
    make_app: Callable[..., Flask], own_server: Any
) -> None:
    """A checkout whose connect fails gives its place back once: the next checkout that
    finds the pool full still counts as a wait (it was given back twice, and the pool
    then counted one checkout fewer than it held)."""
    app = make_app(REDIS_URL=own_server.url, REDIS_MAX_CONNECTIONS=1, REDIS_STATS_INTERVAL=0, REDIS_POOL_TIMEOUT=0.2)
    redis_pool = RedisPool(app)
    admin = Redis.from_url(own_server.url, socket_timeout=BOUND)

    async def run() -> tuple[BaseException | None, BaseException | None]:
        pool = redis_pool.async_client.connection_pool
        admin.config_set("requirepass", "not-given")  # the next connect fails
        try:
            failed = await caught(redis_pool.async_client.ping())
        finally:
            admin.config_set("requirepass", "")
        connection = await pool.get_connection()
        try:
            return failed, await caught(redis_pool.async_client.ping())
        finally:
            await pool.release(connection)

    with admin, app.app_context():
        failed, waited = app.ensure_sync(run)()
    assert failed is not None
    assert not isinstance(failed, PoolExhaustedError)
    assert isinstance(waited, PoolExhaustedError)
    stats = redis_pool.stats(app)
    assert (stats["async_waits"], stats["async_timeouts"]) == (1, 1)


async def caught(command: Awaitable[object]) -> BaseException | None:
    """What ``command`` raised, if anything."""
    try:
        await command
    except Exception as exc:
        return exc
    return None


# --- what the async cluster client's wait must not do -------------------------------------

#: A key of KEY's slot that a test writes besides KEY.
OTHER = "{wait}:other"


def async_cluster(make_app: Callable[..., Flask], cluster_url: str, **config: Any) -> Setup:
    """An app whose async cluster client's nodes hold one connection each."""
    app = make_app(
        REDIS_URL=cluster_url, REDIS_MAX_CONNECTIONS=1, REDIS_STATS_INTERVAL=0, REDIS_SOCKET_TIMEOUT=BOUND, **config
    )
    setup = Setup(Path("async-cluster", "cluster", asynchronous=True), app, RedisPool(app))
    with app.app_context():
        setup.redis_pool.cluster_client.delete(KEY, HELD, OTHER)
    return setup


def run_in_app(setup: Setup, run: Callable[[], Awaitable[object]]) -> Any:
    with setup.app.app_context():
        return setup.app.ensure_sync(run)()


def test_a_waiting_cluster_pipeline_never_runs_another_batch(
    make_app: Callable[..., Flask], redis_cluster: Any
) -> None:
    """A pipeline that found a node full and holds a command its re-run could not queue
    again (``mset_nonatomic()`` queues past ``execute_command()``) raises, counted as one
    timeout, instead of running the rest (it returned ``[1]``, the MSET lost unsaid)."""
    setup = async_cluster(make_app, redis_cluster.url, REDIS_POOL_TIMEOUT=BOUND)

    async def run() -> BaseException | None:
        hold = AsyncHold(setup)
        await hold.take()
        async with setup.client().pipeline() as pipe:
            pipe.incr(KEY)
            pipe.mset_nonatomic({OTHER: "1"})
            execute = asyncio.ensure_future(caught(pipe.execute()))
            await until(lambda: setup.stats()["async_waits"] == 1, "the pipeline to queue")
            await hold.give_back()
            return await execute

    error = run_in_app(setup, run)
    assert isinstance(error, PoolExhaustedError), error
    assert "not run again" in str(error)
    assert "REDIS_MAX_CONNECTIONS" in str(error)
    with setup.app.app_context(), setup.server() as server:
        assert (server.get(KEY), server.get(OTHER)) == (None, None)  # nothing of it ran
    assert setup.stats()["async_timeouts"] == 1


@pytest.mark.skipif(
    REDIS_PY_7,
    reason="redis-py 7's async cluster pipeline runs WATCH through asyncio.run() in a thread of its own, so its "
    "connection belongs to an event loop that is closed at once and can never be closed itself",
)
def test_a_connection_a_transaction_gives_back_wakes_the_waiting_command(
    make_app: Callable[..., Flask], redis_cluster: Any
) -> None:
    """A WATCH holds its node's connection outside any command; the command waiting for
    it gets it after ``reset()``, not a PoolExhaustedError after POOL_TIMEOUT."""
    setup = async_cluster(make_app, redis_cluster.url, REDIS_POOL_TIMEOUT=BOUND)

    async def run() -> tuple[object, float]:
        client = setup.client()
        pipe = client.pipeline(transaction=True)
        await pipe.watch(KEY)
        get = asyncio.ensure_future(client.get(KEY))
        await until(lambda: setup.stats()["async_waits"] == 1, "the GET to queue")
        start = time.monotonic()
        await pipe.reset()
        return await get, time.monotonic() - start

    got, waited = run_in_app(setup, run)
    assert got is None
    assert waited < BOUND / 2
    assert setup.stats()["async_timeouts"] == 0


def test_an_operation_that_cannot_wait_raises_our_error_at_once(
    make_app: Callable[..., Flask], redis_cluster: Any
) -> None:
    """A command sent to every primary, and a WATCH, that find a node full raise
    PoolExhaustedError naming the keys, each counted as one timeout, without a wait
    (redis-py's bare MaxConnectionsError came through)."""
    setup = async_cluster(make_app, redis_cluster.url, REDIS_POOL_TIMEOUT=BOUND)

    async def run() -> list[BaseException | None]:
        hold = AsyncHold(setup)
        await hold.take()
        try:
            return [
                await caught(setup.client().execute_command("DBSIZE", target_nodes="primaries")),
                await caught(setup.client().pipeline(transaction=True).watch(KEY)),
            ]
        finally:
            await hold.give_back()

    errors = run_in_app(setup, run)
    for error in errors:
        assert isinstance(error, PoolExhaustedError), errors
        assert "does not wait" in str(error)
        assert "REDIS_MAX_CONNECTIONS" in str(error)
    stats = setup.stats()
    assert (stats["async_waits"], stats["async_timeouts"]) == (0, 2)
