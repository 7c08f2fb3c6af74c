"""Snapshots published into Redis by every process, against a real server."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool._extension import app_states
from flask_redispool._snapshots import PublishedStats, read_snapshots, snapshot_key
from flask_redispool._stats import HOST
from flask_redispool.testing import free_port

from .conftest import Worker, our_connections, pools_of, wait_until

INTERVAL = 0.2
Snapshots = Callable[[Flask], dict[int, PublishedStats]]


@pytest.fixture
def app(make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool) -> Flask:
    app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=INTERVAL)
    redis_pool.init_app(app)
    return app


@pytest.fixture
def snapshots(server: Redis) -> Callable[[Flask], dict[int, PublishedStats]]:
    """The snapshots published for an app, by pid, read through a client of their own."""

    def read(app: Flask) -> dict[int, PublishedStats]:
        (state,) = app_states(app)
        return {stats["pid"]: stats for stats in read_snapshots(server, state.settings)[0]}

    return read


def use_redis(app: Flask, redis_pool: RedisPool) -> None:
    with app.app_context():
        redis_pool.client.incr("hits")


def test_nothing_is_published_before_the_first_connection(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    publisher = pools_of(app).publisher
    with app.app_context():
        assert redis_pool.stats()["created"] == 0
    assert not publisher.running  # init_app and an unused context start nothing
    use_redis(app, redis_pool)
    assert publisher.running


def test_a_snapshot_agrees_with_the_server(
    snapshots: Snapshots, app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    use_redis(app, redis_pool)
    published = wait_until(lambda: snapshots(app).get(os.getpid()), 5, "this process's snapshot")
    names = Counter(c["name"] for c in our_connections(server, app.import_name))
    pooled, publishing = f"{app.import_name}:{HOST}:{os.getpid()}", f"{app.import_name}:{HOST}:{os.getpid()}:stats"
    assert names == {pooled: published["created"], publishing: 1}  # the publisher's own, outside the pool
    assert (published["in_use"], published["idle"]) == (0, published["created"])
    assert published["checkouts"] == 1 == redis_pool.stats(app)["checkouts"]  # publishing is not counted
    assert published["interval"] == INTERVAL
    assert abs(published["published_at"] - time.time()) < 5
    key = pools_of(app).publisher.key
    assert key.startswith(f"flask_redispool:stats:{{{app.import_name}:REDIS}}:{HOST}:{os.getpid()}:")
    assert key == snapshot_key(redis_pool.settings(app), HOST, os.getpid(), int(key.rpartition(":")[2]))
    assert 0 < server.pttl(key) <= 3 * INTERVAL * 1000


def test_an_idle_process_keeps_publishing(snapshots: Snapshots, app: Flask, redis_pool: RedisPool) -> None:
    use_redis(app, redis_pool)
    first = wait_until(lambda: snapshots(app).get(os.getpid()), 5, "a first snapshot")["published_at"]
    later = wait_until(
        lambda: (s := snapshots(app).get(os.getpid())) and s["published_at"] > first and s, 5, "a later snapshot"
    )
    assert later["published_at"] - first >= INTERVAL * 0.9
    assert later["checkouts"] == 1


def test_apps_with_other_client_names_do_not_mix(
    snapshots: Snapshots, app: Flask, redis_pool: RedisPool, make_app: Callable[..., Flask], redis_url: str
) -> None:
    other = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=INTERVAL)
    redis_pool.init_app(other)
    use_redis(app, redis_pool)
    use_redis(other, redis_pool)
    wait_until(lambda: snapshots(app) and snapshots(other), 5, "both apps' snapshots")
    assert [s["client_name"] for s in snapshots(app).values()] == [app.import_name]
    assert [s["client_name"] for s in snapshots(other).values()] == [other.import_name]


def test_interval_zero_publishes_nothing(make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=0)
    redis_pool.init_app(app)
    use_redis(app, redis_pool)
    assert not pools_of(app).publisher.running


def test_publishing_to_a_dead_server_warns_once_and_never_raises(
    make_app: Callable[..., Flask], redis_pool: RedisPool, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(REDIS_URL=f"redis://:pw-not-for-logs@127.0.0.1:{free_port()}/0", REDIS_STATS_INTERVAL=INTERVAL)
    redis_pool.init_app(app)
    publisher = pools_of(app).publisher
    with caplog.at_level(logging.INFO, logger="flask_redispool"):
        assert [publisher.publish() for _ in range(3)] == [False] * 3
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("Could not publish REDIS's pool stats to redis://:***@127.0.0.1:")
    assert "pw-not-for-logs" not in caplog.text
    assert redis_pool.get_pool(app).connection_counts()[0] == 0  # the failed connection went back


def test_a_forked_child_publishes_its_own_snapshot(snapshots: Snapshots, app: Flask, redis_pool: RedisPool) -> None:
    use_redis(app, redis_pool)
    wait_until(lambda: snapshots(app).get(os.getpid()), 5, "the parent's snapshot")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: use the pool, then wait for the parent's word
        try:
            use_redis(app, redis_pool)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    try:
        child = wait_until(lambda: snapshots(app).get(pid), 10, "the child's snapshot")
        assert (child["host"], child["checkouts"]) == (HOST, 1)  # its own counters, not the parent's
        assert os.getpid() in snapshots(app)
    finally:
        os.write(write_end, b"x")
        os.waitpid(pid, 0)


def test_a_clean_exit_deletes_the_snapshot(start_worker: Callable[..., Worker], server: Redis) -> None:
    worker = start_worker("exiting", held=1, interval=INTERVAL)
    pattern = f"flask_redispool:stats:{{exiting:REDIS}}:{HOST}:{worker.pid}:*"
    wait_until(lambda: server.keys(pattern), 10, "the worker's snapshot")
    worker.exit()
    assert not server.keys(pattern)


def test_readers_skip_and_count_what_does_not_fit(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """Anybody who can write the key pattern can write junk: every reader survives it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from flask_redispool.prometheus import PublishedPoolsCollector

    use_redis(app, redis_pool)
    publisher = pools_of(app).publisher
    assert publisher.publish()
    good = json.loads(server.get(publisher.key) or "{}")
    base = f"flask_redispool:stats:{{{app.import_name}:REDIS}}:{HOST}"
    junk = {
        "no-host": {k: v for k, v in good.items() if k != "host"},
        "text-time": {**good, "pid": 1, "published_at": "yesterday"},
        "no-counters": {k: v for k, v in good.items() if k not in ("in_use", "checkouts")} | {"pid": 2},
        "bool-count": {**good, "pid": 3, "in_use": True},
        "nan-interval": {**good, "pid": 4, "interval": float("nan")},
        "a-list": [good],
    }
    for name, value in junk.items():
        server.set(f"{base}:{name}", json.dumps(value))
    server.set(f"{base}:not-json", "{oops")

    with app.app_context():
        report = redis_pool.report()
    assert report["snapshots_skipped"] == len(junk) + 1
    assert [row["pid"] for row in report["processes"]] == [os.getpid()]
    registry = CollectorRegistry()
    registry.register(PublishedPoolsCollector(app))
    scraped = generate_latest(registry).decode()
    in_use = [line for line in scraped.splitlines() if line.startswith("flask_redispool_connections_in_use{")]
    assert len(in_use) == 1  # the one good snapshot: this process's
    assert f'host="{HOST}",pid="{os.getpid()}"' in in_use[0]
    result = app.test_cli_runner().invoke(args=["redis-stats"])  # last: the command stops our publisher
    assert result.exit_code == 0, result.output
    assert f"{len(junk) + 1} malformed snapshot(s) skipped" in result.output
    assert "flask_redispool_published_processes" in scraped


def test_a_forked_child_never_deletes_its_parents_snapshot(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """health() in a child makes the child a connection of its own; stopping there must
    leave the parent's snapshot alone."""
    use_redis(app, redis_pool)
    publisher = pools_of(app).publisher
    assert publisher.publish()
    pid = os.fork()
    if pid == 0:
        try:
            assert redis_pool.health(app)["ok"]
            publisher.stop()  # the parent's publisher object, as the child inherited it
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert server.exists(publisher.key)
