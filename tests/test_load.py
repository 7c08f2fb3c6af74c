"""A small load test: a real gunicorn (2 workers x 4 threads) serving the example app.

The full-size run (2 x 8 threads, 64 clients, 20,000 requests, throughput against a
module-global client) is ``bench/bench_load.py``.
"""

from __future__ import annotations

import json

from redis import Redis

from bench.loadgen import ConnectionSampler, drive, gunicorn
from example_app import create_app, redis_pool


def test_gunicorn_workers_under_load(redis_url: str, server: Redis) -> None:
    with gunicorn("example_app:create_app()", redis_url=redis_url, workers=2, threads=4) as (port, _master):
        with ConnectionSampler(redis_url, "example_app") as sampler:
            result = drive(port, "/hits", concurrency=16, total=2000, deadline=60, keepalive=False)
        app = create_app({"REDIS_URL": redis_url})
        stats = app.test_cli_runner().invoke(args=["redis-stats", "--json"])
        redis_pool.get_pool(app).disconnect()
    assert (result.requests, dict(result.errors)) == (2000, {})
    assert server.get("example:hits") == b"2001"  # and one readiness probe: nothing lost
    assert len(sampler.most_per_process) == 2  # both workers, told apart by pid
    assert max(sampler.most_per_process.values()) <= 10  # each within REDIS_MAX_CONNECTIONS
    assert sampler.most_total <= 2 * 10
    (report,) = json.loads(stats.output)["pools"]
    workers = {proc["pid"] for proc in report["server"] if not proc["this_process"]}
    assert workers == set(sampler.most_per_process)  # flask redis-stats sees the serving workers
