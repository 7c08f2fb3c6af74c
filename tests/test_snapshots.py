"""Snapshots published into Redis by every process, against a real server."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, get_type_hints

import pytest
from flask import Flask
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool._extension import app_states
from flask_redispool._snapshots import PublishedStats, read_snapshots, snapshot_key
from flask_redispool._stats import HOST
from flask_redispool.prometheus import PublishedPoolsCollector
from flask_redispool.testing import free_port

from .conftest import Worker, held_by_this_process, our_connections, pools_of, wait_until

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


@pytest.mark.servers
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
    pool = redis_pool.get_pool(app)
    serving = pool.get_connection()  # the parent serves a request while it forks
    pid = os.fork()
    if pid != 0:
        pool.release(serving)
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


def test_a_parent_that_forks_with_nothing_in_use_holds_and_publishes_nothing_until_used_again(
    snapshots: Snapshots, app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    """A gunicorn master that preloads the app and runs a warm-up command serves nothing
    once it forks its workers: no connection of its own, no snapshot (with --preload,
    the children are gunicorn's workers: see test_load)."""
    use_redis(app, redis_pool)
    wait_until(lambda: snapshots(app).get(os.getpid()), 5, "the parent's snapshot")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert held_by_this_process(server, app.import_name) == 0  # closed before the fork: none inherited
    wait_until(lambda: os.getpid() not in snapshots(app), 5, "the parent's snapshot to be withdrawn")
    ours = f"{app.import_name}:{HOST}:{os.getpid()}"
    wait_until(lambda: not our_connections(server, ours), 5, "the publisher's connection to close")
    use_redis(app, redis_pool)  # the parent serves again
    again = wait_until(lambda: snapshots(app).get(os.getpid()), 5, "the parent's snapshot again")
    assert again["checkouts"] == 2


def test_a_clean_exit_deletes_the_snapshot(start_worker: Callable[..., Worker], server: Redis) -> None:
    worker = start_worker("exiting", held=1, interval=INTERVAL)
    pattern = f"flask_redispool:stats:{{exiting:REDIS}}:{HOST}:{worker.pid}:*"
    wait_until(lambda: server.keys(pattern), 10, "the worker's snapshot")
    worker.exit()
    assert not server.keys(pattern)


def _without(good: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in good.items() if key not in names}


def _pool(good: dict[str, Any], **fields: object) -> dict[str, Any]:
    """``good`` with its one pool changed by ``fields``."""
    return {**good, "pools": [{**good["pools"][0], **fields}]}


#: Snapshots anybody who may write under the key pattern can write, each made from this
#: process's good one: JSON text, or bytes as they are.
HOSTILE: dict[str, Callable[[dict[str, Any]], str | bytes]] = {
    "a pool without fields": lambda good: json.dumps({**good, "pools": [{}]}),
    "a pool limit in words": lambda good: json.dumps(_pool(good, max_connections="ten")),
    "200,000 nested brackets": lambda good: "[" * 200_000,
    "a count of 401 digits": lambda good: json.dumps({**good, "checkouts": 10**400}),
    "a count past 64 bits": lambda good: json.dumps({**good, "waits": 2**63}),
    "a pool count past 64 bits": lambda good: json.dumps(_pool(good, checkouts=2**64)),
    "a negative count": lambda good: json.dumps({**good, "idle": -1}),
    "a count in a bool": lambda good: json.dumps({**good, "in_use": True}),
    "a fractional count": lambda good: json.dumps({**good, "timeouts": 1.5}),
    "a pid in a float": lambda good: json.dumps({**good, "pid": 7.0}),
    "a time in words": lambda good: json.dumps({**good, "published_at": "yesterday"}),
    "an infinite time": lambda good: json.dumps({**good, "published_at": float("inf")}),
    "a NaN interval": lambda good: json.dumps({**good, "interval": float("nan")}),
    "a zero interval": lambda good: json.dumps({**good, "interval": 0}),
    "a flag in a number": lambda good: json.dumps({**good, "blocking": 1}),
    "a host with a terminal escape": lambda good: json.dumps({**good, "host": "\x1b[2Jweb"}),
    "a host with a space": lambda good: json.dumps({**good, "host": "web 1"}),
    "a host of 300 characters": lambda good: json.dumps({**good, "host": "w" * 300}),
    "an address with a newline": lambda good: json.dumps(_pool(good, address="a:1\nleak suspect: none")),
    "a role in a list": lambda good: json.dumps(_pool(good, role=["primary"])),
    "a URL of 5,000 characters": lambda good: json.dumps({**good, "url": "redis://" + "h" * 5000}),
    "pools in an object": lambda good: json.dumps({**good, "pools": {"0": good["pools"][0]}}),
    "a pool in a list": lambda good: json.dumps({**good, "pools": [list(good["pools"][0].values())]}),
    "no host": lambda good: json.dumps(_without(good, "host")),
    "no publication time": lambda good: json.dumps(_without(good, "published_at")),
    "no counters": lambda good: json.dumps(_without(good, "in_use", "checkouts")),
    "another prefix": lambda good: json.dumps({**good, "prefix": "CACHE_REDIS"}),
    "a list": lambda good: json.dumps([good]),
    "null": lambda good: "null",
    "a number of 5,000 digits": lambda good: "9" * 5000,
    "not JSON": lambda good: "{oops",
    "not UTF-8": lambda good: b'{"host": "\xff"}',
    "over 1 MiB": lambda good: json.dumps({**good, "padding": "x" * (1 << 20)}),
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_reader_skips_and_counts_a_hostile_snapshot(
    make: Callable[[dict[str, Any]], str | bytes], app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    """``report()``, a Prometheus scrape and ``flask redis-stats`` (also ``--json``) read
    a snapshot written by anybody who may write the key pattern: each shows the good
    one, skips the bad one and says so."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    use_redis(app, redis_pool)
    publisher = pools_of(app).publisher
    assert publisher.publish()
    good = json.loads(server.get(publisher.key) or "{}")
    server.set(snapshot_key(redis_pool.settings(app), HOST, 4242), make(good))

    with app.app_context():
        report = redis_pool.report()
    assert report["snapshots_skipped"] == 1
    assert [row["pid"] for row in report["processes"]] == [os.getpid()]
    registry = CollectorRegistry()
    registry.register(PublishedPoolsCollector(app))
    samples = [s for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples]
    assert [s.labels["pid"] for s in samples if s.name == "flask_redispool_connections_in_use"] == [str(os.getpid())]
    assert [s.value for s in samples if s.name == "flask_redispool_published_skipped"] == [1]
    runner = app.test_cli_runner()  # last: the command stops this process's publisher
    as_json = runner.invoke(args=["redis-stats", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["pools"][0]["snapshots_skipped"] == 1
    table = runner.invoke(args=["redis-stats"])
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[-1] == "  1 malformed snapshot(s) skipped"


def test_readers_keep_only_the_fields_they_know(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """A snapshot that fits but carries more is read without the rest; one published
    before async pools reads them as 0."""
    use_redis(app, redis_pool)
    publisher = pools_of(app).publisher
    assert publisher.publish()
    good = json.loads(server.get(publisher.key) or "{}")
    older = {
        **_without(good, *(name for name in good if name.startswith("async_")), "pools"),
        "pid": 4242, "note": "x" * 10_000, "pools_extra": [[[]]],
    }  # fmt: skip
    server.set(snapshot_key(redis_pool.settings(app), HOST, 4242), json.dumps(older))
    (state,) = app_states(app)
    snapshots, skipped = read_snapshots(server, state.settings)
    assert skipped == 0
    read = {stats["pid"]: stats for stats in snapshots}
    assert set(read[4242]) == set(read[os.getpid()]) == set(get_type_hints(PublishedStats))
    assert (read[4242]["async_checkouts"], read[4242]["pools"]) == (0, [])


def test_a_forked_child_never_deletes_its_parents_snapshot(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """health() in a child makes the child a connection of its own; stopping there must
    leave the parent's snapshot alone."""
    use_redis(app, redis_pool)
    publisher = pools_of(app).publisher
    assert publisher.publish()
    pool = redis_pool.get_pool(app)
    serving = pool.get_connection()  # a parent that serves while it forks keeps publishing
    pid = os.fork()
    if pid != 0:
        pool.release(serving)
    if pid == 0:
        try:
            assert redis_pool.health(app)["ok"]
            publisher.stop()  # the parent's publisher object, as the child inherited it
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert server.exists(publisher.key)
