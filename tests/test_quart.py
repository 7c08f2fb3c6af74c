"""The same extension on a Quart app (the async Flask), against a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from quart import Quart
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool._extension import app_states

from .conftest import close_pools, held_by_this_process


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
