"""``async_client`` in Flask ``async def`` views, against real servers."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio
from flask import Flask
from redis import Redis
from redis.exceptions import ConnectionError

from flask_redispool import RedisPool
from flask_redispool._extension import LOOPS_KEY, app_states
from flask_redispool._snapshots import build_report
from flask_redispool._stats import ProcessRow
from flask_redispool.testing import RedisServer

from .conftest import blocked_in, held_by_this_process, json_of, wait_until


@pytest.fixture
def async_app(make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool) -> Flask:
    """An app whose async views count hits and report the loop they ran on."""
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=3)
    redis_pool.init_app(app)

    @app.get("/hits")
    async def hits() -> dict[str, int]:
        return {"hits": await redis_pool.async_client.incr("hits"), "loop": id(asyncio.get_running_loop())}

    return app


def loops_of(app: Flask) -> int:
    return app.extensions[LOOPS_KEY].live_loops()  # type: ignore[no-any-return]


def test_sequential_async_views_share_one_loop_and_one_connection(
    async_app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    client = async_app.test_client()
    answers = [json_of(client.get("/hits")) for _ in range(20)]
    assert [a["hits"] for a in answers] == list(range(1, 21))
    assert len({a["loop"] for a in answers}) == 1  # asgiref would have made 20 loops
    assert held_by_this_process(server, async_app.import_name) == 1
    stats = redis_pool.stats(async_app)
    assert (stats["async_pools"], stats["async_in_use"], stats["created"]) == (1, 0, 0)  # no sync connection
    assert (stats["async_checkouts"], stats["async_waits"], stats["checkouts"]) == (20, 0, 0)  # counted as async


def test_async_views_from_several_threads_get_a_pool_each_closed_when_the_thread_ends(
    async_app: Flask, server: Redis
) -> None:
    (state,) = app_states(async_app)
    during: list[int] = []
    barrier = threading.Barrier(4)

    def serve() -> None:
        client = async_app.test_client()
        for _ in range(25):
            assert client.get("/hits").status_code == 200
        barrier.wait()  # all four threads, with their loops, are alive here
        during.append(state.async_pools.pool_count())

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert server.get("hits") == b"100"
    assert min(during) == 4
    assert held_by_this_process(server, async_app.import_name) <= 4 * 3
    async_app.test_client().get("/hits")  # a new loop here closes the ended threads' loops
    assert (loops_of(async_app), state.async_pools.pool_count()) == (1, 1)
    assert held_by_this_process(server, async_app.import_name) == 1


def test_ten_thousand_async_requests_stay_bounded_and_memory_flat(async_app: Flask, server: Redis) -> None:
    """Like a dev server with a thread per request batch: 50 rounds of 4 new threads."""
    (state,) = app_states(async_app)
    most_held = 0
    objects: list[int] = []
    for round_ in range(50):

        def serve() -> None:
            client = async_app.test_client()
            for _ in range(50):
                client.get("/hits")

        threads = [threading.Thread(target=serve) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        most_held = max(most_held, held_by_this_process(server, async_app.import_name))
        assert state.async_pools.pool_count() <= 4 + 4  # this round's, and the last round's until swept
        if round_ in (10, 49):
            gc.collect()
            objects.append(len(gc.get_objects()))
    assert server.get("hits") == b"10000"
    assert most_held <= 8 * 3  # max_connections per live loop
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()]
    assert len(loops) <= 4 + 4
    assert objects[1] - objects[0] < 1000, objects  # no growth with the number of requests


def test_cancelling_mid_command_leaves_no_half_read_connection(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_SOCKET_TIMEOUT=5)
    redis_pool.init_app(app)

    @app.get("/cancel")
    async def cancel() -> dict[str, object]:
        client = redis_pool.async_client
        slow = asyncio.create_task(client.execute_command("BLPOP", "never-filled", 1))  # its nil reply: in 1 s
        deadline = time.monotonic() + 10
        while not blocked_in(server, app.import_name, "blpop"):  # on the wire, its reply not yet read
            assert time.monotonic() < deadline, "the BLPOP never reached the server"
            await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await client.set("k", "v")
        got, echo = await client.get("k"), await client.echo("after")
        assert isinstance(got, bytes)
        assert isinstance(echo, bytes)
        return {"get": got.decode(), "echo": echo.decode()}

    assert app.test_client().get("/cancel").json == {"get": "v", "echo": "after"}


def test_a_pipeline_left_watching_is_given_back_disconnected(
    async_app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    @async_app.get("/watch")
    async def watch() -> str:
        pipe = redis_pool.async_client.pipeline()
        await pipe.watch("hits")
        return str(id(pipe.connection))  # returns without reset(): the connection is still out

    (state,) = app_states(async_app)
    assert async_app.test_client().get("/watch").status_code == 200
    assert state.async_pools.in_use() == 0
    assert json_of(async_app.test_client().get("/hits"))["hits"] == 1  # the pool still works


class Boom(Exception):
    """Raised by an async view after it took a connection."""


async def async_pipeline(client: redis.asyncio.Redis) -> None:
    pipe = client.pipeline()
    await pipe.watch("hits")


async def async_pubsub(client: redis.asyncio.Redis) -> None:
    await client.pubsub().subscribe("news")


async def async_monitor(client: redis.asyncio.Redis) -> None:
    await client.monitor().__aenter__()


async def async_single_connection_client(client: redis.asyncio.Redis) -> None:
    await client.client().set("guarded", "from the failed view")


@pytest.mark.parametrize("take", [async_pipeline, async_pubsub, async_monitor, async_single_connection_client])
def test_every_async_connection_holder_is_given_back_when_the_view_raises(
    make_app: Callable[..., Flask],
    redis_url: str,
    redis_pool: RedisPool,
    server: Redis,
    take: Callable[[redis.asyncio.Redis], Awaitable[None]],
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.2)
    redis_pool.init_app(app)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/leak")
    async def leak() -> str:
        await take(redis_pool.async_client)
        raise Boom

    @app.get("/hits")
    async def hits() -> str:
        return str(await redis_pool.async_client.incr("hits"))

    def unwatched() -> int:
        return int(server.info("commandstats").get("cmdstat_unwatch", {}).get("calls", 0))

    (state,) = app_states(app)
    client = app.test_client()
    before = unwatched()
    for hit in (1, 2, 3):  # one connection in all: each would be lost without teardown
        assert client.get("/leak").status_code == 500
        assert state.async_pools.in_use() == 0
        assert client.get("/hits").text == str(hit)
    assert server.pubsub_numsub("news") == [(b"news", 0)]
    # Teardown talks to nobody: disconnecting dropped a WATCH (redis-py 7's pipeline
    # reset() reconnected to send UNWATCH, and waited on a server that did not answer).
    assert unwatched() == before


@pytest.mark.parametrize("entered", [False, True], ids=["made", "entered"])
def test_an_async_monitor_the_view_drops_gives_its_connection_back(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis, entered: bool
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=0.2)
    redis_pool.init_app(app)

    @app.get("/monitor")
    async def monitor() -> str:
        dropped = redis_pool.async_client.monitor()  # redis.asyncio's takes its connection on entering
        if entered:
            await dropped.__aenter__()  # MONITOR sent, never exited
        return "ok"

    @app.get("/hits")
    async def hits() -> str:
        return str(await redis_pool.async_client.incr("hits"))

    (state,) = app_states(app)
    client = app.test_client()
    for hit in (1, 2, 3):  # two connections in all: each monitor would keep one for good
        assert client.get("/monitor").text == "ok"
        assert client.get("/hits").text == str(hit)
        assert state.async_pools.in_use() == 0
    monitoring = [c for c in server.client_list() if c["name"].startswith(app.import_name) and "O" in c["flags"]]
    assert monitoring == []


def test_an_async_monitor_dropped_outside_a_context_gives_its_connection_back(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    """No teardown remembers it (code that kept the loop's client and runs outside a context)."""
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=0.2)
    redis_pool.init_app(app)
    (state,) = app_states(app)
    loop = app.extensions[LOOPS_KEY].loop()
    client = state.async_pools.client(loop)

    async def drop_a_monitor() -> int:
        await client.monitor().__aenter__()  # type: ignore[attr-defined]  # MONITOR sent, never exited
        return await client.incr("hits")  # type: ignore[attr-defined,no-any-return]

    assert [loop.run_until_complete(drop_a_monitor()) for _ in range(3)] == [1, 2, 3]
    # The last one's connection is given back on the loop's next turns.
    wait_until(lambda: loop.run_until_complete(asyncio.sleep(0)) or state.async_pools.in_use() == 0, 5, "the release")
    monitoring = [c for c in server.client_list() if c["name"].startswith(app.import_name) and "O" in c["flags"]]
    assert monitoring == []


def test_an_async_client_kept_past_close_raises_and_reopens_nothing(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, JOBS_REDIS_URL=redis_url)
    redis_pool.init_app(app)
    RedisPool(app, config_prefix="JOBS_REDIS")  # keeps the app's event loops open after close()
    kept: list[redis.asyncio.Redis] = []

    @app.get("/hits")
    async def hits() -> str:
        kept.append(redis_pool.async_client)
        return str(await kept[-1].incr("hits"))

    assert app.test_client().get("/hits").text == "1"
    redis_pool.close(app)
    loop = app.extensions[LOOPS_KEY].loop()
    with pytest.raises(RuntimeError, match=r"was closed on app .* by close\(\)"):
        loop.run_until_complete(kept[0].incr("hits"))
    assert server.get("hits") == b"1"
    wait_until(lambda: held_by_this_process(server, app.import_name) == 0, 5, "the async connection to close")


def test_async_client_recovers_after_a_server_restart(
    make_app: Callable[..., Flask], own_server: RedisServer, redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=own_server.url)
    redis_pool.init_app(app)

    @app.get("/ping")
    async def ping() -> tuple[str, int]:
        try:
            return str(await redis_pool.async_client.ping()), 200
        except ConnectionError as exc:
            return type(exc).__name__, 503

    client = app.test_client()
    assert client.get("/ping").status_code == 200
    own_server.kill()
    assert (client.get("/ping").status_code, client.get("/ping").text) == (503, "ConnectionError")
    own_server.start()
    assert (client.get("/ping").status_code, client.get("/ping").text) == (200, "True")


def test_an_exhausted_async_pool_raises_pool_exhausted(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.1, REDIS_SOCKET_TIMEOUT=2)
    redis_pool.init_app(app)

    @app.get("/two")
    async def two() -> str:
        client = redis_pool.async_client
        results = await asyncio.gather(  # BLPOP holds the one connection 1 s, the PING waits 0.1 s
            client.execute_command("BLPOP", "never-filled", 1), client.ping(), return_exceptions=True
        )
        return f"{type(results[1]).__name__}: {results[1]}"

    text = app.test_client().get("/two").text
    assert text.startswith("PoolExhaustedError: No free Redis connection: 1 in use of the 1 allowed by REDIS_MAX")
    stats = redis_pool.stats(app)
    assert (stats["async_timeouts"], stats["async_checkouts"], stats["timeouts"]) == (1, 1, 0)  # counted as async
    assert stats["async_waits"] == 1  # the PING found the pool of one full


def test_on_one_server_the_async_replica_client_is_the_async_client(async_app: Flask, redis_pool: RedisPool) -> None:
    @async_app.get("/same")
    async def same() -> dict[str, bool]:
        return {"same": redis_pool.async_replica_client is redis_pool.async_client}

    assert json_of(async_app.test_client().get("/same")) == {"same": True}


def test_async_client_needs_a_loop_and_a_context(async_app: Flask, redis_pool: RedisPool) -> None:
    @async_app.get("/sync")
    def sync_view() -> str:
        return str(redis_pool.async_client)

    async_app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match=r"async_client needs a running event loop"):
        async_app.test_client().get("/sync")
    with pytest.raises(RuntimeError, match=r"used outside an application context"):
        redis_pool.async_client  # noqa: B018


def test_fakeredis_urls_work_async_on_the_same_fake_server(
    make_app: Callable[..., Flask], redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL="fakeredis://")
    redis_pool.init_app(app)

    @app.get("/")
    async def both() -> dict[str, int]:
        redis_pool.client.set("n", 41)
        return {"n": await redis_pool.async_client.incr("n")}

    assert app.test_client().get("/").json == {"n": 42}


def test_plain_flask_runs_each_async_view_on_a_new_loop_it_then_closes() -> None:
    """The finding the design rests on (Flask 3.1, asgiref): without flask-redispool,
    every async view call gets a new event loop, in another thread, closed afterwards."""
    app = Flask("plain")
    loops: list[asyncio.AbstractEventLoop] = []
    threads: list[int] = []

    @app.get("/")
    async def view() -> str:
        loops.append(asyncio.get_running_loop())
        threads.append(threading.get_ident())
        return "ok"

    client = app.test_client()
    for _ in range(3):
        client.get("/")
    assert len({id(loop) for loop in loops}) == 3
    assert all(loop.is_closed() for loop in loops)
    assert threading.get_ident() not in threads


def test_an_app_using_only_async_client_publishes_its_snapshot(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=0.2)
    redis_pool.init_app(app)

    @app.get("/")
    async def view() -> str:
        return str(await redis_pool.async_client.incr("n"))

    app.test_client().get("/")
    (state,) = app_states(app)

    def own_row() -> ProcessRow | None:
        rows = build_report(server, state.pools)["processes"]
        return next((r for r in rows if r["pid"] == os.getpid() and r["async_pools"] is not None), None)

    row = wait_until(own_row, 10, "this process's snapshot")
    assert (row["async_pools"], row["in_use"], row["server_connections"], row["suspect"]) == (1, 0, 1, None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_loop_and_connection(async_app: Flask, server: Redis) -> None:
    @async_app.get("/id")
    async def client_id() -> str:
        return str(await redis_pool_of(async_app).async_client.client_id())

    client = async_app.test_client()
    parent_id = client.get("/id").text
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first async view must not reuse the parent's socket
        try:
            os.write(write_end, client.get("/id").text.encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    assert child_id.isdigit()
    assert child_id != parent_id
    assert client.get("/id").text == parent_id  # the parent's connection is still its own


def redis_pool_of(app: Flask) -> RedisPool:
    (state,) = app_states(app)
    return state.extension


def test_inside_a_running_loop_async_views_behave_as_in_plain_flask(async_app: Flask) -> None:
    async def view() -> str:
        return "ran"

    async def caller() -> str:  # a thread that already runs a loop calls a sync-wrapped view
        return async_app.async_to_sync(view)()  # type: ignore[no-any-return]

    with pytest.raises(RuntimeError, match="You cannot use AsyncToSync in the same thread as an async event loop"):
        asyncio.run(caller())


def test_async_client_on_a_loop_the_app_does_not_run_says_so(async_app: Flask, redis_pool: RedisPool) -> None:
    async def elsewhere() -> object:
        return redis_pool.async_client

    with async_app.app_context(), pytest.raises(RuntimeError, match=r"but this code runs on another loop"):
        asyncio.run(elsewhere())
