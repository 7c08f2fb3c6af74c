"""Nothing outlives its app: ``close(app)``, apps dropped without it, and several apps of
one process sharing a client name. Against a real server."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from flask_redispool import RedisPool
from flask_redispool._extension import LOOPS_KEY, app_states
from flask_redispool._stats import HOST

from .conftest import Lines, blocked_in, our_connections, pools_of, stop_process, wait_until


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


def uses_of(client: Redis) -> list[Callable[[], object]]:
    """A command, a pipeline, a pubsub and a monitor of ``client``: each takes a connection."""

    def pipeline() -> object:
        pipe = client.pipeline()
        pipe.incr("hits")
        return pipe.execute()

    return [lambda: client.incr("hits"), pipeline, lambda: client.pubsub().subscribe("news"), client.monitor]


CLOSED = r"was closed on app .* by close\(\): its pool is gone\. Make a new app"


def test_clients_taken_before_close_raise_and_the_server_sees_none_of_their_connections(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=0.1, REDIS_SOCKET_TIMEOUT=5)
    redis_pool.init_app(app)
    kept = redis_pool.get_client(app)  # as Flask-Session and RQ keep it
    kept.incr("hits")
    blpop_started, results = threading.Event(), []

    def blpop_across_close() -> None:  # a command in flight in another thread during close()
        blpop_started.set()
        results.append(kept.blpop(["never-filled"], timeout=4))

    with app.app_context():
        in_request = redis_pool.client  # what a running request holds
        pinned = in_request.client()  # and a single-connection client it made
        pinned.incr("hits")
        blpop = threading.Thread(target=blpop_across_close)
        blpop.start()
        blpop_started.wait(5)
        wait_until(lambda: blocked_in(server, app.import_name, "blpop"), 5, "BLPOP")
        redis_pool.close(app)
        assert blocked_in(server, app.import_name, "blpop")  # its connection still open, still waiting
        server.lpush("never-filled", "pushed")
        blpop.join(10)
        assert results == [(b"never-filled", b"pushed")]  # it got its reply undisturbed
        for use in (*uses_of(kept), *uses_of(in_request)):
            with pytest.raises(RuntimeError, match=CLOSED):
                use()
        assert pinned.incr("hits") == 3  # still holding its connection: given back at teardown
    with pytest.raises(RuntimeError, match=CLOSED):
        pinned.incr("hits")
    assert server.get("hits") == b"3"
    wait_until(lambda: our_connections(server, app.import_name) == [], 5, "every connection to close")


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


ROUNDS = 200


def test_report_and_health_while_another_thread_closes_raise_only_what_they_say(
    make_app: Callable[..., Flask], redis_url: str
) -> None:
    """``report()`` reads the server on pooled connections: ``close()`` in another thread
    must not pull a socket out from under it (redis-py then fails with an AttributeError).
    It may raise the closed pool's RuntimeError or a RedisError; ``health()`` never raises."""
    unexpected: list[BaseException] = []
    calls = [0]

    def report_until_closed(app: Flask, redis_pool: RedisPool, reported: threading.Event) -> None:
        deadline = time.monotonic() + 30  # ends even if close() never comes
        while time.monotonic() < deadline:
            calls[0] += 1
            try:
                redis_pool.report(app)
            except RuntimeError as exc:
                if "by close()" not in str(exc):
                    unexpected.append(exc)
                return
            except RedisError:
                pass
            except Exception as exc:  # anything else is a bug
                unexpected.append(exc)
                return
            reported.set()
        unexpected.append(AssertionError("report() never raised the closed pool's error"))

    def check_health_until_closed(app: Flask, redis_pool: RedisPool) -> None:
        deadline = time.monotonic() + 30  # ends even if close() never comes
        try:
            while "by close()" not in (redis_pool.health(app)["error"] or ""):
                if time.monotonic() > deadline:
                    unexpected.append(AssertionError("health() never reported the close"))
                    return
        except Exception as exc:  # it never raises
            unexpected.append(exc)

    for _ in range(ROUNDS):
        app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=0)
        redis_pool = RedisPool(app)
        reported = threading.Event()
        threads = [
            threading.Thread(target=report_until_closed, args=(app, redis_pool, reported)),
            threading.Thread(target=check_health_until_closed, args=(app, redis_pool)),
        ]
        for thread in threads:
            thread.start()
        reported.wait(10)  # closing while reports run, not before the first
        redis_pool.close(app)
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
    errors = Counter(repr(error)[:80] for error in unexpected)
    assert unexpected == [], f"{len(unexpected)} unexpected errors in {calls[0]} reports: {errors}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_a_forked_child_starts_with_its_own_figures_and_a_free_wait_queue(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool
) -> None:
    """What a worker forked from a serving process reports counts its own requests from the
    start, and its pool's wait queue is not locked by a thread of the parent's."""
    app = make_app(REDIS_URL=redis_url)
    redis_pool.init_app(app)  # a pool made long after the package set its fork hook
    with app.app_context():
        redis_pool.client.ping()
    pool = redis_pool.get_pool(app)
    locked, forked = threading.Event(), threading.Event()

    def hold_the_queue_lock() -> None:
        with pool._wait._lock:
            locked.set()
            forked.wait(30)

    holder = threading.Thread(target=hold_the_queue_lock)
    holder.start()
    read_end, write_end = os.pipe()
    try:
        assert locked.wait(10)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                free = pool._wait._lock.acquire(timeout=5)  # type: ignore[attr-defined]  # an RLock
                report = {"checkouts": pool.counters.checkouts, "queue_lock_free": free}
                os.write(write_end, json.dumps(report).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, 30, "the forked child to exit")
            report = json.loads(os.read(read_end, 1024))
        finally:
            os.close(read_end)
    finally:
        forked.set()
        holder.join(10)
    assert report == {"checkouts": 0, "queue_lock_free": True}
    assert pool.counters.checkouts == 1  # the parent's own stay
