"""App against app behind Redis Sentinel: what one request costs with flask-redispool.

The baseline is a plain Flask app whose view uses a module-global client from redis-py's
``Sentinel(...).master_for(service)`` (= 1.00); ours is ``RedisPool(app)`` on the same
``redis+sentinel://`` URL, its view using ``redis_pool.client``. Views do 1 and 10 GETs
against a real master that a real sentinel (both started here, on loopback) watches.
Pairing, rounds and medians as in ``bench_apps.py``.

Usage: python bench/bench_sentinel.py [--processes N] [--rounds N]
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

from bench_apps import build, paired, parse_arguments  # type: ignore[import-not-found]

GETS = (1, 10)
CALLS = {1: 400, 10: 150}


def build_global(url: str, gets: int) -> Any:
    """A plain app whose ``/view`` does ``gets`` GETs on a module-global
    ``Sentinel(...).master_for(service)`` client; its test client."""
    from flask import Flask
    from redis.sentinel import Sentinel

    hosts, service = url.removeprefix("redis+sentinel://").split("/")[:2]
    sentinels = [(host, int(port)) for host, port in (h.split(":") for h in hosts.split(","))]
    client = Sentinel(sentinels).master_for(service)
    app = Flask("bench_sentinel_global")

    @app.get("/view")
    def view() -> str:
        for _ in range(gets):
            client.get("k")
        return "ok"

    return app.test_client()


def run_worker(url: str, gets: int, rounds: int) -> None:
    baseline, ours = build_global(url, gets), build("ours", url, gets)
    print(json.dumps(paired(lambda: baseline.get("/view"), lambda: ours.get("/view"), CALLS[gets], rounds)))


def measure(url: str, gets: int, rounds: int) -> tuple[float, float]:
    command = [sys.executable, __file__, "--worker", str(gets), "--url", url, "--rounds", str(rounds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900).stdout
    ratio, added = json.loads(output)
    return ratio, added


def main() -> None:
    args = parse_arguments(__doc__, GETS)
    if args.worker is not None:
        run_worker(args.url, args.worker, args.rounds)
        return
    from importlib.metadata import version

    from flask_redispool.testing import RedisServer

    master = RedisServer().start()
    sentinel = RedisServer.sentinel_for(master.port, quorum=1, binary=master.binary)
    try:
        sentinel.start()
        time.sleep(1)  # the sentinel's first look at the master
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Flask {version('flask')}, redis-py {version('redis')}; median of {args.processes} processes x "
            f"{args.rounds} rounds"
        )
        print("| topology | GETs | flask-redispool ÷ module-global `Sentinel.master_for()` client |")
        print("|---|---:|---:|")
        for gets in GETS:
            runs = [measure(url, gets, args.rounds) for _ in range(args.processes)]
            ratio = statistics.median(run[0] for run in runs)
            added = statistics.median(run[1] for run in runs) * 1e6
            print(f"| Sentinel | {gets} | {ratio:.3f} ({added:+.1f} µs) |")
    finally:
        sentinel.stop()
        master.stop()


if __name__ == "__main__":
    main()
