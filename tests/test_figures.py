"""The same figures on every path: a Redis Cluster's commands and pipelines count the
same checkouts through ``cluster_client`` and ``async_cluster_client``, and the async
client's connections count in use while a command or pipeline holds them, against a real
cluster (``redis_cluster``: 3 masters, 3 replicas).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from flask import Flask
from redis.cluster import RedisCluster

from flask_redispool import RedisPool
from flask_redispool.testing import RedisClusterServers

#: Keys spread over every master.
KEYS = [f"figures:{i}" for i in range(30)]
#: Keys in one slot, for a transaction.
SLOT_KEYS = [f"{{figures}}:{i}" for i in range(5)]


def masters_of(cluster: RedisClusterServers, keys: list[str]) -> int:
    """How many masters hold ``keys``, as redis-py routes them."""
    with RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port) as probe:
        return len({probe.get_node_from_key(key).name for key in keys})


def sync_commands(client: Any) -> None:
    for key in KEYS[:10]:
        client.set(key, 1)


def sync_pipeline(client: Any) -> None:
    with client.pipeline() as pipe:
        for key in KEYS:
            pipe.incr(key)
        assert len(pipe.execute()) == len(KEYS)


def sync_transaction(client: Any) -> None:
    with client.pipeline(transaction=True) as pipe:
        for key in SLOT_KEYS:
            pipe.incr(key)
        assert len(pipe.execute()) == len(SLOT_KEYS)


async def async_commands(client: Any) -> None:
    for key in KEYS[:10]:
        await client.set(key, 1)


async def async_pipeline(client: Any) -> None:
    async with client.pipeline() as pipe:
        for key in KEYS:
            pipe.incr(key)
        assert len(await pipe.execute()) == len(KEYS)


async def async_transaction(client: Any) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for key in SLOT_KEYS:
            pipe.incr(key)
        assert len(await pipe.execute()) == len(SLOT_KEYS)


@pytest.mark.parametrize(
    ("run_sync", "run_async", "keys"),
    [
        (sync_commands, async_commands, KEYS[:10]),
        (sync_pipeline, async_pipeline, KEYS),
        (sync_transaction, async_transaction, SLOT_KEYS),
    ],
    ids=["commands", "pipeline", "transaction"],
)
def test_cluster_checkouts_are_counted_alike_sync_and_async(
    make_app: Callable[..., Flask],
    redis_cluster: RedisClusterServers,
    run_sync: Callable[[Any], None],
    run_async: Callable[[Any], Awaitable[None]],
    keys: list[str],
) -> None:
    app = make_app(REDIS_URL=redis_cluster.url, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)

    async def on_async_client() -> int:
        client = redis_pool.async_cluster_client
        await client.initialize()  # ask for the slots first, as the sync client is made before counting
        before = redis_pool.stats(app)["async_checkouts"]
        await run_async(client)  # on connections made now: their set-up is no checkout
        return redis_pool.stats(app)["async_checkouts"] - before

    with app.app_context():
        client = redis_pool.cluster_client
        before = redis_pool.stats(app)["checkouts"]
        run_sync(client)
        sync_checkouts = redis_pool.stats(app)["checkouts"] - before
        async_checkouts = app.ensure_sync(on_async_client)()
    # A command takes one connection; a pipeline one per master its keys are on (a
    # transaction's are on one).
    expected = len(keys) if run_sync is sync_commands else masters_of(redis_cluster, keys)
    assert (sync_checkouts, async_checkouts) == (expected, expected)
    assert redis_pool.stats(app)["async_in_use"] == 0


def test_async_cluster_connections_count_in_use_while_a_command_or_pipeline_holds_them(
    make_app: Callable[..., Flask], redis_cluster: RedisClusterServers
) -> None:
    app = make_app(REDIS_URL=redis_cluster.url, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    seen: list[int] = []

    def spy(response: Any, **options: Any) -> Any:
        """Runs as each INCRBY reply is read: its connection is still out of its node."""
        seen.append(redis_pool.stats(app)["async_in_use"])
        return response

    async def run() -> tuple[list[int], list[int]]:
        client = redis_pool.async_cluster_client
        await client.initialize()  # ask for the slots first: the commands go where they belong
        client.set_response_callback("INCRBY", spy)  # what incr() sends
        await client.incr(KEYS[0])
        on_command = seen[:]
        seen.clear()
        async with client.pipeline() as pipe:
            for key in KEYS:
                pipe.incr(key)
            await pipe.execute()
        return on_command, seen[:]

    with app.app_context():
        on_command, on_pipeline = app.ensure_sync(run)()
    assert on_command == [1]
    assert len(on_pipeline) == len(KEYS)
    assert 0 < min(on_pipeline) <= max(on_pipeline) <= masters_of(redis_cluster, KEYS)
    stats = redis_pool.stats(app)
    asked_for_slots = 2  # CLUSTER SLOTS and COMMAND, each on a connection of its own
    assert stats["async_in_use"] == 0
    assert stats["async_checkouts"] == asked_for_slots + 1 + masters_of(redis_cluster, KEYS)


def test_async_cluster_commands_that_wait_count_in_use_only_once_they_hold_a_connection(
    make_app: Callable[..., Flask], redis_cluster: RedisClusterServers
) -> None:
    app = make_app(REDIS_URL=redis_cluster.url, REDIS_STATS_INTERVAL=0, REDIS_MAX_CONNECTIONS=2)
    redis_pool = RedisPool(app)
    seen: list[int] = []

    def spy(response: Any, **options: Any) -> Any:
        seen.append(redis_pool.stats(app)["async_in_use"])
        return response

    async def burst() -> None:
        client = redis_pool.async_cluster_client
        await client.initialize()
        client.set_response_callback("INCRBY", spy)  # what incr() sends
        await asyncio.gather(*(client.incr(KEYS[0]) for _ in range(10)))  # one node, 2 connections

    with app.app_context():
        app.ensure_sync(burst)()
    stats = redis_pool.stats(app)
    assert stats["async_waits"] > 0
    assert len(seen) == 10
    assert max(seen) <= 2  # the commands that waited held no connection meanwhile
    assert (stats["async_in_use"], stats["async_checkouts"]) == (0, 2 + 10)  # the slots asked for, the INCRs
