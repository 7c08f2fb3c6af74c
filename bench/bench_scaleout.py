"""App against app behind Redis Sentinel and Redis Cluster: what one request costs with
flask-redispool.

Each baseline is a plain Flask app whose view uses a module-global client of redis-py
(= 1.00): ``Sentinel(...).master_for(service)``, and ``RedisCluster(host, port)``. Ours
is ``RedisPool(app)`` on the same ``redis+sentinel://`` or ``redis+cluster://`` URL, its
view using ``redis_pool.client`` or ``redis_pool.cluster_client``. Views do 0, 1 and 10
GETs against real servers started here on loopback (and stopped by pid): a master that a
sentinel watches, and a cluster of 3 masters. Pairing, rounds and medians as in
``bench_apps.py``; the benchmark and the servers run on separate cores where there are two.

Usage: python bench/bench_scaleout.py [--processes N] [--rounds N] [--clock wall|cpu]
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

GETS = (0, 1, 10)
CALLS = {0: 600, 1: 400, 10: 150}


def module_global_client(url: str) -> Any:
    """redis-py's own client for ``url``, made once, as a module global would be."""
    hosts = url.partition("://")[2].split("/")[0]
    nodes = [(host, int(port)) for host, port in (h.split(":") for h in hosts.split(","))]
    if url.startswith("redis+cluster://"):
        from redis.cluster import RedisCluster

        return RedisCluster(*nodes[0])
    from redis.sentinel import Sentinel

    return Sentinel(nodes).master_for(url.split("/")[3])


def build(variant: str, url: str, gets: int) -> Any:
    """A fresh app of ``variant`` (``global`` or ``ours``) whose ``/view`` does ``gets``
    GETs; its test client."""
    from flask import Flask

    from flask_redispool import RedisPool

    app = Flask(f"bench_scaleout_{variant}")
    if variant == "global":
        client = module_global_client(url)

        def current() -> Any:
            return client

    else:
        app.config["REDIS_URL"] = url
        redis_pool = RedisPool(app)
        cluster = url.startswith("redis+cluster://")

        def current() -> Any:
            return redis_pool.cluster_client if cluster else redis_pool.client

    @app.get("/view")
    def view() -> str:
        for _ in range(gets):
            current().get("k")
        return "ok"

    return app.test_client()


def run_worker(url: str, gets: int, rounds: int, clock: str) -> None:
    baseline, ours = build("global", url, gets), build("ours", url, gets)
    print(json.dumps(paired(lambda: baseline.get("/view"), lambda: ours.get("/view"), CALLS[gets], rounds, clock)))


def measure(url: str, gets: int, rounds: int, clock: str) -> tuple[float, float]:
    command = [sys.executable, __file__, "--worker", str(gets), "--url", url, "--rounds", str(rounds)]
    command += ["--clock", clock]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900).stdout
    ratio, added = json.loads(output)
    return ratio, added


def pin_servers(pids: list[int | None]) -> bool:
    """Run the benchmark on one core and every server on another, where there are two."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if len(cores) < 2:
        return False
    for pid in pids:
        if pid is not None:
            os.sched_setaffinity(pid, {cores[1]})
    os.sched_setaffinity(0, {cores[0]})
    return True


def wait_for_master(sentinel_port: int, timeout: float = 10.0) -> None:
    """Until a client that asks the sentinel reaches its master."""
    from redis.exceptions import RedisError
    from redis.sentinel import Sentinel

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Sentinel([("127.0.0.1", sentinel_port)], socket_timeout=2).master_for("mymaster") as master:
                master.ping()
                return
        except RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    args = parse_arguments(__doc__, GETS)
    if args.worker is not None:
        run_worker(args.url, args.worker, args.rounds, args.clock)
        return
    from importlib.metadata import version

    from flask_redispool.testing import RedisClusterServers, RedisServer

    master = RedisServer().start()
    sentinel = RedisServer.sentinel_for(master.port, quorum=1, binary=master.binary)
    cluster = RedisClusterServers(master.binary, replicas=0)
    try:
        sentinel.start()
        cluster.start()
        wait_for_master(sentinel.port)
        pinned = pin_servers([server.pid for server in (master, sentinel, *cluster.nodes)])
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Flask {version('flask')}, redis-py {version('redis')}; median of {args.processes} processes x "
            f"{args.rounds} rounds, {args.clock} time{'; servers and benchmark on separate cores' if pinned else ''}"
        )
        print("| topology | GETs | flask-redispool ÷ module-global redis-py client |")
        print("|---|---:|---:|")
        urls = {"Sentinel": f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0", "Cluster": cluster.url}
        for topology, url in urls.items():
            for gets in GETS:
                runs = [measure(url, gets, args.rounds, args.clock) for _ in range(args.processes)]
                ratio = statistics.median(run[0] for run in runs)
                added = statistics.median(run[1] for run in runs) * 1e6
                print(f"| {topology} | {gets} | {ratio:.3f} ({added:+.1f} µs) |")
    finally:
        cluster.stop()
        sentinel.stop()
        master.stop()


if __name__ == "__main__":
    main()
