"""Redis Sentinel behind the same ``RedisPool``, against real servers: a master, two
replicas and three sentinels started on loopback (``sentinel_service``), then failovers
while threads keep writing.

The failover tests run last in this module, in this order: the first hands the master
role to a replica, the second kills whichever server is master then.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import ConnectionError, RedisError
from redis.sentinel import Sentinel, SentinelManagedConnection

from flask_redispool import ConfigError, MayHaveRunError, RedisPool
from flask_redispool._config import load_settings
from flask_redispool._connection import ConnectionPolicy, pool_connection_class
from flask_redispool._pool import SideSentinelPool, side_client
from flask_redispool.testing import RedisServer, free_port

from .conftest import (
    PASSWORD,
    SentinelService,
    StubSentinel,
    notes,
    our_connections,
    pools_of,
    run_in_threads,
    wait_until,
)

pytestmark = pytest.mark.servers


@pytest.fixture
def sentinel_app(make_app: Callable[..., Flask], sentinel_service: SentinelService) -> tuple[Flask, RedisPool]:
    app = make_app(REDIS_URL=sentinel_service.url, REDIS_MAX_CONNECTIONS=4, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)

    @app.post("/incr/<key>")
    def incr(key: str) -> dict[str, int]:
        return {"value": redis_pool.client.incr(key)}

    @app.get("/read/<key>")
    def read(key: str) -> dict[str, str | None]:
        value = redis_pool.replica_client.get(key)
        return {"value": value.decode() if isinstance(value, bytes) else value}

    return app, redis_pool


def server_of(port: int) -> Redis:
    return Redis(port=port, socket_timeout=2)


def test_writes_go_to_the_master_and_reads_to_the_replicas(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app
    master_port = sentinel_service.master_port()
    client = app.test_client()
    assert client.post("/incr/sentinel-reads").json == {"value": 1}
    with server_of(master_port) as master:
        master.wait(2, 2000)  # both replicas have the write
        assert len(our_connections(master, app.import_name)) == 1  # the master pool's
    assert client.get("/read/sentinel-reads").json == {"value": "1"}
    replica_ports = [r.port for r in [*sentinel_service.replicas, sentinel_service.master] if r.port != master_port]
    on_replicas = 0
    for port in replica_ports:
        with server_of(port) as replica:
            on_replicas += len(our_connections(replica, app.import_name))
    assert on_replicas == 1  # the replica pool's, on one of them

    stats = redis_pool.stats(app)
    assert [(pool["role"], pool["address"], pool["created"]) for pool in stats["pools"]] == [
        ("master", f"127.0.0.1:{master_port}", 1),
        ("replica", None, 1),
    ]
    assert (stats["in_use"], stats["created"], stats["max_connections"]) == (0, 2, 8)


def test_a_replica_refuses_writes_through_replica_client(
    sentinel_app: tuple[Flask, RedisPool],
) -> None:
    app, redis_pool = sentinel_app
    with app.app_context(), pytest.raises(RedisError, match=r"READONLY|read only"):
        redis_pool.replica_client.set("not-here", 1)


def test_blocking_waits_on_the_master(sentinel_app: tuple[Flask, RedisPool]) -> None:
    """The client of blocking() finds the master through the sentinels, waits past the
    socket timeout, and takes a slot of the master's pool."""
    app, redis_pool = sentinel_app
    with app.app_context(), redis_pool.blocking(1) as client:
        client.rpush("sentinel-jobs", "a")
        assert client.blpop(["sentinel-jobs"], timeout=1) == (b"sentinel-jobs", b"a")
        started = time.monotonic()
        assert client.blpop(["sentinel-jobs"], timeout=1) is None
        assert time.monotonic() - started >= 1
        assert redis_pool.stats()["pools"][0]["in_use"] == 1
    assert redis_pool.stats(app)["in_use"] == 0


def test_redis_ping_and_stats_follow_the_service(
    make_app: Callable[..., Flask], sentinel_service: SentinelService
) -> None:
    app = make_app(REDIS_URL=sentinel_service.url, REDIS_STATS_INTERVAL=60)
    redis_pool = RedisPool(app)

    @app.get("/both")
    def both() -> str:
        redis_pool.client.incr("stats-writes")
        return str(redis_pool.replica_client.get("stats-writes"))

    runner = app.test_cli_runner()
    ping = runner.invoke(args=["redis-ping"])
    assert ping.exit_code == 0, ping.output
    app.test_client().get("/both")
    pools_of(app).publisher.publish()  # as a serving process would, every REDIS_STATS_INTERVAL
    report = runner.invoke(args=["redis-stats", "--json"])
    assert report.exit_code == 0, report.output
    (pool,) = json.loads(report.output)["pools"]
    (process,) = pool["processes"]
    master = f"127.0.0.1:{sentinel_service.master_port()}"
    assert [(p["role"], p["address"], p["created"]) for p in process["pools"]] == [
        ("master", master, 1),
        ("replica", None, 1),
    ]
    assert process["server_connections"] == 2  # CLIENT LIST of the master and of every replica
    assert process["suspect"] is None
    table = runner.invoke(args=["redis-stats"]).output
    assert f"    master   {master}" in table
    assert "    replica  -" in table


def test_init_app_does_no_io_and_unreachable_sentinels_are_a_clear_error(make_app: Callable[..., Flask]) -> None:
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster"
    app = make_app(REDIS_URL=url)
    redis_pool = RedisPool(app)  # no sentinel answers: nothing is asked yet
    with app.app_context(), pytest.raises(ConnectionError) as info:
        redis_pool.client.get("x")
    text = f"{info.value} {notes(info.value)}"
    assert "No master found for 'mymaster'" in text
    assert "REDIS_URL" in text
    assert PASSWORD not in text
    ping = app.test_cli_runner().invoke(args=["redis-ping"])
    assert ping.exit_code == 1
    assert "unreachable" in ping.output
    assert PASSWORD not in ping.output


def test_async_views_write_to_the_master_and_close_with_the_app(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app

    @app.post("/async/<key>")
    async def view(key: str) -> dict[str, int]:
        return {"value": await redis_pool.async_client.incr(key)}

    @app.get("/async/<key>")
    async def async_read(key: str) -> dict[str, str]:
        with pytest.raises(RedisError, match=r"READONLY|read only"):
            await redis_pool.async_replica_client.set(key, 0)  # a replica refuses writes
        value = await redis_pool.async_replica_client.get(key)
        return {"value": value.decode() if isinstance(value, bytes) else str(value)}

    def post() -> None:
        client = app.test_client()
        for _ in range(10):
            assert client.post("/async/async-counter").status_code == 200

    with server_of(sentinel_service.master_port()) as master:
        master.delete("async-counter")
        run_in_threads(post, 3)
        assert master.get("async-counter") == b"30"
        assert len(our_connections(master, app.import_name)) >= 1  # the loops' pools are on the master
        master.wait(2, 2000)  # both replicas have the writes
    assert app.test_client().get("/async/async-counter").json == {"value": "30"}
    stats = redis_pool.stats(app)
    # The ended threads' loops were closed when this thread made its own; the checkouts
    # stay counted: 30 INCRs, the refused SET and the GET.
    assert (stats["async_pools"], stats["async_in_use"], stats["async_checkouts"]) == (1, 0, 32)

    def on_sentinels() -> int:
        return sum(len(our_connections(server_of(s.port), app.import_name)) for s in sentinel_service.sentinels)

    assert on_sentinels() >= 1
    redis_pool.close(app)  # each loop's pool and its own Sentinel, on that loop
    wait_until(lambda: on_sentinels() == 0, 5, "the sentinels to see every connection close")
    with server_of(sentinel_service.master_port()) as master:
        wait_until(lambda: not our_connections(master, app.import_name), 5, "the master to see them close")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL is not a valid Sentinel URL"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379/mymaster/zero"}, "the path must be the service name"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:x/mymaster"}, "each sentinel must be host[:port]"),
        ({"REDIS_URL": "redis+sentinel://a:1,,b:2/mymaster"}, "each sentinel must be host[:port]"),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_SENTINEL_PASSWORD": PASSWORD},
            "REDIS_SENTINEL_PASSWORD only applies to a Sentinel service",
        ),
        ({"REDIS_URL": "redis+sentinel://h:1/m", "REDIS_SENTINEL_PASSWORD": ""}, "REDIS_SENTINEL_PASSWORD must be"),
        (
            {"REDIS_URL": "redis+sentinel://h:1/m?socket_timeout=3"},
            "REDIS_URL query argument 'socket_timeout' conflicts with REDIS_SOCKET_TIMEOUT",
        ),
    ],
)
def test_bad_sentinel_config_is_refused_naming_the_key(
    make_app: Callable[..., Flask], config: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RedisPool(make_app(**config))
    assert message in str(info.value)
    assert PASSWORD not in str(info.value)


def test_the_sentinels_own_password(make_app: Callable[..., Flask], start_server: Callable[..., RedisServer]) -> None:
    master = start_server("--requirepass", PASSWORD)
    sentinel = RedisServer.sentinel_for(master.port, quorum=1, binary=master.binary)
    assert sentinel.sentinel is not None
    sentinel.sentinel += [f"sentinel auth-pass mymaster {PASSWORD}", f"requirepass {PASSWORD}x"]
    sentinel.start()
    try:
        url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/mymaster"
        without = make_app(REDIS_URL=url)
        with without.app_context(), pytest.raises(ConnectionError, match="No master found"):
            RedisPool(without).client.ping()
        app = make_app(REDIS_URL=url, REDIS_SENTINEL_PASSWORD=PASSWORD + "x")
        redis_pool = RedisPool(app)
        with app.app_context():
            assert redis_pool.client.set("sentinel-auth", 1)
            assert redis_pool.replica_client.get("sentinel-auth") == b"1"  # no replica: the master
        shown = repr(redis_pool.settings(app)) + str(redis_pool.stats(app))
        assert PASSWORD not in shown
    finally:
        sentinel.stop()


def test_close_closes_the_pools_and_the_sentinels(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app

    def connections(servers: list[RedisServer]) -> int:
        return sum(len(our_connections(server_of(server.port), app.import_name)) for server in servers)

    data_servers = [sentinel_service.master, *sentinel_service.replicas]
    app.test_client().post("/incr/closing")
    app.test_client().get("/read/closing")
    assert connections(data_servers) == 2  # the master's pool's and the replicas' pool's
    assert connections(sentinel_service.sentinels) >= 1  # named <client name>:sentinel
    redis_pool.close(app)
    wait_until(lambda: connections(data_servers) == 0, 5, "the servers to see our connections close")
    wait_until(lambda: connections(sentinel_service.sentinels) == 0, 5, "the sentinels to see them close")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_write_refused_by_a_demoted_master_runs_once_on_the_new_one(
    make_app: Callable[..., Flask], start_server: Callable[..., RedisServer], asynchronous: bool
) -> None:
    """A pooled connection to a master that became a replica meets ``READONLY``: the
    write did not run there, so it is sent once more, to the master the sentinels name
    now; in ``async`` views as in sync ones."""
    old, new = start_server(), start_server()
    sentinel = RedisServer.sentinel_for(old.port, quorum=1, binary=old.binary).start()
    try:
        app = make_app(REDIS_URL=f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster", REDIS_RETRIES=1)
        redis_pool = RedisPool(app)
        if asynchronous:

            @app.post("/incr")
            async def async_incr() -> dict[str, int]:
                return {"value": await redis_pool.async_client.incr("counter")}

        else:

            @app.post("/incr")
            def incr() -> dict[str, int]:
                return {"value": redis_pool.client.incr("counter")}

        client = app.test_client()
        assert client.post("/incr").json == {"value": 1}  # the old master's; its connection stays pooled
        with server_of(sentinel.port) as ask:  # the sentinel names the new master
            ask.execute_command("SENTINEL", "REMOVE", "mymaster")
            ask.execute_command("SENTINEL", "MONITOR", "mymaster", "127.0.0.1", new.port, 1)
        with server_of(old.port) as demoted:
            demoted.replicaof("127.0.0.1", new.port)  # refuses writes from now on
        assert client.post("/incr").json == {"value": 1}  # on the new master
        with server_of(new.port) as master, server_of(old.port) as demoted:
            assert master.info("commandstats")["cmdstat_incrby"]["calls"] == 1  # redis-py's incr()
            assert demoted.info("commandstats")["cmdstat_incrby"]["rejected_calls"] == 1  # the second (READONLY)
    finally:
        sentinel.stop()


@pytest.mark.parametrize("transaction", [False, True], ids=["batch", "transaction"])
def test_a_batch_refused_by_a_demoted_master_runs_again_only_if_none_of_it_ran(
    make_app: Callable[..., Flask], start_server: Callable[..., RedisServer], transaction: bool
) -> None:
    """A demoted master runs what a replica may (``PUBLISH``) and refuses writes: in a
    plain batch the commands before the refused one ran, so the batch is not sent again;
    a transaction whose queued write was refused ran nothing, so it is, once."""
    old, new = start_server(), start_server()
    sentinel = RedisServer.sentinel_for(old.port, quorum=1, binary=old.binary).start()
    try:
        app = make_app(REDIS_URL=f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster", REDIS_RETRIES=1)
        redis_pool = RedisPool(app)

        @app.post("/publish-and-incr")
        def publish_and_incr() -> dict[str, Any]:
            pipe = redis_pool.client.pipeline(transaction=transaction)
            pipe.publish("news", "once")
            pipe.incr("counter")
            try:
                return {"replies": pipe.execute()}
            except MayHaveRunError:
                return {"replies": None}

        client = app.test_client()
        assert client.post("/publish-and-incr").json == {"replies": [0, 1]}  # the old master's
        with server_of(sentinel.port) as ask:
            ask.execute_command("SENTINEL", "REMOVE", "mymaster")
            ask.execute_command("SENTINEL", "MONITOR", "mymaster", "127.0.0.1", new.port, 1)
        with server_of(old.port) as demoted:
            demoted.replicaof("127.0.0.1", new.port)  # refuses writes from now on
        published_again = {"replies": [0, 1]} if transaction else {"replies": None}
        assert client.post("/publish-and-incr").json == published_again
        with server_of(new.port) as master, server_of(old.port) as demoted:
            stats = master.info("commandstats")
            assert stats.get("cmdstat_publish", {}).get("calls", 0) == (1 if transaction else 0)
            assert demoted.info("commandstats")["cmdstat_publish"]["calls"] == (1 if transaction else 2)
    finally:
        sentinel.stop()


def test_clients_taken_before_close_raise_and_reopen_nothing(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app
    kept = redis_pool.get_client(app)  # the master's, as Flask-Session and RQ keep it
    with app.app_context():
        replica = redis_pool.replica_client
        assert kept.incr("kept-across-close") == 1
        assert replica.ping()
        redis_pool.close(app)
        for client in (kept, replica):
            with pytest.raises(RuntimeError, match=r"was closed on app .* by close\(\)"):
                client.get("kept-across-close")
    servers = [sentinel_service.master, *sentinel_service.replicas, *sentinel_service.sentinels]

    def none_seen() -> bool:
        return not any(our_connections(server_of(server.port), app.import_name) for server in servers)

    wait_until(none_seen, 5, "the servers and sentinels to see every connection closed")


@dataclass
class Writes:
    """Threads that INCR one counter through the app until stopped; what they saw."""

    app: Flask
    acknowledged: int = 0
    failures: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        client = self.app.test_client()
        while not self.stop.is_set():
            response = client.post("/incr/failover-counter")
            with self.lock:
                if response.status_code == 200:
                    self.acknowledged += 1
                else:
                    self.failures.append(time.monotonic())
            time.sleep(0.002)


def survive_a_failover(
    app: Flask, redis_pool: RedisPool, service: SentinelService, cause_failover: Callable[[int], None]
) -> tuple[int, int, float, int]:
    """Keep 4 threads writing while ``cause_failover(master_port)`` runs; return the failed
    requests, the acknowledged ones, the window the failures fall in (seconds), and how
    many acknowledged increments the new master lacks."""
    app.testing = False  # a failed request is a 500, not an exception in the thread
    old_master = service.master_port()
    with server_of(old_master) as master:
        master.delete("failover-counter")
    writes = Writes(app)
    threads = [threading.Thread(target=writes.run, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        # A connection to the old master, checked out across the failover and given back
        # once the pool serves the new one: it must not cost the pool a slot (redis-py
        # before 8.1 lost one for each, redis-py#4187).
        with app.app_context(), redis_pool.connection() as across:
            across.send_command("PING")
            across.read_response()
            wait_until(lambda: writes.acknowledged, 10, "writes before the failover")
            cause_failover(old_master)
            wait_until(
                lambda: service.agreed_master() not in (None, old_master), 30, "the sentinels to agree on a new master"
            )
            wait_until(lambda: not _is_master(old_master), 30, "the old master to step down")
            wait_until(lambda: writes.acknowledged and not _recent(writes, 1.0), 30, "writes to succeed again")
    finally:
        writes.stop.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)

    def follows() -> bool:
        """A write lands on the master the sentinels agree on. (With these short timings a
        failover may take two rounds: a replica promoted in the first serves as master until
        the sentinels reconfigure it, and the app may write there meanwhile.)"""
        try:
            with app.app_context():
                redis_pool.client.set("after-failover", 1)
        except RedisError:
            return False
        agreed = service.agreed_master()
        return (
            agreed not in (None, old_master) and redis_pool.stats(app)["pools"][0]["address"] == f"127.0.0.1:{agreed}"
        )

    wait_until(follows, 30, "the app to write to the master the sentinels agree on")
    new_master = service.master_port()
    stats = redis_pool.stats(app)
    assert stats["in_use"] == 0
    with server_of(new_master) as master:
        counter = int(master.get("failover-counter") or 0)
    # No write ran twice: the counter holds at most every acknowledged INCR plus those that failed.
    assert counter <= writes.acknowledged + len(writes.failures)
    assert_max_connections_reachable(app, redis_pool)
    window = (max(writes.failures) - min(writes.failures)) if writes.failures else 0.0
    return len(writes.failures), writes.acknowledged, window, max(0, writes.acknowledged - counter)


def _is_master(port: int) -> bool:
    """Whether the server on ``port`` runs and serves as a master."""
    try:
        with server_of(port) as server:
            return bool(server.info("replication")["role"] == "master")
    except RedisError:
        return False


def _recent(writes: Writes, seconds: float) -> bool:
    with writes.lock:
        return bool(writes.failures) and writes.failures[-1] > time.monotonic() - seconds


def assert_max_connections_reachable(app: Flask, redis_pool: RedisPool) -> None:
    """``REDIS_MAX_CONNECTIONS`` connections can be held at once, then all go back."""
    limit = redis_pool.settings(app).max_connections
    held = threading.Barrier(limit, timeout=10)

    def hold() -> None:
        with app.app_context(), redis_pool.connection() as connection:
            connection.send_command("PING")
            assert connection.read_response() in (b"PONG", "PONG")
            held.wait()

    run_in_threads(hold, limit, timeout=20)
    assert redis_pool.stats(app)["in_use"] == 0


def test_a_sentinel_failover_under_writes(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService, record_property: Callable[..., None]
) -> None:
    app, redis_pool = sentinel_app

    def failover(master_port: int) -> None:
        with sentinel_service.ask() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", sentinel_service.name)

    failed, acknowledged, window, lost = survive_a_failover(app, redis_pool, sentinel_service, failover)
    figures = {"failed": failed, "acknowledged": acknowledged, "lost": lost, "window_s": round(window, 2)}
    record_property("failover", figures)
    print(f"SENTINEL FAILOVER: {failed} failed, {lost} lost of {failed + acknowledged}, within {window:.2f} s")
    assert window < 10
    sentinel_service.wait_ready(replicas=2)


def test_the_master_killed_under_writes(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService, record_property: Callable[..., None]
) -> None:
    app, redis_pool = sentinel_app
    servers = {server.port: server for server in (sentinel_service.master, *sentinel_service.replicas)}

    def kill(master_port: int) -> None:
        servers[master_port].kill()

    failed, acknowledged, window, lost = survive_a_failover(app, redis_pool, sentinel_service, kill)
    figures = {"failed": failed, "acknowledged": acknowledged, "lost": lost, "window_s": round(window, 2)}
    record_property("killed", figures)
    print(f"master SIGKILL: {failed} failed, {lost} lost of {failed + acknowledged}, within {window:.2f} s")
    assert window < 15
    # Redis answers a write before its replicas have it, so the one write each thread had
    # answered in the master's last instant may die with it; nothing else may be lost.
    assert lost <= 4, figures


def test_the_side_connection_keeps_its_one_slot_after_a_failover(redis_server: RedisServer) -> None:
    """The publisher's and health checks' connection to the master came back from a former
    master: it is disconnected and kept, so the next checkout connects to the new one,
    instead of waiting for a slot that redis-py (before 8.1) would have dropped with it."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    settings = load_settings({"REDIS_URL": url, "REDIS_SOCKET_TIMEOUT": 0.2, "REDIS_RETRIES": 0}, "REDIS", "app")
    connection_class = pool_connection_class(SentinelManagedConnection, ConnectionPolicy(settings))
    sentinel = StubSentinel(redis_server.port)
    client = side_client(settings, connection_class, {"socket_timeout": 5}, ("mymaster", cast(Sentinel, sentinel)))
    pool = cast(SideSentinelPool, client.connection_pool)
    try:
        held = pool.get_connection()
        sentinel.address = ("localhost", redis_server.port)  # the same server, under another name
        pool.get_master_address()  # the pool learns of the new master
        pool.release(held)
        assert client.ping() is True
        (connection,) = pool._get_free_connections()
        assert connection.host == "localhost"
    finally:
        pool.disconnect()
