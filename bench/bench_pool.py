"""Benchmarks P1-P4 for flask-redispool: ratios measured side by side in one run.

Each figure is a ratio of two variants run in the same process against the same
real redis-server, alternating short rounds so that drift and noise hit both
alike; the ratio reported is the median of the per-round ratios.

    P1  view doing 1 GET via redis_pool.client / same view on a module-global
        redis.Redis over the same pool (throughput ratio; target >= 0.98)
    P2  the same with 10 GETs per view (target >= 0.99)
    P3  pooled (redis_pool.client) / a new connection per request (target >= 4.5)
    P4  checkout+release through our counted pool / redis-py's plain
        ConnectionPool (time ratio; target <= 1.05)
    A1  async def view doing 1 GET via redis_pool.async_client / the same view with a
        new redis.asyncio connection per request (throughput ratio; target >= 3)
    A2  the same view via async_client / via the sync redis_pool.client (reported)

The app publishes its pool snapshot every second (``REDIS_STATS_INTERVAL=1``, the
default is 10), so P1-P3 include what publishing costs.

Each benchmark runs in several fresh processes (--processes) and the table gives
the median across them: on a small, shared machine a single process's memory layout
and neighbours move a figure by a percent or two.

Usage: python bench/bench_pool.py [--processes N] [--rounds N]   (REDIS_URL to use a running server)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio
from flask import Flask
from redis import ConnectionPool, Redis

from flask_redispool import RedisPool
from flask_redispool._extension import LOOPS_KEY
from flask_redispool.testing import RedisServer

Timed = Callable[[], None]


def paired_round(ours: Timed, baseline: Timed, calls: int, interleave: bool) -> tuple[float, float]:
    """Mean seconds per call of each variant in one round.

    ``interleave``: alternate single calls, so both variants run under the same noise
    from the other processes sharing the machine (the redis-server among them). Where
    the baseline leaves work behind it that outlasts its call (a new connection per
    request leaves the server a connection to tear down), alternating single calls
    would charge that work to our next call; such a pair runs in alternating blocks.
    """
    clock = time.perf_counter
    spent = {ours: 0.0, baseline: 0.0}
    if interleave:
        for i in range(calls):
            for fn in (ours, baseline) if i % 2 else (baseline, ours):
                started = clock()
                fn()
                spent[fn] += clock() - started
    else:
        for fn in (ours, baseline):
            started = clock()
            for _ in range(calls):
                fn()
            spent[fn] = clock() - started
    return spent[ours] / calls, spent[baseline] / calls


def paired_median(
    ours: Timed, baseline: Timed, calls: int, rounds: int, interleave: bool = True
) -> tuple[float, float, float]:
    """Median per-round ratio baseline_time / our_time, and the median times (s)."""
    paired_round(ours, baseline, calls, interleave)  # warm up
    ratios, ours_t, base_t = [], [], []
    gc.disable()
    try:
        for i in range(rounds):
            first, second = (ours, baseline) if i % 2 else (baseline, ours)
            times = dict(zip((first, second), paired_round(first, second, calls, interleave), strict=True))
            ours_t.append(times[ours])
            base_t.append(times[baseline])
            ratios.append(times[baseline] / times[ours])
    finally:
        gc.enable()
    return statistics.median(ratios), statistics.median(ours_t), statistics.median(base_t)


def build_app(url: str, gets: int) -> tuple[Flask, RedisPool]:
    app = Flask("bench")
    # Publishing snapshots 10x as often as the default: its cost is part of the figure.
    app.config.update(REDIS_URL=url, REDIS_MAX_CONNECTIONS=4, REDIS_STATS_INTERVAL=1)
    redis_pool = RedisPool(app)
    global_client = Redis(connection_pool=redis_pool.get_pool(app))
    host, port = url.split("//")[1].split("/")[0].split(":")

    @app.get("/ours")
    def ours() -> str:
        client = redis_pool.client
        for _ in range(gets):
            client.get("k")
        return "ok"

    @app.get("/global")
    def global_() -> str:
        for _ in range(gets):
            global_client.get("k")
        return "ok"

    @app.get("/fresh")
    def fresh() -> str:
        client = Redis(host=host, port=int(port))
        try:
            for _ in range(gets):
                client.get("k")
        finally:
            client.close()
        return "ok"

    return app, redis_pool


def compare_views(app: Flask, ours: str, baseline: str, rounds: int, calls: int) -> tuple[float, float, float]:
    """Paired rounds of GET ``ours`` against GET ``baseline`` through the test client."""
    client = app.test_client()

    def get(path: str) -> Timed:
        def run() -> None:
            client.get(path)

        return run

    return paired_median(get(ours), get(baseline), calls, rounds, interleave=baseline != "/fresh")


def view_benchmark(url: str, gets: int, baseline: str, rounds: int, calls: int) -> tuple[float, float, float]:
    app, redis_pool = build_app(url, gets)
    result = compare_views(app, "/ours", f"/{baseline}", rounds, calls)
    redis_pool.get_pool(app).disconnect()
    assert redis_pool.stats(app)["in_use"] == 0
    return result


def build_async_app(url: str) -> tuple[Flask, RedisPool]:
    """``async def`` views: one GET through each of the three ways to reach Redis."""
    app = Flask("bench-async")
    app.config.update(REDIS_URL=url, REDIS_MAX_CONNECTIONS=4, REDIS_STATS_INTERVAL=1)
    redis_pool = RedisPool(app)
    host, port = url.split("//")[1].split("/")[0].split(":")

    @app.get("/async")
    async def async_ours() -> str:
        await redis_pool.async_client.get("k")
        return "ok"

    @app.get("/sync")
    async def sync_client() -> str:
        redis_pool.client.get("k")  # blocks this thread's loop for the round trip
        return "ok"

    @app.get("/fresh")
    async def async_fresh() -> str:
        client = redis.asyncio.Redis(host=host, port=int(port))
        try:
            await client.get("k")
        finally:
            await client.aclose()
        return "ok"

    return app, redis_pool


def async_benchmark(url: str, baseline: str, rounds: int, calls: int) -> tuple[float, float, float]:
    app, redis_pool = build_async_app(url)
    result = compare_views(app, "/async", f"/{baseline}", rounds, calls)
    app.extensions[LOOPS_KEY].close()
    redis_pool.get_pool(app).disconnect()
    return result


def checkout_benchmark(url: str, rounds: int, calls: int) -> tuple[float, float, float]:
    app = Flask("bench-pool")
    app.config.update(REDIS_URL=url)
    ours = RedisPool(app).get_pool(app)
    plain = ConnectionPool.from_url(url, max_connections=ours.max_connections)

    def cycle(pool: Any) -> Timed:
        def run() -> None:
            pool.release(pool.get_connection())

        return run

    ratio, ours_t, plain_t = paired_median(cycle(ours), cycle(plain), calls, rounds)
    ours.disconnect()
    plain.disconnect()
    return 1 / ratio, ours_t, plain_t  # a time ratio: ours / plain


BENCHMARKS: dict[str, tuple[str, str, Callable[[str, int], tuple[float, float, float]]]] = {
    "P1": ("1 GET: client / module-global", ">= 0.98", lambda url, r: view_benchmark(url, 1, "global", r, 300)),
    "P2": ("10 GETs: client / module-global", ">= 0.99", lambda url, r: view_benchmark(url, 10, "global", r, 100)),
    "P3": ("pooled / new connection", ">= 4.5", lambda url, r: view_benchmark(url, 1, "fresh", r, 200)),
    "P4": ("checkout+release: ours / plain", "<= 1.05", lambda url, r: checkout_benchmark(url, r, 3000)),
    "A1": ("async view: async_client / new conn", ">= 3", lambda url, r: async_benchmark(url, "fresh", r, 200)),
    "A2": ("async view: async_client / client", "report", lambda url, r: async_benchmark(url, "sync", r, 300)),
}


def pin_apart(server_pid: int | None) -> bool:
    """Run the benchmark on one core and the server on another, where there are two."""
    if server_pid is None or not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return False
    first, second, *_ = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {first})
    os.sched_setaffinity(server_pid, {second})
    return True


def run_worker(name: str, url: str, rounds: int) -> None:
    """One measurement in this (fresh) process; prints its result as JSON."""
    print(json.dumps(BENCHMARKS[name][2](url, rounds)))


def measure(name: str, url: str, rounds: int) -> tuple[float, float, float]:
    """Run benchmark ``name`` in a fresh interpreter, so that no single process's memory
    layout decides the figure."""
    command = [sys.executable, __file__, "--worker", name, "--url", url, "--rounds", str(rounds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    ratio, ours_t, base_t = json.loads(output)
    return ratio, ours_t, base_t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="rounds per process")
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per benchmark")
    parser.add_argument("--worker", choices=sorted(BENCHMARKS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.url, args.rounds)
        return
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = RedisServer().start()
        url = server.url
    pinned = pin_apart(server.pid if server else None)  # workers inherit the benchmark's core
    try:
        Redis.from_url(url).set("k", "v" * 32)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in BENCHMARKS}
        for _ in range(args.processes):
            for name in BENCHMARKS:
                results[name].append(measure(name, url, args.rounds))
    finally:
        if server is not None:
            server.stop()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; median of {args.processes} processes x {args.rounds} "
          f"rounds; server and benchmark {'on separate cores' if pinned else 'not pinned'}")  # fmt: skip
    print(f"{'':3} {'what':34} {'ratio':>7} {'target':>8} {'ours µs':>9} {'baseline µs':>12}  per-process ratios")
    for name, (what, target, _) in BENCHMARKS.items():
        ratios = [r[0] for r in results[name]]
        ours_t = statistics.median(r[1] for r in results[name])
        base_t = statistics.median(r[2] for r in results[name])
        spread = " ".join(f"{r:.3f}" for r in ratios)
        print(f"{name:3} {what:34} {statistics.median(ratios):7.3f} {target:>8} {ours_t * 1e6:9.1f} "
              f"{base_t * 1e6:12.1f}  {spread}")  # fmt: skip


if __name__ == "__main__":
    main()
