"""Nothing outlives its app: ``close(app)``, apps dropped without it, and several apps of
one process sharing a client name. Against a real server."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from flask import Flask
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool._extension import LOOPS_KEY, app_states
from flask_redispool._stats import HOST

from .conftest import Lines, our_connections, pools_of, stop_process, wait_until


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def publisher_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith("flask-redispool-stats"))


def test_close_disposes_of_everything_and_is_safe_twice(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=0.1)
    redis_pool.init_app(app)

    @app.get("/async")
    async def view() -> str:
        return str(await redis_pool.async_client.incr("hits"))

    with app.app_context():
        redis_pool.client.incr("hits")
    assert app.test_client().get("/async").text == "2"
    publisher = pools_of(app).publisher
    wait_until(lambda: server.exists(publisher.key), 5, "the first snapshot")
    loops = app.extensions[LOOPS_KEY]
    assert loops.live_loops() == 1
    assert len(our_connections(server, app.import_name)) == 3  # sync, async, publisher

    collected = app.extensions["redispool.finalizers"]["REDIS"]
    redis_pool.close(app)

    assert not collected.alive  # disposed of now: nothing waits for the app's collection to run again
    assert not publisher.running
    assert not server.exists(publisher.key)
    assert our_connections(server, app.import_name) == []
    assert loops.live_loops() == 0
    assert app_states(app) == []
    redis_pool.close(app)  # twice: nothing to do
    with app.app_context(), pytest.raises(RuntimeError, match=r"was closed on app .* by close\(\)"):
        redis_pool.client.get("hits")
    with pytest.raises(RuntimeError, match="was closed"):
        redis_pool.init_app(app)
    assert app.test_cli_runner().invoke(args=["redis-ping"]).exit_code == 0  # no pools left: nothing to ping


def test_close_one_prefix_leaves_the_others(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=redis_url, JOBS_REDIS_URL=redis_url)
    jobs = RedisPool(app, config_prefix="JOBS_REDIS")
    redis_pool.init_app(app)
    redis_pool.close(app)
    with app.app_context():
        assert jobs.client.incr("jobs") == 1
    assert [state.settings.prefix for state in app_states(app)] == ["JOBS_REDIS"]


def test_close_outside_an_app_it_was_never_given_says_so(make_app: Callable[..., Flask], redis_pool: RedisPool) -> None:
    with pytest.raises(RuntimeError, match=r"is not registered on app .*: call init_app\(app\) first"):
        redis_pool.close(make_app())


CYCLES = 500


def factory(url: str, name: str) -> Callable[[], Flask]:
    redis_pool = RedisPool()

    def create_app() -> Flask:
        app = Flask(name)
        app.config.update(REDIS_URL=url, REDIS_STATS_INTERVAL=0.1)
        redis_pool.init_app(app)

        @app.get("/")
        def hits() -> str:
            return str(redis_pool.client.incr("hits"))

        return app

    return create_app


def test_apps_dropped_without_close_leave_nothing_behind(redis_url: str, server: Redis) -> None:
    name = f"dropped_{os.getpid()}"
    create_app = factory(redis_url, name)
    gc.collect()
    threads, fds = threading.active_count(), open_fds()
    for cycle in range(CYCLES):
        create_app().test_client().get("/")
        if cycle % 50 == 49:
            gc.collect()
    gc.collect()
    assert server.get("hits") == str(CYCLES).encode()
    wait_until(lambda: threading.active_count() <= threads + 2, 20, "the publisher threads to end")
    wait_until(lambda: len(our_connections(server, name)) <= 2, 20, "the server connections to close")
    assert open_fds() <= fds + 4
    assert not server.keys(f"flask_redispool:stats:{name}:*")  # each thread deleted its snapshot


def test_a_fakeredis_test_setup_leaks_no_thread() -> None:
    before = publisher_threads()
    for _ in range(20):
        app = Flask("fake_app")
        app.config.update(REDIS_URL="fakeredis://", REDIS_STATS_INTERVAL=0.1)
        redis_pool = RedisPool(app)
        with app.app_context():
            redis_pool.client.incr("hits")
        del app, redis_pool
    gc.collect()
    wait_until(lambda: publisher_threads() <= before, 10, "the fake apps' publisher threads to end")


TWO_APPS = """
import sys
from flask import Flask
from flask_redispool import RedisPool

url, name = sys.argv[1:]
apps, held = [], []
for _ in range(2):  # two apps from one factory: the same client name in one process
    apps.append(Flask(name))
    apps[-1].config.update(REDIS_URL=url, REDIS_MAX_CONNECTIONS=2, REDIS_STATS_INTERVAL=0.2)
    pool = RedisPool(apps[-1]).get_pool(apps[-1])
    held += [pool.get_connection() for _ in range(2)]
print("ready", flush=True)
sys.stdin.read()
"""


def test_two_apps_of_one_process_with_one_name_are_added_up_not_mixed(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool
) -> None:
    name = f"twins_{os.getpid()}"
    app = make_app(REDIS_URL=redis_url, REDIS_CLIENT_NAME=name)
    redis_pool.init_app(app)
    command = [sys.executable, "-c", TWO_APPS, redis_url, name]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as twins:
        try:
            assert twins.stdout is not None
            assert Lines(twins.stdout).next() == "ready\n"

            def row() -> dict[str, object] | None:
                output = app.test_cli_runner().invoke(args=["redis-stats", "--json"]).output
                rows = json.loads(output)["pools"][0]["processes"]
                found = [r for r in rows if r["pid"] == twins.pid and r["max_connections"] == 4]
                return found[0] if found else None

            twin = wait_until(row, 10, "both apps' snapshots, added up")
        finally:
            stop_process(twins)
    assert (twin["host"], twin["in_use"], twin["server_connections"], twin["suspect"]) == (HOST, 4, 4, None)
