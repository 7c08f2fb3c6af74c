"""App against app: what one request costs with flask-redispool, beside the peers.

Each variant is a separate Flask app with the same view, served through its own test
client; a view in one shared app would hide our teardown, which runs for every
context of an app whether or not the view touches Redis. The baseline is a plain app
whose view uses a module-global ``redis.Redis`` on its own pool (= 1.00):

    global       plain app, module-global redis.Redis (redis-py's defaults)
    per_request  plain app, redis.Redis(connection_pool=POOL) built in every request,
                 the pattern many guides show
    flask_redis  flask-redis 0.4 (FlaskRedis(app), redis_store.get(...))
    ours         RedisPool(app), redis_pool.client.get(...), default settings

Views do 0 (an empty view: what registering the extension costs), 1 and 10 GETs
against a real redis-server.

A second table prices each guarantee: ``ours`` again, beside copies of it with one
guarantee switched off inside this benchmark (by undoing what ``init_app`` registered
or by swapping what the pool uses; the product has no such options):

    no teardown    the teardown_appcontext function removed: what a view leaves held
                   (a pipeline mid-WATCH, a pubsub) is not given back at context end
    no hand-over   the after_request function removed: a streamed response does not
                   take over what its view holds
    no counting    the client on redis-py's plain ConnectionPool (same connections):
                   no stats, no bounded first-come-first-served wait
    no write-once  the pool's connections of redis-py's own class, with redis-py's own
                   Retry: a write whose reply was lost may be sent again
    all off        all four: what remains is redis_pool.client itself

Each variant is paired with the baseline in alternating single requests, so both run
under the same noise; a figure is the median over fresh processes of the per-round
medians. "µs added" is the median per-round difference in time per request against the
baseline; "ratio" is baseline time / variant time (throughput). Run with and without
hiredis (a process that cannot import it).

``--clock cpu`` times each request in the thread's CPU time (``time.thread_time``)
instead of wall time: it leaves out the wait for the server's reply and the time other
processes hold the core, so it stays steady on a busy machine (and shows no server-side
cost).

Usage: python bench/bench_apps.py [--processes N] [--rounds N] [--clock wall|cpu]   (REDIS_URL to use a running server)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

VARIANTS = ("per_request", "flask_redis", "ours")
#: The guarantees that can be switched off in the second table, and its columns.
SWITCHES = ("teardown", "hand_over", "counting", "write_once")
PRICED = ("ours", *(f"no_{switch}" for switch in SWITCHES), "all_off")
GETS = (0, 1, 10)
CALLS = {0: 600, 1: 400, 10: 150}  # requests per variant per round
#: What a request's time is measured with (``--clock``).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def build(variant: str, url: str, gets: int) -> Any:
    """A fresh app of ``variant`` whose ``/view`` does ``gets`` GETs; its test client."""
    from flask import Flask
    from redis import ConnectionPool, Redis

    app = Flask(f"bench_{variant}")
    if variant == "global":
        client = Redis.from_url(url)

        def view() -> str:
            for _ in range(gets):
                client.get("k")
            return "ok"

    elif variant == "per_request":
        pool = ConnectionPool.from_url(url)

        def view() -> str:
            client = Redis(connection_pool=pool)
            for _ in range(gets):
                client.get("k")
            return "ok"

    elif variant == "flask_redis":
        from flask_redis import FlaskRedis

        app.config["REDIS_URL"] = url
        redis_store = FlaskRedis(app)

        def view() -> str:
            for _ in range(gets):
                redis_store.get("k")
            return "ok"

    else:
        from flask_redispool import RedisPool

        app.config["REDIS_URL"] = url
        redis_pool = RedisPool(app)
        if variant != "ours":
            switch_off(app, redis_pool, variant)

        def view() -> str:
            for _ in range(gets):
                redis_pool.client.get("k")
            return "ok"

    app.add_url_rule("/view", "view", view)
    return app.test_client()


def switch_off(app: Any, redis_pool: Any, variant: str) -> None:
    """Switch off in ``app`` (just registered, not used yet) the guarantees ``variant``
    names (``no_teardown``, ..., ``all_off``): for pricing them, never done in an app."""
    from redis import ConnectionPool
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    from flask_redispool._config import BACKOFF_BASE, BACKOFF_CAP

    off = set(SWITCHES) if variant == "all_off" else {variant.removeprefix("no_")}
    ours = redis_pool.get_client(app)
    pool = ours.connection_pool
    if "teardown" in off:  # Flask registers none of its own: every one is ours
        app.teardown_appcontext_funcs.clear()
    if "hand_over" in off:
        app.after_request_funcs.clear()
    options = dict(pool.connection_options)
    if "write_once" in off:  # before the first connection is made
        pool.connection_class = pool.connection_class.base
        backoff = ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE)
        options["retry"] = pool.connection_kwargs["retry"] = Retry(backoff, pool.settings.retries)
    if "counting" in off:
        ours.connection_pool = ConnectionPool(connection_class=pool.connection_class, **options)


def paired(
    baseline: Callable[[], Any], variant: Callable[[], Any], calls: int, rounds: int, clock: str = "wall"
) -> tuple[float, float]:
    """Median (baseline time / variant time) and median (variant - baseline) seconds, timed
    with ``clock`` (a key of :data:`CLOCKS`)."""
    now = CLOCKS[clock]
    for _ in range(calls // 4):  # warm up: connections made, code paths hot
        baseline()
        variant()
    ratios, added = [], []
    gc.disable()
    try:
        for _ in range(rounds):
            spent = [0.0, 0.0]
            for i in range(calls):
                for which, fn in ((0, baseline), (1, variant)) if i % 2 else ((1, variant), (0, baseline)):
                    started = now()
                    fn()
                    spent[which] += now() - started
            ratios.append(spent[0] / spent[1])
            added.append((spent[1] - spent[0]) / calls)
    finally:
        gc.enable()
    return statistics.median(ratios), statistics.median(added)


def run_worker(url: str, gets: int, rounds: int, variants: list[str], clock: str) -> None:
    """One process: each of ``variants`` against the baseline, for ``gets`` GETs; prints JSON."""
    results: dict[str, tuple[float, float]] = {}
    baseline = build("global", url, gets)
    for variant in variants:
        if gets == 0 and variant == "per_request":
            continue  # builds a client it never uses: not a pattern anybody measures
        other = build(variant, url, gets)
        results[variant] = paired(
            lambda: baseline.get("/view"), lambda c=other: c.get("/view"), CALLS[gets], rounds, clock
        )
    print(json.dumps(results))


def measure(
    url: str, gets: int, rounds: int, hiredis: bool, variants: tuple[str, ...], clock: str
) -> dict[str, list[float]]:
    """One fresh interpreter's figures; without hiredis it cannot import it."""
    prelude = "" if hiredis else "import sys; sys.modules['hiredis'] = None; "
    code = f"{prelude}import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    command = [sys.executable, "-c", code, __file__, "--worker", str(gets), "--url", url, "--rounds", str(rounds)]
    command += ["--variants", ",".join(variants), "--clock", clock]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def row(args: argparse.Namespace, url: str, hiredis: bool, gets: int, variants: tuple[str, ...]) -> str:
    """One line of a table: each variant's median ratio and µs added over ``args.processes``."""
    runs = [measure(url, gets, args.rounds, hiredis, variants, args.clock) for _ in range(args.processes)]
    cells = []
    for variant in variants:
        if variant not in runs[0]:
            cells.append("n/a")
            continue
        ratio = statistics.median(run[variant][0] for run in runs)
        added = statistics.median(run[variant][1] for run in runs) * 1e6
        cells.append(f"{ratio:.3f} ({added:+.1f} µs)")
    return f"| {'hiredis' if hiredis else 'Python'} | {gets} | " + " | ".join(cells) + " |"


def table(args: argparse.Namespace, url: str) -> list[str]:
    has_hiredis = importlib.util.find_spec("hiredis") is not None
    lines = [
        "| parser | GETs | per request (`Redis(connection_pool=…)`) | flask-redis 0.4 | flask-redispool |",
        "|---|---:|---:|---:|---:|",
    ]
    for hiredis in (False, True) if has_hiredis else (False,):
        lines += [row(args, url, hiredis, gets, VARIANTS) for gets in GETS]
    if not has_hiredis:
        lines.append("(hiredis is not installed: `pip install hiredis` for its rows)")
    return lines


def price_table(args: argparse.Namespace, url: str) -> list[str]:
    """What each guarantee costs: ours beside ours with it switched off (Python parser:
    the guarantees do not parse replies)."""
    lines = [
        "| parser | GETs | flask-redispool | no teardown | no hand-over | no counting | no write-once | all off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return lines + [row(args, url, False, gets, PRICED) for gets in GETS]


def parse_arguments(doc: str, gets: tuple[int, ...]) -> argparse.Namespace:
    """The options of an app-against-app benchmark; ``--worker``/``--url`` run one process."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds per process")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per figure")
    parser.add_argument("--worker", type=int, choices=gets, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="what a request's time is")
    parser.add_argument("--variants", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments(__doc__, GETS)
    if args.worker is not None:
        run_worker(args.url, args.worker, args.rounds, args.variants.split(","), args.clock)
        return
    from bench_pool import pin_apart  # type: ignore[import-not-found]

    from flask_redispool.testing import RedisServer

    url = os.environ.get("REDIS_URL")
    server = None if url else RedisServer().start()
    try:
        pinned = pin_apart(server.pid if server else None)
        url = url or (server.url if server else "")
        from importlib.metadata import version

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Flask {version('flask')}, redis-py {version('redis')}; median of {args.processes} processes x "
            f"{args.rounds} rounds, {args.clock} time{'; server and benchmark on separate cores' if pinned else ''}"
        )
        print("ratio = throughput against a plain app with a module-global client (1.00); µs added per request")
        for line in table(args, url):
            print(line, flush=True)
        print("What each guarantee costs: the same, with one switched off in this benchmark only")
        for line in price_table(args, url):
            print(line, flush=True)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
