"""``REDIS_CLIENT_CACHE``: redis-py's client-side cache on the app's sync pools.

Correctness is measured on a real Redis 8.2 server (``redis8_server``): another connection
writes, and our next read after the write was acknowledged (plus one round trip: the
server's invalidation is a push on our connection, on its way while the writer reads its
``OK``) returns the new value, also after our connection was killed, and with threads on
a pool of several connections, each of which has a cache of its own. Servers that cannot
serve the cache (Valkey 9, Redis 6.2) refuse it with one clear error and no stale read.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.cache
from flask import Flask
from redis import Redis
from redis.cluster import RedisCluster

from flask_redispool import ConfigError, RedisPool
from flask_redispool._client_cache import ClientCacheSettings, parse_client_cache
from flask_redispool.testing import RedisClusterServers, RedisServer

from .conftest import SentinelService, our_connections, run_in_threads, wait_until
from .test_prometheus import scrape

#: Whether the installed redis-py has the cache this key needs (8.2 and later).
NEW_ENOUGH = hasattr(redis.cache, "TrackingMode")
needs_new_redis_py = pytest.mark.skipif(not NEW_ENOUGH, reason="REDIS_CLIENT_CACHE needs redis-py 8.2")
TRIALS = 10_000
CACHE_FIGURES = ("cache_hits", "cache_misses", "cache_invalidations", "cache_evictions", "cache_entries")


@pytest.fixture
def redis8(redis8_server: RedisServer) -> Iterator[Redis]:
    """A plain client of the session's Redis 8 server (the other process that writes); the
    data is wiped before each test."""
    client = Redis.from_url(redis8_server.url, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def cached_app(make_app: Callable[..., Flask], redis8_server: RedisServer, redis8: Redis) -> Flask:
    return make_app(REDIS_URL=redis8_server.url, REDIS_CLIENT_CACHE=True, REDIS_STATS_INTERVAL=0)


def cache_stats(redis_pool: RedisPool, app: Flask) -> dict[str, int]:
    stats = redis_pool.stats(app)
    return {name: stats[name] for name in CACHE_FIGURES}  # type: ignore[literal-required]


# --- the key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (False, None),
        ("off", None),
        (True, ClientCacheSettings()),
        ("true", ClientCacheSettings()),
        ({"max_size": 50}, ClientCacheSettings(max_size=50)),
        (
            {"key_prefixes": ["config:"], "commands": ["get", "HGETALL"]},
            ClientCacheSettings(key_prefixes=("config:",), commands=("GET", "HGETALL")),
        ),
    ],
)
def test_the_key_takes_true_or_the_cache_options(value: object, expected: ClientCacheSettings | None) -> None:
    assert parse_client_cache(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (3, ""),
        ({"maxsize": 5}, "; 'maxsize' is not one of them"),
        ({"max_size": 0}, "; its 'max_size' is not an int >= 1"),
        ({"key_prefixes": "config:"}, "; its 'key_prefixes' is not a list of str"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_key_and_what_it_takes(
    make_app: Callable[..., Flask], value: object, why: str
) -> None:
    app = make_app(REDIS_URL="redis://localhost:6379/0", REDIS_CLIENT_CACHE=value)
    with pytest.raises(ConfigError) as info:
        RedisPool(app)
    assert str(info.value).startswith(
        "REDIS_CLIENT_CACHE must be True, False, or a dict of the cache's options: 'max_size' (the most "
        "replies kept, an int >= 1), 'key_prefixes' (cache only reads of keys that start with one of these "
        "str), 'commands' (cache only these read commands, e.g. ['GET', 'HGETALL'])" + why + ", got "
    )


def test_only_the_listed_commands_and_key_prefixes_are_wanted() -> None:
    only = ClientCacheSettings(key_prefixes=("config:",), commands=("GET",))
    assert only.wanted("GET", ("config:a",))
    assert only.wanted("get", (b"config:b",))
    assert not only.wanted("GET", ("config:a", "user:1"))
    assert not only.wanted("HGETALL", ("config:a",))


@needs_new_redis_py
@pytest.mark.parametrize(
    ("config", "where"),
    [({"REDIS_OPTIONS": {"protocol": 2}}, ""), ({}, "?protocol=2")],
)
def test_resp2_forced_is_refused_at_init_app(
    make_app: Callable[..., Flask], config: dict[str, object], where: str
) -> None:
    app = make_app(REDIS_URL=f"redis://localhost:6379/0{where}", REDIS_CLIENT_CACHE=True, **config)
    with pytest.raises(ConfigError) as info:
        RedisPool(app)
    assert str(info.value) == (
        "REDIS_CLIENT_CACHE needs RESP3 (the server's invalidations are RESP3 pushes), but REDIS_OPTIONS "
        "or REDIS_URL sets protocol=2: remove it (REDIS_CLIENT_CACHE turns RESP3 on), or remove REDIS_CLIENT_CACHE."
    )


@needs_new_redis_py
def test_fakeredis_is_refused_at_init_app(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL="fakeredis://", REDIS_CLIENT_CACHE=True)
    with pytest.raises(ConfigError) as info:
        RedisPool(app)
    assert str(info.value) == (
        "REDIS_CLIENT_CACHE needs a Redis server that tracks keys (CLIENT TRACKING), which fakeredis does not: "
        "test the cache against a real Redis 7.4 or later, or remove REDIS_CLIENT_CACHE."
    )


@pytest.mark.skipif(NEW_ENOUGH, reason="redis-py 8.2 has the cache this key needs")
def test_an_older_redis_py_is_refused_at_init_app_naming_the_version_needed(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL="redis://localhost:6379/0", REDIS_CLIENT_CACHE=True)
    with pytest.raises(ConfigError) as info:
        RedisPool(app)
    assert str(info.value) == (
        f"REDIS_CLIENT_CACHE needs redis-py 8.2 or later, and {redis.__version__} is installed: its cache keeps "
        "replies filled before a reconnect, which the server no longer invalidates. Upgrade redis-py, or "
        "remove REDIS_CLIENT_CACHE."
    )


def test_the_cache_is_off_by_default(app: Flask, redis_pool: RedisPool) -> None:
    with app.app_context():
        redis_pool.client.get("k")
        assert redis_pool.get_pool().client_cache is None
        assert cache_stats(redis_pool, app) == dict.fromkeys(CACHE_FIGURES, 0)


# --- servers that cannot serve it ------------------------------------------------------


@needs_new_redis_py
@pytest.mark.parametrize(("server_fixture", "name"), [("valkey_server", "valkey"), ("redis_server", "redis")])
def test_a_server_without_redis_7_4_tracking_refuses_every_command_and_keeps_no_connection(
    make_app: Callable[..., Flask], request: pytest.FixtureRequest, server_fixture: str, name: str
) -> None:
    """Valkey 9 (which redis-py refuses by name) and Redis 6.2 (by version)."""
    server: RedisServer = request.getfixturevalue(server_fixture)
    observer = Redis.from_url(server.url, socket_timeout=10)
    observer.set("k", "v")
    app = make_app(REDIS_URL=server.url, REDIS_CLIENT_CACHE=True, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    with app.app_context():
        for _ in range(2):  # the first connection and the next: never a reply, never a stale one
            with pytest.raises(ConfigError) as info:
                redis_pool.client.get("k")
            assert re.fullmatch(
                f"REDIS_CLIENT_CACHE is on, but the server at 127.0.0.1:{server.port} is {name} [0-9.]+: "
                r"redis-py's client-side cache needs Redis 7\.4 or later \(it refuses Valkey and older Redis, "
                r"whatever they answer to CLIENT TRACKING\)\. Remove REDIS_CLIENT_CACHE for this server\.",
                str(info.value),
            )
        assert our_connections(observer, app.import_name) == []
    observer.close()


# --- correctness on Redis 8.2 ----------------------------------------------------------


@needs_new_redis_py
def test_hits_misses_and_invalidations_are_counted(cached_app: Flask, redis8: Redis) -> None:
    redis_pool = RedisPool(cached_app)
    redis8.set("k", "old")
    with cached_app.app_context():
        client = redis_pool.client
        assert [client.get("k") for _ in range(3)] == [b"old"] * 3
        assert cache_stats(redis_pool, cached_app) == {
            "cache_hits": 2,
            "cache_misses": 1,
            "cache_invalidations": 0,
            "cache_evictions": 0,
            "cache_entries": 1,
        }
        redis8.set("k", "new")
        redis8.ping()  # one round trip after the write: its invalidation has reached us
        assert client.get("k") == b"new"
        figures = cache_stats(redis_pool, cached_app)
    assert (figures["cache_invalidations"], figures["cache_misses"], figures["cache_hits"]) == (1, 2, 2)


@needs_new_redis_py
def test_idle_connections_are_counted_behind_the_cache_proxy(cached_app: Flask, redis8: Redis) -> None:
    """redis-py puts a cache proxy before each connection: the pool still sees its socket."""
    redis_pool = RedisPool(cached_app)
    with cached_app.app_context():
        redis_pool.client.get("k")
        assert (redis_pool.stats()["idle"], redis_pool.stats()["in_use"]) == (1, 0)
        redis_pool.get_pool().disconnect()
        assert redis_pool.stats()["idle"] == 0


@needs_new_redis_py
def test_threads_share_the_one_connection_and_every_reply_is_theirs(
    make_app: Callable[..., Flask], redis8_server: RedisServer, redis8: Redis
) -> None:
    """Four threads on a pool of one connection read cached keys, echo and count while
    another client writes one of the keys: each gets its own replies."""
    app = make_app(
        REDIS_URL=redis8_server.url, REDIS_CLIENT_CACHE=True, REDIS_MAX_CONNECTIONS=1, REDIS_STATS_INTERVAL=0
    )
    redis_pool = RedisPool(app)
    redis8.mset({f"hot:{i}": f"v{i}" for i in range(3)})
    wrong: list[object] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.wait(0.001):
            redis8.set("hot:2", "v2")

    def work() -> None:
        name = threading.current_thread().name
        with app.app_context():
            client = redis_pool.client
            for n in range(1, 301):
                replies = [client.get(f"hot:{i}") for i in range(3)], client.echo(name), client.incr(name)
                if replies != ([b"v0", b"v1", b"v2"], name.encode(), n):
                    wrong.append(replies)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        run_in_threads(work, 4)
    finally:
        stop.set()
        writer.join(10)
    assert wrong == []
    assert redis_pool.stats(app)["cache_hits"] > 0


@needs_new_redis_py
def test_eight_threads_on_ten_connections_get_their_own_fresh_replies_while_another_client_writes(
    make_app: Callable[..., Flask], redis8_server: RedisServer, redis8: Redis
) -> None:
    """A threaded worker: 8 threads on a pool of 10 connections read hot keys, echo and count
    while another client keeps writing one of them. No reply is lost (redis-py's one cache
    per pool reads the socket of the connection that filled an entry, even while another
    thread waits there for its reply: it times out), none is another's, and no read that
    starts after the writer's acknowledgement plus one round trip is stale. Retries are off
    and the timeout is long: a lost reply is an error here, not a retried GET."""
    app = make_app(
        REDIS_URL=redis8_server.url,
        REDIS_CLIENT_CACHE=True,
        REDIS_MAX_CONNECTIONS=10,
        REDIS_SOCKET_TIMEOUT=5,
        REDIS_RETRIES=0,
        REDIS_STATS_INTERVAL=0,
    )
    redis_pool = RedisPool(app)
    redis8.mset({"hot:0": "v0", "hot:1": "v1", "hot:written": 0})
    acknowledged = [0]  # the last value the writer saw acknowledged, then pinged
    failures: list[object] = []
    stop = threading.Event()

    def write() -> None:
        with Redis.from_url(redis8_server.url, socket_timeout=10) as writer:
            for value in itertools.count(1):
                if stop.is_set():
                    return
                writer.set("hot:written", value)
                writer.ping()
                acknowledged[0] = value

    def work() -> None:
        name = threading.current_thread().name
        try:
            with app.app_context():
                client = redis_pool.client
                for n in range(1, 301):
                    floor = acknowledged[0]
                    replies = client.get("hot:0"), client.get("hot:1"), client.echo(name), client.incr(name)
                    written = int(client.get("hot:written"))  # type: ignore[arg-type]
                    if replies != (b"v0", b"v1", name.encode(), n):
                        failures.append(replies)
                    if written < floor:
                        failures.append(f"stale: read {written} after {floor} was acknowledged")
        except Exception as exc:  # a lost reply times out
            failures.append(repr(exc))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        run_in_threads(work, 8, timeout=120)
    finally:
        stop.set()
        writer.join(15)
    assert failures == []
    stats = redis_pool.stats(app)
    assert stats["created"] > 1  # the threads did share the pool's connections
    assert stats["cache_hits"] > 0
    assert stats["cache_invalidations"] > 0


@needs_new_redis_py
def test_each_connection_caches_for_itself_and_the_figures_add_up(cached_app: Flask, redis8: Redis) -> None:
    """Two connections read the same key: each caches it (``max_size`` is per connection).
    The server invalidates both. Closing them empties their caches and keeps the counts."""
    redis_pool = RedisPool(cached_app)
    redis8.set("k", "old")
    with cached_app.app_context():
        pool = redis_pool.get_pool()
        first, second = (Redis(connection_pool=pool, single_connection_client=True) for _ in range(2))
        for client in (first, second, first, second):
            assert client.get("k") == b"old"
        assert cache_stats(redis_pool, cached_app) == {
            "cache_hits": 2,
            "cache_misses": 2,
            "cache_invalidations": 0,
            "cache_evictions": 0,
            "cache_entries": 2,
        }
        redis8.set("k", "new")
        redis8.ping()
        assert (first.get("k"), second.get("k")) == (b"new", b"new")
        first.close()
        second.close()
        pool.disconnect()
        figures = cache_stats(redis_pool, cached_app)
    assert figures == {
        "cache_hits": 2,
        "cache_misses": 4,
        "cache_invalidations": 2,
        "cache_evictions": 0,
        "cache_entries": 0,
    }


@needs_new_redis_py
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_no_cache_and_its_own_figures(cached_app: Flask, redis8: Redis) -> None:
    """The parent's cached reply is on the parent's connection: the child reads from the
    server, and counts only its own reads."""
    redis_pool = RedisPool(cached_app)
    redis8.set("k", "v")
    with cached_app.app_context():
        assert redis_pool.client.get("k") == redis_pool.client.get("k") == b"v"
        assert cache_stats(redis_pool, cached_app)["cache_hits"] == 1
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                fresh = cache_stats(redis_pool, cached_app) == dict.fromkeys(CACHE_FIGURES, 0)
                read = redis_pool.client.get("k") == b"v"
                after = cache_stats(redis_pool, cached_app)
                code = 0 if fresh and read and (after["cache_misses"], after["cache_hits"]) == (1, 0) else 2
            finally:
                os._exit(code)
        assert wait_until(lambda: _exit_code(pid), 30, "the child") == (0,)


def _exit_code(pid: int) -> tuple[int] | None:
    """``(exit code,)`` of the child ``pid`` once it ended, else ``None``."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return (os.waitstatus_to_exitcode(status),) if done == pid else None


@needs_new_redis_py
def test_a_read_one_round_trip_after_another_connection_wrote_is_never_stale(cached_app: Flask, redis8: Redis) -> None:
    """The staleness window over 10,000 trials: a raw client writes (and reads its OK and
    one PING's reply: one round trip), then our cached client reads. Stale reads right
    after the OK, without the round trip, are counted too: the server pushes the
    invalidation as it answers the writer, so it may not have arrived yet."""
    redis_pool = RedisPool(cached_app)
    with cached_app.app_context():
        client = redis_pool.client
        stale_after_round_trip = stale_at_once = 0
        for i in range(TRIALS):
            redis8.set("k", i)
            redis8.ping()
            stale_after_round_trip += int(client.get("k")) != i  # type: ignore[arg-type]
        for i in range(TRIALS // 10):
            redis8.set("k", -i)
            stale_at_once += int(client.get("k")) != -i  # type: ignore[arg-type]
        figures = cache_stats(redis_pool, cached_app)
    print(f"stale after ack + 1 RTT: {stale_after_round_trip}/{TRIALS}; at once: {stale_at_once}/{TRIALS // 10}")
    assert stale_after_round_trip == 0
    assert figures["cache_invalidations"] >= TRIALS  # each write invalidated our entry


@needs_new_redis_py
def test_a_killed_connection_flushes_the_cache(cached_app: Flask, redis8: Redis) -> None:
    """CLIENT KILL our connection, then write: the server sends no invalidation to a dead
    connection, so the reconnect must have flushed what it cached."""
    redis_pool = RedisPool(cached_app)
    redis8.set("k", "old")
    with cached_app.app_context():
        client = redis_pool.client
        assert client.get("k") == client.get("k") == b"old"  # cached
        [ours] = our_connections(redis8, cached_app.import_name)
        assert redis8.client_kill_filter(_id=ours["id"]) == 1
        redis8.set("k", "new")
        assert client.get("k") == b"new"
        assert client.get("k") == b"new"
        assert cache_stats(redis_pool, cached_app)["cache_entries"] == 1


@needs_new_redis_py
def test_max_size_evicts_and_counts(make_app: Callable[..., Flask], redis8_server: RedisServer, redis8: Redis) -> None:
    app = make_app(REDIS_URL=redis8_server.url, REDIS_CLIENT_CACHE={"max_size": 2}, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    redis8.mset(dict.fromkeys("abcd", "v"))  # a missing key's None is not cached
    with app.app_context():
        for key in ("a", "b", "c", "d"):
            redis_pool.client.get(key)
        figures = cache_stats(redis_pool, app)
    assert (figures["cache_entries"], figures["cache_evictions"], figures["cache_misses"]) == (2, 2, 4)


@needs_new_redis_py
def test_only_the_key_prefixes_are_cached(
    make_app: Callable[..., Flask], redis8_server: RedisServer, redis8: Redis
) -> None:
    app = make_app(
        REDIS_URL=redis8_server.url,
        REDIS_CLIENT_CACHE={"key_prefixes": ["config:"]},
        REDIS_STATS_INTERVAL=0,
    )
    redis_pool = RedisPool(app)
    redis8.mset({"config:a": "1", "user:1": "2"})
    with app.app_context():
        client = redis_pool.client
        for _ in range(3):
            assert (client.get("config:a"), client.get("user:1")) == (b"1", b"2")
        redis8.set("config:a", "3")
        redis8.ping()
        assert client.get("config:a") == b"3"
        figures = cache_stats(redis_pool, app)
    assert (figures["cache_hits"], figures["cache_misses"], figures["cache_entries"]) == (2, 2, 1)


@needs_new_redis_py
def test_the_figures_reach_snapshots_and_prometheus(cached_app: Flask, redis8: Redis) -> None:
    redis_pool = RedisPool(cached_app)
    redis8.set("k", "v")
    with cached_app.app_context():
        for _ in range(3):
            redis_pool.client.get("k")
        stats = redis_pool.stats()
        report = redis_pool.report()
        samples = scrape(cached_app)
    assert (stats["cache_hits"], stats["cache_misses"], stats["cache_entries"]) == (2, 1, 1)
    [row] = [row for row in report["processes"] if row["this_process"]]
    assert (report["totals"]["cache_hits"], report["pool"]["cache_hits"]) == (row["cache_hits"] or 0, 2)
    assert samples[("flask_redispool_client_cache_hits_total", "REDIS")] == 2
    assert samples[("flask_redispool_client_cache_misses_total", "REDIS")] == 1
    assert samples[("flask_redispool_client_cache_entries", "REDIS")] == 1


@needs_new_redis_py
def test_async_clients_are_unaffected(cached_app: Flask, redis8: Redis) -> None:
    """redis-py's cache is sync only: an async view's client reads from the server, in RESP3."""
    redis_pool = RedisPool(cached_app)
    redis8.set("k", "v")

    @cached_app.get("/")
    async def read_twice() -> list[str]:
        return [str(await redis_pool.async_client.get("k")) for _ in range(2)]

    assert cached_app.test_client().get("/").json == ["b'v'", "b'v'"]
    assert cache_stats(redis_pool, cached_app)["cache_misses"] == 0


# --- Sentinel on Redis 8.2 -------------------------------------------------------------


@pytest.fixture
def redis8_sentinel(redis8_server: RedisServer) -> Iterator[SentinelService]:
    """1 Redis 8.2 master, 1 replica and 3 sentinels on loopback; stopped by pid."""
    binary = redis8_server.binary
    started: list[RedisServer] = []
    try:
        master = RedisServer(binary).start()
        started.append(master)
        replica = RedisServer(binary, args=("--replicaof", "127.0.0.1", str(master.port)))
        sentinels = [RedisServer.sentinel_for(master.port, binary=binary) for _ in range(3)]
        for server in (replica, *sentinels):
            started.append(server.start())
        service = SentinelService(master, [replica], sentinels)
        service.wait_ready(replicas=1)
        yield service
    finally:
        for server in started:
            server.stop()


@needs_new_redis_py
def test_a_sentinel_failover_flushes_the_cache(
    make_app: Callable[..., Flask], redis8_sentinel: SentinelService
) -> None:
    """The master changes: a value cached from the old one is not read after a write to the
    new one was acknowledged (plus one round trip)."""
    app = make_app(REDIS_URL=redis8_sentinel.url, REDIS_CLIENT_CACHE=True, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    old_port = redis8_sentinel.master_port()
    with Redis(port=old_port, socket_timeout=5) as old:
        old.set("k", "old")
        old.wait(1, 5000)
    with app.app_context():
        client = redis_pool.client
        assert client.get("k") == client.get("k") == b"old"
        assert redis_pool.stats()["cache_hits"] == 1
        with redis8_sentinel.ask() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", redis8_sentinel.name)
        new_port = wait_until(
            lambda: (port := redis8_sentinel.agreed_master()) != old_port and port, 30, "the new master"
        )
        # Until the sentinels demote the old master (and close its clients), it still answers
        # as one, cache or not: a plain read there is as old.
        wait_until(lambda: _role(old_port) == "slave", 30, "the old master demoted")
        with Redis(port=new_port, socket_timeout=5) as new:
            new.set("k", "new")
            new.ping()
        read: Any = wait_until(lambda: _read_or_none(client), 30, "a read after the failover")
        assert read == b"new"


def _role(port: int) -> str:
    with Redis(port=port, socket_timeout=5, decode_responses=True) as server:
        return str(server.info("replication")["role"])


def _read_or_none(client: Redis) -> Any:
    """``GET k``, or ``None`` while the failover makes it fail (the old master refuses or
    closes its connections)."""
    try:
        return client.get("k")
    except (ConnectionError, redis.exceptions.RedisError):
        return None


# --- Redis Cluster on Redis 8.2 --------------------------------------------------------


@needs_new_redis_py
def test_a_cluster_caches_per_node_and_stays_fresh(make_app: Callable[..., Flask], redis8_server: RedisServer) -> None:
    """Each node's pool has a cache; the node that holds a key invalidates it."""
    with RedisClusterServers(redis8_server.binary) as cluster:
        app = make_app(REDIS_URL=cluster.url, REDIS_CLIENT_CACHE=True, REDIS_STATS_INTERVAL=0)
        redis_pool = RedisPool(app)
        writer = RedisCluster(host="127.0.0.1", port=cluster.masters()[0].port, socket_timeout=5)
        writer.set("k", "old")
        node = writer.get_node_from_key("k")
        with app.app_context():
            client = redis_pool.cluster_client
            assert client.get("k") == client.get("k") == b"old"
            assert redis_pool.stats()["cache_hits"] == 1
            stale = 0
            for i in range(TRIALS // 5):
                writer.set("k", i)
                writer.ping(target_nodes=node)
                stale += int(client.get("k")) != i  # type: ignore[arg-type]
            assert stale == 0
            assert redis_pool.stats()["cache_invalidations"] >= TRIALS // 5
        writer.close()


# --- OpenTelemetry: redis-py's CSC group -----------------------------------------------

#: Run in a process of its own: OpenTelemetry's meter provider is set once per process,
#: and redis-py's observability is process-wide.
OTEL_APP = """
import json, sys
from flask import Flask
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.observability.config import MetricGroup, OTelConfig
from redis.observability.providers import get_observability_instance
from flask_redispool import RedisPool
from tests.telemetry_app import collected

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
get_observability_instance().init(OTelConfig(metric_groups=[MetricGroup.CSC]))
app = Flask("otel_cache")
app.config.update(REDIS_URL=sys.argv[1], REDIS_CLIENT_CACHE=True, REDIS_STATS_INTERVAL=0)
redis_pool = RedisPool(app)
with app.app_context():
    redis_pool.client.set("k", "v")
    for _ in range(3):
        redis_pool.client.get("k")
    stats = redis_pool.stats()
report = {"stats": stats, "metrics": collected(reader)}
redis_pool.close(app)
print(json.dumps(report, default=str))
"""


@needs_new_redis_py
def test_redis_py_records_the_cache_in_opentelemetry(redis8_server: RedisServer) -> None:
    """redis-py's CSC metric group counts the hits and misses of the caches we give its pools."""
    root = Path(__file__).resolve().parent.parent
    ran = subprocess.run(
        [sys.executable, "-c", OTEL_APP, redis8_server.url], capture_output=True, text=True, timeout=60, cwd=root
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    requests = {
        point["attributes"].get("redis.client.csc.result"): point["value"]
        for point in report["metrics"]["redis.client.csc.requests"]
    }
    assert (report["stats"]["cache_hits"], report["stats"]["cache_misses"]) == (2, 1)
    assert requests == {"hit": 2, "miss": 1}
