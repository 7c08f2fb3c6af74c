"""The same extension on a Quart app (the async Flask), against a real server."""

from __future__ import annotations

import asyncio
import builtins
import gc
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from quart import Quart, stream_with_context
from quart.testing import make_test_scope
from quart.typing import TestHTTPConnectionProtocol as HTTPConnection
from redis import Redis
from redis.client import PubSub
from werkzeug.datastructures import Headers

from flask_redispool import RedisPool
from flask_redispool._extension import app_states
from flask_redispool.testing import assert_nothing_held

from .conftest import close_pools, held_by_this_process
from .test_streaming import subscribers, wait_subscribed
from .views import Boom


@pytest.fixture
def quart_app(redis_url: str, redis_pool: RedisPool, request: pytest.FixtureRequest) -> Iterator[Quart]:
    app = Quart(f"quart_{request.node.name}"[:60])
    app.config.update(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=3)
    redis_pool.init_app(app)

    @app.get("/hits")
    async def hits() -> dict[str, int]:
        return {"hits": await redis_pool.async_client.incr("hits"), "loop": id(asyncio.get_running_loop())}

    @app.get("/sync")
    async def sync_hits() -> dict[str, int]:
        return {"hits": redis_pool.client.incr("hits")}  # the sync client works too

    @app.get("/watch")
    async def watch() -> str:
        pipe = redis_pool.async_client.pipeline()
        await pipe.watch("hits")
        return "left watching"

    yield app
    close_pools(app)  # type: ignore[arg-type]


def test_one_pool_on_quarts_loop_closed_after_serving(quart_app: Quart, redis_pool: RedisPool, server: Redis) -> None:
    (state,) = app_states(quart_app)
    during: dict[str, object] = {}

    async def serve() -> list[dict[str, int]]:
        async with quart_app.test_app() as test_app:
            client = test_app.test_client()
            answers = [await (await client.get("/hits")).get_json() for _ in range(20)]
            answers.append(await (await client.get("/sync")).get_json())
            during.update(
                pools=state.async_pools.pool_count(), held=held_by_this_process(server, quart_app.import_name)
            )
        return answers

    answers = asyncio.run(serve())
    assert [a["hits"] for a in answers] == list(range(1, 22))
    assert len({a["loop"] for a in answers[:20]}) == 1
    assert during == {"pools": 1, "held": 2}  # one async connection, one sync
    assert redis_pool.stats(quart_app)["async_pools"] == 0  # after_serving closed it
    assert held_by_this_process(server, quart_app.import_name) == 1  # the sync pool's, idle


def test_quart_teardown_gives_back_a_pipeline_left_watching(quart_app: Quart) -> None:
    (state,) = app_states(quart_app)

    async def serve() -> tuple[int, int]:
        async with quart_app.test_app() as test_app:
            client = test_app.test_client()
            response = await client.get("/watch")
            after = await (await client.get("/hits")).get_json()
            return response.status_code, state.async_pools.in_use() + 100 * after["hits"]

    assert asyncio.run(serve()) == (200, 100)  # nothing held, and the pool still serves


def test_redis_stats_runs_for_a_quart_app(quart_app: Quart, redis_pool: RedisPool) -> None:
    result = quart_app.test_cli_runner().invoke(args=["redis-stats", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)["pools"]
    assert report["pool"]["client_name"] == quart_app.import_name


# Streamed responses: Quart sends a view's async generator after its context's teardown.

Stream = Callable[[Any], AsyncIterator[bytes]]


async def messages(pubsub: Any, count: int, seconds: float = 5) -> AsyncIterator[bytes]:
    """Up to ``count`` messages' data from ``pubsub`` (sync or async), within ``seconds``.
    A sync pubsub waits in a thread, not on the loop."""
    deadline = time.monotonic() + seconds
    received = 0
    while received < count and time.monotonic() < deadline:
        if isinstance(pubsub, PubSub):
            message = await asyncio.to_thread(pubsub.get_message, timeout=0.1)
        else:
            message = await pubsub.get_message(timeout=0.1)
        if message is not None:
            received += 1
            yield message["data"] + b"\n"


def serve_stream(app: Quart, redis_pool: RedisPool, kind: str, stream: Stream) -> None:
    """``/events``: a view that subscribes to ``news`` with the ``kind`` client, then
    streams ``ready`` and ``stream(pubsub)``: a plain async generator, or one wrapped
    in ``stream_with_context`` (``kind`` ends with ``+context``)."""

    @app.get("/events")
    async def events() -> Any:
        if kind.startswith("sync"):
            pubsub: Any = redis_pool.client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe("news")
        else:
            pubsub = redis_pool.async_client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe("news")

        async def body() -> AsyncIterator[bytes]:
            yield b"ready\n"
            async for data in stream(pubsub):
                yield data

        return (stream_with_context(body) if kind.endswith("+context") else body)()


async def receive(connection: HTTPConnection) -> bytes:
    """The next chunk the server sent (``b""`` at the end), within 10 s."""
    return await asyncio.wait_for(connection.receive(), 10)


async def read_to_end(connection: HTTPConnection) -> list[bytes]:
    chunks = []
    while chunk := await receive(connection):
        chunks.append(chunk)
    return chunks


KINDS = ["async", "sync", "async+context", "sync+context"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_quart_stream_keeps_what_its_view_opened_until_it_is_exhausted(
    quart_app: Quart, redis_pool: RedisPool, server: Redis, kind: str
) -> None:
    """(Quart's teardown used to give the pubsub back before the stream's first message.)"""
    serve_stream(quart_app, redis_pool, kind, lambda pubsub: messages(pubsub, 3))

    async def serve() -> tuple[int, list[bytes]]:
        async with quart_app.test_app() as test_app, test_app.test_client().request("/events") as connection:
            await connection.send_complete()
            assert await receive(connection) == b"ready\n"  # the view has returned: the stream goes on
            subscribed = subscribers(server)
            for number in range(3):
                server.publish("news", str(number))
            chunks = await read_to_end(connection)
            assert_nothing_held(quart_app)  # back when the stream ended
        return subscribed, chunks

    assert asyncio.run(serve()) == (1, [b"0\n", b"1\n", b"2\n"])
    wait_subscribed(server, 0)  # the server forgets the subscriber as it reads the close


#: What a stream's error reaches the test client as: Quart 0.23 raises it in an exception group.
STREAM_ERROR: tuple[type[BaseException], ...] = (Boom, getattr(builtins, "BaseExceptionGroup", Boom))


def _is_or_holds_boom(error: BaseException) -> bool:
    """Whether ``error`` is the stream's :class:`Boom`, or an exception group holding it."""
    return isinstance(error, Boom) or any(_is_or_holds_boom(inner) for inner in getattr(error, "exceptions", ()))


@pytest.mark.parametrize("kind", KINDS)
def test_a_quart_stream_that_raises_gives_back_what_it_held(
    quart_app: Quart, redis_pool: RedisPool, server: Redis, kind: str
) -> None:
    async def stream(pubsub: Any) -> AsyncIterator[bytes]:
        async for data in messages(pubsub, 1):
            yield data
        raise Boom

    serve_stream(quart_app, redis_pool, kind, stream)

    async def request(test_app: Any) -> None:
        async with test_app.test_client().request("/events") as connection:
            await connection.send_complete()
            assert await receive(connection) == b"ready\n"
            server.publish("news", "x")
            assert await receive(connection) == b"x\n"

    async def serve() -> None:
        async with quart_app.test_app() as test_app:
            with pytest.raises(STREAM_ERROR) as raised:
                await request(test_app)
            assert _is_or_holds_boom(raised.value)
            assert_nothing_held(quart_app)

    asyncio.run(serve())
    wait_subscribed(server, 0)  # the server forgets the subscriber as it reads the close


@pytest.mark.parametrize("kind", KINDS)
def test_a_quart_stream_closed_early_gives_back_what_the_view_and_the_stream_held(
    quart_app: Quart, redis_pool: RedisPool, server: Redis, kind: str
) -> None:
    """The client went away mid-stream: Quart cancels the stream."""
    still_subscribed = []

    async def stream(pubsub: Any) -> AsyncIterator[bytes]:
        if kind.endswith("+context"):  # opened in the stream's own context, left watching
            await redis_pool.async_client.pipeline().watch("seen")
        try:
            async for data in messages(pubsub, 10, seconds=30):
                yield data
        finally:
            still_subscribed.append(pubsub.subscribed)

    serve_stream(quart_app, redis_pool, kind, stream)

    async def serve() -> None:
        async with quart_app.test_app() as test_app:
            async with test_app.test_client().request("/events") as connection:
                await connection.send_complete()
                assert await receive(connection) == b"ready\n"
                server.publish("news", "x")
                assert await receive(connection) == b"x\n"
                await connection.disconnect()
            assert still_subscribed == [True]  # the stream's finally could still use it
            assert_nothing_held(quart_app)

    asyncio.run(serve())
    wait_subscribed(server, 0)  # the server forgets the subscriber as it reads the close


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_quart_stream_that_never_starts_gives_back_what_the_view_held(
    quart_app: Quart, redis_pool: RedisPool, server: Redis, kind: str
) -> None:
    """The client went away before the headers were sent: Quart drops the response unsent."""
    serve_stream(quart_app, redis_pool, kind, lambda pubsub: messages(pubsub, 1))

    subscribed = []

    async def serve() -> None:
        started, never = asyncio.Event(), asyncio.Event()
        requests = [{"type": "http.request", "body": b"", "more_body": False}]

        async def asgi_receive() -> dict[str, Any]:
            if requests:
                return requests.pop()
            await started.wait()
            return {"type": "http.disconnect"}

        async def asgi_send(message: dict[str, Any]) -> None:
            assert message["type"] == "http.response.start"
            subscribed.append(subscribers(server))  # the view has returned
            started.set()
            await never.wait()  # the client is gone: the headers are never sent

        async with quart_app.test_app():
            scope = make_test_scope("http", "/events", "GET", Headers(), b"", "http", "", "1.1", None)
            await asyncio.wait_for(quart_app(scope, asgi_receive, asgi_send), 10)  # type: ignore[arg-type]
            gc.collect()
            deadline = time.monotonic() + 10
            while redis_pool.stats(quart_app)["in_use"] + redis_pool.stats(quart_app)["async_in_use"]:
                assert time.monotonic() < deadline, "the dropped stream's connection was not given back"
                await asyncio.sleep(0.01)  # the give-back runs on this loop

    asyncio.run(serve())
    assert subscribed == [1]
    wait_subscribed(server, 0)  # the server forgets the subscriber as it reads the close
