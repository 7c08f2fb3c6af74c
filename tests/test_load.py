"""A small load test: a real gunicorn (2 workers x 4 threads) serving the example app.

The full-size run (2 x 8 threads, 64 clients, 20,000 requests, throughput against a
module-global client) is ``bench/bench_load.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from flask import Flask
from redis import Redis

from bench.loadgen import ConnectionSampler, drive, gunicorn
from example_app import redis_pool
from flask_redispool._stats import HOST, ProcessRow, group_client_list

from .conftest import gunicorn_workers, load_every_worker, pools_of, wait_until


def test_gunicorn_workers_under_load(redis_url: str, server: Redis) -> None:
    app = "example_app:create_app()"
    with (
        gunicorn(app, redis_url=redis_url, workers=2, threads=4) as (port, master),
        ConnectionSampler(redis_url, "example_app") as sampler,
    ):
        load_every_worker(port, gunicorn_workers(master, 2), server)  # a worker that boots late may get no request
        before = int(server.get("example:hits") or 0)
        result = drive(port, "/hits", concurrency=16, total=2000, deadline=60, keepalive=False)
    assert (result.requests, dict(result.errors)) == (2000, {})
    assert int(server.get("example:hits") or 0) - before == 2000  # nothing lost, nothing counted twice
    assert len(sampler.most_per_process) == 2  # both workers, told apart by pid
    assert max(sampler.most_per_process.values()) <= 10  # each within REDIS_MAX_CONNECTIONS
    assert sampler.most_total <= 2 * 10


def test_redis_stats_sees_each_gunicorn_worker_until_it_dies(
    make_example: Callable[..., Flask], redis_url: str, server: Redis
) -> None:
    interval = 0.5
    env = {"FLASK_REDIS_STATS_INTERVAL": str(interval)}
    app = make_example(REDIS_URL=redis_url)
    pools_of(app).publisher.stop()  # this test process only reads

    def rows() -> dict[int, ProcessRow]:
        return {row["pid"]: row for row in redis_pool.report(app)["processes"] if not row["this_process"]}

    with gunicorn("example_app:create_app()", redis_url=redis_url, workers=2, threads=4, env=env) as (port, master):
        workers = gunicorn_workers(master, 2)
        load_every_worker(port, workers, server)
        result = drive(port, "/hits", concurrency=16, total=400, deadline=60, keepalive=False)
        load_ended = time.time()

        def published_since_load() -> bool:  # ages are rounded to 0.1 s
            now, seen = time.time(), rows()
            return all(pid in seen and now - (seen[pid]["snapshot_age"] or 1e9) > load_ended + 0.1 for pid in workers)

        wait_until(published_since_load, 10, "a snapshot of each worker taken after the load")
        command = [sys.executable, "-m", "flask", "--app", "example_app", "redis-stats", "--json"]
        cli = subprocess.run(
            command, capture_output=True, text=True, timeout=60, env={**os.environ, "REDIS_URL": redis_url}
        )
        clients = {p["pid"]: p["connections"] for p in group_client_list(server.client_list(), "example_app")}

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in rows(), 3 * interval + 10, "the killed worker's row to go")

    assert (result.requests, dict(result.errors)) == (400, {})
    assert cli.returncode == 0, cli.stderr
    (report,) = json.loads(cli.stdout)["pools"]
    listed = {row["pid"]: row for row in report["processes"] if row["pid"] in workers}
    assert set(listed) | {os.getpid(), report["pool"]["pid"]} == {row["pid"] for row in report["processes"]}
    assert set(listed) == workers  # and besides them only this test and the command itself
    for pid, row in listed.items():
        assert row["server_connections"] == clients[pid] == row["in_use"] + row["idle"]
        assert (row["in_use"], row["suspect"]) == (0, None)
    assert sum(row["checkouts"] for row in listed.values()) >= 400


def test_a_preloading_master_that_warms_up_holds_and_publishes_nothing(
    make_example: Callable[..., Flask], redis_url: str, server: Redis
) -> None:
    """``gunicorn --preload`` with a factory that pings Redis: the master made a connection
    and started publishing before it forked, and serves nothing after. Only the two
    workers show in the report, and the server sees no connection of the master's."""
    env = {"FLASK_REDIS_STATS_INTERVAL": "0.5", "GUNICORN_CMD_ARGS": "--preload"}
    app = make_example(REDIS_URL=redis_url)
    pools_of(app).publisher.stop()  # this test process only reads

    def published() -> dict[int, ProcessRow]:
        """The report's rows besides this test's, once each of them has a snapshot."""
        rows = {row["pid"]: row for row in redis_pool.report(app)["processes"] if not row["this_process"]}
        return {} if any(row["in_use"] is None for row in rows.values()) else rows

    factory = "tests.preload_app:create_app()"
    with gunicorn(factory, redis_url=redis_url, workers=2, threads=4, env=env) as (port, master):
        workers = gunicorn_workers(master, 2)
        load_every_worker(port, workers, server)
        rows = wait_until(lambda: (rows := published()).keys() == workers and rows, 10, "a report of the two workers")
        names = [str(c["name"]) for c in server.client_list()]
        masters = {f"example_app:{HOST}:{master}", f"example_app:{HOST}:{master}:stats"}  # the pool's, the publisher's
        wait_until(lambda: not masters & {str(c["name"]) for c in server.client_list()}, 10, "no master connection")

    assert [row["suspect"] for row in rows.values()] == [None, None]
    assert f"example_app:{HOST}:{master}" not in names  # the pool's was closed before the workers forked
