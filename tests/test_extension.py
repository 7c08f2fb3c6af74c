"""RedisPool against a real server: per-context clients, teardown, apps and prefixes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import cast

import flask
import pytest
from flask import Flask
from redis import Redis
from redis.client import Pipeline
from redis.connection import Connection
from redis.exceptions import TimeoutError, WatchError

from flask_redispool import PoolExhaustedError, RedisPool
from flask_redispool._pool import CountedPool

from .conftest import blocked_in, held_by_this_process, our_connections, wait_until
from .views import LEAKY_VIEWS, client_for


def test_client_is_one_per_app_on_its_pool(
    app: Flask, redis_pool: RedisPool, make_app: Callable[..., Flask], redis_url: str
) -> None:
    with app.app_context():
        first = redis_pool.client
        assert isinstance(first, Redis)
    with app.app_context():
        assert redis_pool.client is first  # prepared once: asking costs nothing
    assert first.connection_pool is redis_pool.get_pool(app)
    other = make_app(REDIS_URL=redis_url)
    redis_pool.init_app(other)
    with other.app_context():
        assert redis_pool.client is not first
        assert redis_pool.client.connection_pool is redis_pool.get_pool(other)


def test_holders_are_remembered_per_context_and_thread(app: Flask, redis_pool: RedisPool) -> None:
    """One client for all contexts, yet each context gives back only what it took."""
    key = f"_redispool_held_{redis_pool.config_prefix}"
    with app.app_context():
        kept = redis_pool.client.pipeline()
        kept.watch("a")  # holds a connection until this context ends
        with app.app_context():  # another context, e.g. another request
            redis_pool.client.pipeline().watch("b")
        assert kept.connection is not None  # the inner context's end left ours alone
        assert len(flask.g.__dict__[key].sync) == 1
    assert kept.connection is None
    assert redis_pool.stats(app)["in_use"] == 0


def test_client_outside_a_context_says_what_to_do(redis_pool: RedisPool, app: Flask) -> None:
    with pytest.raises(RuntimeError, match=r"used outside an application context\. Use it in a view"):
        _ = redis_pool.client


@pytest.mark.parametrize("use", [lambda rp: rp.client, lambda rp: rp.stats(), lambda rp: rp.get_pool()])
def test_an_app_without_init_app_says_call_init_app(
    make_app: Callable[..., Flask], use: Callable[[RedisPool], object]
) -> None:
    app = make_app()
    with app.app_context(), pytest.raises(RuntimeError) as info:
        use(RedisPool())
    assert str(info.value) == (
        f"<RedisPool config_prefix='REDIS'> is not registered on app {app.name!r}: call init_app(app) first."
    )


def test_init_app_twice_with_one_prefix_is_refused(app: Flask) -> None:
    with pytest.raises(RuntimeError) as info:
        RedisPool().init_app(app)
    assert str(info.value) == (
        f"A RedisPool with config_prefix 'REDIS' is already registered on app {app.name!r}. "
        "Call init_app once per app, or give the second RedisPool another config_prefix."
    )


@pytest.mark.parametrize("prefix", ["", "redis", "REDIS_", "1REDIS", "RE DIS"])
def test_a_bad_config_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="config_prefix must be an upper-case config key prefix"):
        RedisPool(config_prefix=prefix)


def test_one_extension_serves_two_apps(make_app: Callable[..., Flask], redis_url: str, server: Redis) -> None:
    redis_pool = RedisPool()
    one = make_app(REDIS_URL=redis_url.replace("/0", "/1"), REDIS_MAX_CONNECTIONS=2)
    two = make_app(REDIS_URL=redis_url.replace("/0", "/2"), REDIS_MAX_CONNECTIONS=5)
    for app in (one, two):
        redis_pool.init_app(app)
    for app in (one, two):
        with app.app_context():
            redis_pool.client.set("app", app.name)
    assert redis_pool.get_pool(one) is not redis_pool.get_pool(two)
    assert (redis_pool.stats(one)["max_connections"], redis_pool.stats(two)["max_connections"]) == (2, 5)
    assert Redis.from_url(redis_url.replace("/0", "/1")).get("app") == one.name.encode()
    assert Redis.from_url(redis_url.replace("/0", "/2")).get("app") == two.name.encode()


def test_two_prefixes_on_one_app(make_app: Callable[..., Flask], redis_url: str, server: Redis) -> None:
    app = make_app(REDIS_URL=redis_url, CACHE_REDIS_URL=redis_url.replace("/0", "/4"), CACHE_REDIS_MAX_CONNECTIONS=2)
    main, cache = RedisPool(app), RedisPool(app, config_prefix="CACHE_REDIS")
    with app.app_context():
        main.client.set("k", "main")
        cache.client.set("k", "cache")
        assert main.client is not cache.client
    assert server.get("k") == b"main"
    assert (cache.stats(app)["max_connections"], cache.stats(app)["client_name"]) == (2, f"{app.name}.cache_redis")
    names = {c["name"].split(":")[0] for c in server.client_list() if c["name"].startswith(app.name)}
    assert names == {app.name, f"{app.name}.cache_redis"}


@pytest.mark.parametrize("view", LEAKY_VIEWS)
def test_teardown_returns_every_connection(
    app: Flask, redis_pool: RedisPool, server: Redis, view: Callable[[RedisPool], None]
) -> None:
    client = client_for(app, redis_pool, view)
    for _ in range(5):
        client.get("/view")
        assert redis_pool.stats(app)["in_use"] == 0
    # Nothing lingers on the connections handed out next: no WATCH, no subscription, no unread reply.
    server.set("guarded", "v1")
    with app.app_context():
        with redis_pool.pipeline() as pipe:
            pipe.watch("guarded")
            pipe.multi()
            pipe.set("guarded", "v2")
            assert pipe.execute() == [True]
        assert redis_pool.client.get("guarded") == b"v2"
        with redis_pool.connection() as connection:
            connection.send_command("ECHO", "mine")
            assert connection.read_response() == b"mine"
    assert server.pubsub_numsub("news") == [(b"news", 0)]
    assert len(our_connections(server, app.import_name)) <= redis_pool.stats(app)["max_connections"]


def in_monitor(server: Redis, client_name: str) -> list[dict[str, object]]:
    """The server's connections of ``client_name`` that are in MONITOR mode (flag ``O``)."""
    return [c for c in our_connections(server, client_name) if "O" in str(c["flags"])]


@pytest.mark.parametrize("entered", [False, True], ids=["made", "entered"])
def test_a_monitor_the_view_drops_gives_its_connection_back(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis, entered: bool
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=0.2)
    redis_pool.init_app(app)

    @app.get("/monitor")
    def monitor() -> str:
        dropped = redis_pool.client.monitor()  # redis-py's Monitor takes its connection here
        if entered:
            dropped.__enter__()  # MONITOR sent, never exited
        return "ok"

    @app.get("/hits")
    def hits() -> str:
        return str(redis_pool.client.incr("hits"))

    client = app.test_client()
    for hit in (1, 2, 3):  # two connections in all: each monitor would keep one for good
        assert client.get("/monitor").text == "ok"
        assert client.get("/hits").text == str(hit)
    assert redis_pool.stats(app)["in_use"] == 0
    assert in_monitor(server, app.import_name) == []  # given back disconnected: it may have been mid-MONITOR


def test_a_monitor_of_get_client_dropped_outside_a_request_gives_its_connection_back(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.2)
    redis_pool.init_app(app)
    shared = redis_pool.get_client(app)
    for _ in range(3):
        shared.monitor().__enter__()  # dropped at once, never exited
        assert shared.incr("hits")
    assert (redis_pool.stats(app)["in_use"], in_monitor(server, app.import_name)) == (0, [])


def test_a_pipeline_block_resets_and_releases(app: Flask, redis_pool: RedisPool) -> None:
    with app.app_context():
        with redis_pool.pipeline() as pipe:
            assert isinstance(pipe, Pipeline)
            pipe.incr("a")
            pipe.incr("a")
            assert pipe.execute() == [1, 2]
            pipe.watch("a")
            assert redis_pool.stats()["in_use"] == 1
        assert redis_pool.stats()["in_use"] == 0
        assert pipe.connection is None
        assert not pipe.watching


def sell_one(pipe: Pipeline, server: Redis, *, interfere: bool) -> None:
    """redis-py's checked transaction: WATCH, read, MULTI, write, EXEC. ``interfere``: another
    client sells one between the read and EXEC, so EXEC must abort."""
    pipe.watch("stock")
    stock = int(cast(bytes, pipe.get("stock")))
    if interfere:
        server.decr("stock")
    pipe.multi()
    pipe.set("stock", stock - 1)
    if interfere:
        with pytest.raises(WatchError):
            pipe.execute()
    else:
        assert pipe.execute() == [True]


@pytest.mark.parametrize("in_a_block", [True, False], ids=["with", "kept"])
def test_a_pipeline_runs_a_checked_transaction_in_a_block_or_kept(
    app: Flask, redis_pool: RedisPool, server: Redis, in_a_block: bool
) -> None:
    """``with redis_pool.pipeline() as pipe:``, or ``pipe = redis_pool.pipeline()`` as in redis-py's docs."""
    server.set("stock", 10)
    with app.app_context():
        for interfere in (True, False):
            if in_a_block:
                with redis_pool.pipeline() as pipe:
                    sell_one(pipe, server, interfere=interfere)
            else:
                sell_one(redis_pool.pipeline(), server, interfere=interfere)
            assert redis_pool.stats()["in_use"] == 0
    assert server.get("stock") == b"8"


def connection_closed(server: Redis, client_id: int) -> bool:
    return str(client_id) not in {client["id"] for client in server.client_list()}


def test_a_pipeline_block_that_raises_gives_back_its_connection_disconnected(
    app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    watching: list[int] = []

    def fail_midway(pipe: Pipeline) -> None:
        with pipe:
            pipe.watch("guarded")
            watching.append(pipe.client_id())
            pipe.multi()
            pipe.set("guarded", "from the failed block")
            raise LookupError

    with app.app_context():
        pipe = redis_pool.pipeline()
        with pytest.raises(LookupError):
            fail_midway(pipe)
        assert redis_pool.stats()["in_use"] == 0
        assert (pipe.connection, pipe.watching, len(pipe)) == (None, False, 0)
    wait_until(lambda: connection_closed(server, watching[0]), 10, "the WATCHing connection to be closed")
    assert server.get("guarded") is None


def test_a_pipeline_kept_open_is_given_back_at_teardown(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    @app.get("/reserve")
    def reserve() -> str:
        flask.g.pipe = pipe = redis_pool.pipeline()  # alive until the context ends
        pipe.watch("stock")  # holds a connection; the view neither executes nor resets it
        return str(pipe.client_id())

    watching = int(app.test_client().get("/reserve").text)
    assert redis_pool.stats(app)["in_use"] == 0
    wait_until(lambda: connection_closed(server, watching), 10, "the WATCHing connection to be closed")


def test_teardown_never_disturbs_a_command_in_another_thread(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    """Teardown releases; it never closes the shared pool (cf. redis-py issue 3669)."""
    app = make_app(REDIS_URL=redis_url, REDIS_SOCKET_TIMEOUT=10)
    redis_pool.init_app(app)
    results: list[object] = []

    def slow_command() -> None:
        with app.app_context():
            results.append(redis_pool.client.blpop(["never-filled"], timeout=9))

    def close() -> str:
        redis_pool.client.close()
        return "closed"

    app.add_url_rule("/close", "close", close)
    thread = threading.Thread(target=slow_command)
    thread.start()
    try:
        wait_until(lambda: blocked_in(server, app.import_name, "blpop"), 10, "the BLPOP to wait on the server")
        client = app.test_client()
        for _ in range(30):
            assert client.get("/close").text == "closed"
        assert blocked_in(server, app.import_name, "blpop")  # its connection still open, still waiting
        server.lpush("never-filled", "pushed")
    finally:
        thread.join(10)
    assert results == [(b"never-filled", b"pushed")]  # BLPOP got its reply undisturbed
    assert redis_pool.stats(app)["in_use"] == 0


def test_stats_are_json_ready_and_complete(app: Flask, redis_pool: RedisPool) -> None:
    with app.app_context():
        redis_pool.client.ping()
    stats = json.loads(json.dumps(redis_pool.stats(app)))
    assert set(stats) >= {
        "url",
        "max_connections",
        "blocking",
        "pool_timeout",
        "created",
        "in_use",
        "idle",
        "peak_in_use",
        "checkouts",
        "waits",
        "timeouts",
        "pid",
        "client_name",
    }
    assert (stats["in_use"], stats["idle"], stats["checkouts"]) == (0, 1, 1)


def test_blocking_lets_a_long_blpop_return_normally(app: Flask, redis_pool: RedisPool) -> None:
    """BLPOP with a 10 s server-side timeout outlives REDIS_SOCKET_TIMEOUT (0.5 s) in blocking()."""
    with app.app_context():
        started = time.monotonic()
        with redis_pool.blocking(10) as client:
            assert client.blpop(["empty"], timeout=10) is None
        assert time.monotonic() - started >= 10
        assert redis_pool.stats()["in_use"] == 0


def test_ordinary_commands_keep_the_short_timeout_after_blocking(app: Flask, redis_pool: RedisPool) -> None:
    with app.app_context():
        with redis_pool.blocking(1) as client:
            client.rpush("jobs", "a")
            assert client.blpop(["jobs"], timeout=1) == (b"jobs", b"a")
        assert idle_timeouts(redis_pool.get_pool()) == [0.5]  # the connection BLPOP used
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            redis_pool.client.blpop(["empty"], timeout=5)
        assert time.monotonic() - started < redis_pool.settings().worst_case_seconds
    assert redis_pool.stats(app)["in_use"] == 0


def test_an_abandoned_blocking_block_is_released_at_teardown(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    with app.app_context():
        manager = redis_pool.blocking(5)
        manager.__enter__().rpush("jobs", "x")  # never exited, as a crashed view would
        assert redis_pool.stats()["in_use"] == 1
    assert redis_pool.stats(app)["in_use"] == 0
    name = redis_pool.settings(app).client_name
    wait_until(lambda: held_by_this_process(server, name) == 0, 5, "the block's connection to close")
    assert idle_timeouts(redis_pool.get_pool(app)) == [0.5]


def test_blocking_changes_no_open_sockets_timeout(
    app: Flask, redis_pool: RedisPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block's client waits on a connection made with the long timeout: it needs no way to
    change the timeout of a socket already open (redis-py's undocumented
    ``update_current_socket_timeout``), which a release may drop."""
    for cls in Connection.__mro__:
        if "update_current_socket_timeout" in vars(cls):
            monkeypatch.delattr(cls, "update_current_socket_timeout")
    with app.app_context():
        redis_pool.client.ping()  # an open pooled connection with the short timeout
        with redis_pool.blocking(1) as client:
            started = time.monotonic()
            assert client.blpop(["empty"], timeout=1) is None
            assert time.monotonic() - started >= 1
    assert redis_pool.stats(app)["in_use"] == 0


def test_a_blocking_block_takes_one_slot_of_the_pool(
    make_app: Callable[..., Flask], redis_url: str, server: Redis
) -> None:
    """The block's client is counted and bounded as a checkout, and the server sees one
    connection for its slot: the block's, with the slot's pooled connection closed meanwhile."""
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.1, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    name = redis_pool.settings(app).client_name
    with app.app_context():
        redis_pool.client.ping()
        with redis_pool.blocking(1) as client:
            client.rpush("jobs", "a")
            assert client.blpop(["jobs"], timeout=1) == (b"jobs", b"a")
            stats = redis_pool.stats()
            assert (stats["in_use"], stats["idle"], stats["checkouts"]) == (1, 0, 2)
            wait_until(lambda: held_by_this_process(server, name) == 1, 5, "the slot's connection to close")
            with pytest.raises(PoolExhaustedError):
                redis_pool.client.ping()  # the pool's one slot is the block's
        assert redis_pool.client.ping() is True
        wait_until(lambda: held_by_this_process(server, name) == 1, 5, "the block's connection to close")


def test_the_client_of_blocking_is_for_its_block(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    with app.app_context():
        with redis_pool.blocking(1) as client:
            client.ping()
        with pytest.raises(RuntimeError, match="the client of blocking\\(\\) was used after its block ended"):
            client.ping()
        name = redis_pool.settings().client_name
        wait_until(lambda: held_by_this_process(server, name) == 0, 5, "the block's connection to close")


def idle_timeouts(pool: CountedPool) -> list[float | None]:
    """The socket timeout of every connection waiting in the pool, connected or not (teardown
    gives some back disconnected), through the pool's public checkout."""
    lent = [pool.get_connection() for _ in range(pool.counters.created - pool.connection_counts()[0])]
    try:
        return [connection.socket_timeout for connection in lent]
    finally:
        for connection in lent:
            pool.release(connection)


def test_a_quiet_pubsub_waits_with_get_message(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """pubsub.get_message(timeout=...) waits past REDIS_SOCKET_TIMEOUT without an error."""
    with app.app_context():
        pubsub = redis_pool.client.pubsub()
        pubsub.subscribe("news")
        confirmation = pubsub.get_message(timeout=1)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"
        started = time.monotonic()
        assert pubsub.get_message(timeout=1.5) is None
        assert time.monotonic() - started >= 1.5
        server.publish("news", "hello")
        message = pubsub.get_message(timeout=1.5)
        assert message is not None
        assert message["data"] == b"hello"
    assert redis_pool.stats(app)["in_use"] == 0


@pytest.mark.parametrize("seconds", [-1, "10", True, float("nan"), float("inf"), 1e10])
def test_blocking_refuses_a_bad_duration(app: Flask, redis_pool: RedisPool, seconds: object) -> None:
    with app.app_context(), pytest.raises(ValueError, match="seconds must be a number of seconds >= 0 and <= 86400"):
        redis_pool.blocking(seconds).__enter__()  # type: ignore[arg-type]


def test_blocking_works_on_fakeredis(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL="fakeredis://")
    redis_pool = RedisPool(app)
    with app.app_context():
        with redis_pool.blocking(2) as client:
            client.rpush("jobs", "x")
            assert client.blpop(["jobs"], timeout=1) == (b"jobs", b"x")
        assert redis_pool.stats()["in_use"] == 0


def test_pubsub_listen_is_not_cut_by_the_socket_timeout(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """What the docs say of listen(): in redis-py 8.1 it reads with no timeout at all."""
    got: list[object] = []
    with app.app_context():
        pubsub = redis_pool.client.pubsub()
        pubsub.subscribe("news")

        def listen() -> None:
            for message in pubsub.listen():
                if message["type"] == "message":
                    got.append(message["data"])
                    return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        listener.join(3 * redis_pool.settings().socket_timeout)
        still_listening = listener.is_alive()  # no TimeoutError ended it
        server.publish("news", "hello")  # ends it either way, so nothing is left running
        listener.join(5)
        pubsub.close()
    assert still_listening
    assert got == [b"hello"]
    assert not listener.is_alive()
