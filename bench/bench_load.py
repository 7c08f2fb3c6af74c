"""Load benchmark: gunicorn, 2 workers x 8 threads (gthread), against a real redis-server.

Serves ``example_app:create_app()`` (redis_pool.client) and, as the baseline, the same
/hits view on a module-global client (``bench/global_app.py``), both at once. 64
keep-alive clients on loopback drive them in alternating slices (ours, global,
global, ours, ...) until each has served ``--requests``: on a small shared machine
throughput drifts by a quarter between minutes, and alternating slices expose both
apps to the same drift. Reports errors, p50/p99 latency, the most server-side
connections seen (CLIENT LIST sampled every 50 ms) and the throughput ratio ours /
global (the median over slice pairs).

Usage: python bench/bench_load.py [--requests N] [--slice N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import ConnectionSampler, LoadResult, drive, gunicorn
from flask_redispool.testing import RedisServer

WORKERS, THREADS, CLIENTS = 2, 8, 64
APPS = {"ours": "example_app:create_app()", "global": "global_app:create_app()"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per app")
    parser.add_argument("--slice", type=int, default=2_000, help="requests per slice")
    args = parser.parse_args()
    server = RedisServer().start()
    totals = {name: LoadResult() for name in APPS}
    ratios = []
    try:
        with ExitStack() as stack:
            ports = {
                name: stack.enter_context(gunicorn(app, redis_url=server.url, workers=WORKERS, threads=THREADS,
                                                   pythonpath="bench"))[0]
                for name, app in APPS.items()
            }  # fmt: skip
            for port in ports.values():
                drive(port, "/hits", concurrency=CLIENTS, total=1000)  # warm up every worker
            sampler = stack.enter_context(ConnectionSampler(server.url, "example_app"))
            for number in range(args.requests // args.slice):
                order = list(APPS) if number % 2 == 0 else list(reversed(APPS))
                sliced = {name: drive(ports[name], "/hits", concurrency=CLIENTS, total=args.slice) for name in order}
                ratios.append(sliced["ours"].throughput / sliced["global"].throughput)
                for name, result in sliced.items():
                    totals[name].merge(result)
        counted = int(Redis.from_url(server.url).get("example:hits") or 0)
    finally:
        server.stop()
    expected = sum(t.requests for t in totals.values()) + 2 * 1000  # + warm-up
    setup = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"redis-server {'.'.join(map(str, server.version))}; gunicorn {WORKERS} workers x {THREADS} threads "
        f"(gthread) per app, {CLIENTS} keep-alive clients, {args.requests} requests per app in slices of {args.slice}"
    )
    print(setup)
    print(f"{'app':7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7}  most server connections")
    for name, total in totals.items():
        errors = sum(total.errors.values())
        if name == "ours":
            conns = f"{sum(sampler.most_per_process.values())} ({max(sampler.most_per_process.values())} per worker)"
        else:
            conns = f"{sampler.most_unnamed}"
        line = f"{total.throughput:8.0f} {total.percentile(50) * 1000:7.2f} {total.percentile(99) * 1000:7.2f}"
        print(f"{name:7} {line} {errors:7d}  {conns}")
    spread = " ".join(f"{r:.2f}" for r in ratios)
    print(f"throughput ours / global: {statistics.median(ratios):.3f} (target >= 0.95; slice pairs: {spread})")
    print(f"increments counted {counted} of {expected}")


if __name__ == "__main__":
    main()
