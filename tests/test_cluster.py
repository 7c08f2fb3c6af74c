"""Redis Cluster behind the same ``RedisPool``, against real servers: 3 masters and 3
replicas made with ``redis-cli --cluster create`` (``redis_cluster``), and clusters of a
test's own (``own_cluster``) for failovers, a killed master and a resharding under
writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from bench.loadgen import ROOT, drive, gunicorn
from flask_redispool import ConfigError, MayHaveRunError, RedisPool
from flask_redispool._cluster import ASYNC_CLUSTER_PUBSUB
from flask_redispool._errors import MayHaveRunTimeoutError
from flask_redispool._stats import group_client_list
from flask_redispool.testing import RedisClusterServers, RedisServer, free_port

from .conftest import (
    PASSWORD,
    gunicorn_workers,
    notes,
    our_connections,
    pools_of,
    run_in_threads,
    wait_until,
)
from .test_retry import SLOW_INCR

pytestmark = pytest.mark.servers


@pytest.fixture
def cluster_app(make_app: Callable[..., Flask], redis_cluster: RedisClusterServers) -> tuple[Flask, RedisPool]:
    return writer_app(make_app, redis_cluster.url, REDIS_STATS_INTERVAL=0)


def node(server: RedisServer) -> Redis:
    return Redis(port=server.port, socket_timeout=5, decode_responses=True)


def ours_per_node(cluster: RedisClusterServers, client_name: str, *, publishers: bool = False) -> dict[int, int]:
    """Per node port, the pooled connections the node sees from ``client_name`` (and those
    of the stats publishers, named ``…:stats``, with ``publishers``)."""
    counts = {}
    for server in cluster.nodes:
        if server.pid is not None:
            with node(server) as client:
                ours = our_connections(client, client_name)
            counts[server.port] = len([c for c in ours if publishers or not c["name"].endswith(":stats")])
    return counts


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("redis+cluster://", {}, "each node must be host"),
        ("redis+cluster://h:x", {}, "each node must be host"),
        ("redis+cluster://h:1,h:70000", {}, "each node must be host"),
        ("redis+cluster://h:1/1", {}, "database 0 only"),
        ("redis+cluster://h:1", {"require_full_coverage": "yes"}, r"\['require_full_coverage'\] must be True or"),
        ("redis+cluster://h:1", {"read_from_replicas": True}, "'load_balancing_strategy': 'round_robin_replicas'"),
        ("redis+cluster://h:1", {"load_balancing_strategy": "nearest"}, "one of 'round_robin', "),
        ("redis+cluster://h:1", {"reinitialize_steps": -1}, r"OPTIONS\['reinitialize_steps'\] must be a whole number"),
        ("redis+cluster://h:1", {"cluster_error_retry_attempts": 3}, "conflicts with REDIS_RETRIES"),
        ("redis+cluster://h:1", {"connection_pool_class": object}, "cannot be set"),
        ("redis+cluster://h:1", {"no_such_option": 1}, "no_such_option"),
        ("redis+cluster://h:1?socket_timeout=1", {}, "conflicts with REDIS_SOCKET_TIMEOUT"),
    ],
)
def test_bad_cluster_urls_and_options_fail_at_init_app(
    make_app: Callable[..., Flask], url: str, options: dict[str, object], message: str
) -> None:
    app = make_app(REDIS_URL=url, REDIS_OPTIONS=options)
    with pytest.raises(ConfigError, match=message):
        RedisPool(app)


def test_init_app_does_no_network_io_and_first_use_names_the_url(make_app: Callable[..., Flask]) -> None:
    url = f"redis+cluster://user:{PASSWORD}@127.0.0.1:{free_port()}"
    app = make_app(REDIS_URL=url, REDIS_SOCKET_CONNECT_TIMEOUT=0.5)
    redis_pool = RedisPool(app)  # nothing listens there: no error yet
    with app.app_context(), pytest.raises(RedisClusterException) as raised:
        redis_pool.cluster_client.ping()
    added = notes(raised.value)
    assert "REDIS_URL (redis+cluster://user:***@127.0.0.1:" in added
    ping = app.test_cli_runner().invoke(args=["redis-ping"])
    assert ping.exit_code == 1
    assert "is unreachable" in ping.output
    assert PASSWORD not in str(raised.value) + added + repr(redis_pool.settings(app)) + ping.output


def test_each_topology_points_at_its_own_client(
    cluster_app: tuple[Flask, RedisPool], make_app: Callable[..., Flask], redis_url: str
) -> None:
    app, redis_pool = cluster_app
    with app.app_context():
        assert isinstance(redis_pool.cluster_client, RedisCluster)
        for use in (
            lambda: redis_pool.client.get("k"),
            lambda: redis_pool.replica_client.get("k"),
            lambda: redis_pool.pipeline().__enter__(),
        ):
            with pytest.raises(RuntimeError, match=r"is a Redis Cluster .* use redis_pool.cluster_client"):
                use()
    with pytest.raises(RuntimeError, match="one pool per node"):
        redis_pool.get_pool(app)
    single = make_app(REDIS_URL=redis_url)
    other = RedisPool(single)
    with single.app_context(), pytest.raises(RuntimeError, match=r"use redis_pool\.client"):
        other.cluster_client.ping()


def test_async_views_use_a_cluster_client_per_loop(
    redis_cluster: RedisClusterServers, make_app: Callable[..., Flask]
) -> None:
    with RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port) as probe:
        burst_port = probe.get_node_from_key("async-burst").port
    # The only seed is the node the burst hits: the connection that asks it for the slots
    # must not come on top of the 4 the burst may hold there.
    app, redis_pool = writer_app(make_app, f"redis+cluster://127.0.0.1:{burst_port}", REDIS_STATS_INTERVAL=0)
    app.testing = True

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        client = redis_pool.async_cluster_client
        spread = [await client.set(f"async-spread:{i}", i) for i in range(12)]
        async with client.pipeline() as pipe:
            for i in range(6):
                pipe.incr(f"async-piped:{i}")
            piped = await pipe.execute()
        burst = await asyncio.gather(*(client.incr("async-burst") for _ in range(20)))  # 20 at once, 4 at most
        if ASYNC_CLUSTER_PUBSUB:
            pubsub = client.pubsub()  # left open: teardown closes it
            await pubsub.subscribe("async-news")
        else:  # redis-py 7
            with pytest.raises(NotImplementedError, match=r"install redis>=8, or use redis_pool.cluster_client"):
                client.pubsub()
        return {"spread": all(spread), "piped": piped, "burst": max(burst)}

    with (
        app.test_request_context(),
        pytest.raises(RuntimeError, match=r"async_client does not serve REDIS_URL .* use async_cluster_client"),
    ):
        asyncio.run(_use(lambda: redis_pool.async_client))
    assert app.test_client().get("/async").json == {"spread": True, "piped": [1] * 6, "burst": 20}
    stats = redis_pool.stats(app)
    assert (stats["async_pools"], stats["async_in_use"]) == (1, 0)
    assert stats["async_waits"] > 0
    assert stats["async_timeouts"] == 0
    per_node = ours_per_node(redis_cluster, app.import_name)
    assert per_node[burst_port] == 4  # per node and loop: reached, not passed
    for server in redis_cluster.nodes:
        with node(server) as client:
            assert not [c for c in our_connections(client, app.import_name) if int(c["sub"])]  # pubsub closed
    single = make_app(REDIS_URL=f"redis://127.0.0.1:{redis_cluster.nodes[0].port}/0")
    other = RedisPool(single)
    with single.test_request_context(), pytest.raises(RuntimeError, match="use async_client"):
        asyncio.run(_use(lambda: other.async_cluster_client))


async def _use(accessor: Callable[[], object]) -> object:
    return accessor()


@pytest.mark.parametrize("transaction", [None, False, True])
def test_async_writes_that_time_out_run_once_and_close_leaves_nothing(
    slow_app: tuple[Flask, RedisPool], redis_cluster: RedisClusterServers, transaction: bool | None
) -> None:
    app, redis_pool = slow_app
    app.testing = True

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        client = redis_pool.async_cluster_client
        await client.delete("{aslow}counter", "{aslow}script")
        try:
            if transaction is None:
                await client.eval(SLOW_INCR, 1, "{aslow}script")
            else:
                async with client.pipeline(transaction=transaction) as pipe:
                    pipe.incr("{aslow}counter")
                    pipe.execute_command("EVAL", SLOW_INCR, 1, "{aslow}script")
                    await pipe.execute()
        except MayHaveRunError as exc:
            return {"error": type(exc).__name__}
        return {"error": "none"}

    assert app.test_client().get("/slow").json == {"error": "MayHaveRunTimeoutError"}
    settle(redis_cluster)
    assert settled_value(redis_pool, app, "{aslow}script") == "1"
    assert settled_value(redis_pool, app, "{aslow}counter") in (None, "1")
    redis_pool.close(app)  # after a timeout too, when redis-py's own aclose() closes nothing
    wait_until(
        lambda: sum(ours_per_node(redis_cluster, app.import_name, publishers=True).values()) == 0,
        5,
        "every connection to close",
    )


def test_redis_ping_and_stats_on_a_cluster(cluster_app: tuple[Flask, RedisPool]) -> None:
    app, _ = cluster_app
    app.test_client().post("/set/pinged/1")
    runner = app.test_cli_runner()
    ping = runner.invoke(args=["redis-ping"])
    assert ping.exit_code == 0, ping.output
    assert " PONG in " in ping.output
    stats = runner.invoke(args=["redis-stats"])
    assert stats.exit_code == 0, stats.output
    assert "127.0.0.1:" in stats.output  # a line per node


def test_keys_spread_over_every_master_and_stats_list_every_node(
    cluster_app: tuple[Flask, RedisPool], redis_cluster: RedisClusterServers
) -> None:
    app, redis_pool = cluster_app
    client = app.test_client()
    for i in range(60):
        assert client.post(f"/set/spread:{i}/{i}").json == {"ok": True}
    masters = redis_cluster.masters()
    for master in masters:
        with node(master) as server:
            assert server.dbsize() > 0
    stats = redis_pool.stats(app)
    nodes = {pool["address"]: pool for pool in stats["pools"]}
    assert set(nodes) == {f"127.0.0.1:{server.port}" for server in redis_cluster.nodes}  # one pool per node
    assert {nodes[f"127.0.0.1:{m.port}"]["role"] for m in masters} == {"primary"}
    assert sorted(pool["role"] for pool in nodes.values()) == ["primary"] * 3 + ["replica"] * 3
    assert all(nodes[f"127.0.0.1:{m.port}"]["created"] == 1 for m in masters)  # one thread: one each
    assert (stats["in_use"], stats["max_connections"], stats["checkouts"]) == (
        0,
        4 * 6,
        sum(pool["checkouts"] for pool in nodes.values()),
    )
    assert ours_per_node(redis_cluster, app.import_name) == {
        server.port: int(server in masters) for server in redis_cluster.nodes
    }


def test_pipelines_pubsub_and_teardown(cluster_app: tuple[Flask, RedisPool]) -> None:
    app, redis_pool = cluster_app

    @app.get("/pipeline")
    def pipeline() -> dict[str, list[int]]:
        with redis_pool.cluster_client.pipeline() as pipe:
            for i in range(10):
                pipe.incr(f"piped:{i}")  # over every master
            return {"values": pipe.execute()}

    @app.get("/subscribe")
    def subscribe() -> dict[str, int]:
        pubsub = redis_pool.cluster_client.pubsub()  # never closed: teardown gives it back
        pubsub.subscribe("news")
        message = pubsub.get_message(timeout=2)
        assert message is not None
        return {"in_use": redis_pool.stats()["in_use"]}

    client = app.test_client()
    assert client.get("/pipeline").json == {"values": [1] * 10}
    assert client.get("/subscribe").json == {"in_use": 1}
    assert redis_pool.stats(app)["in_use"] == 0


def test_max_connections_hold_per_node_under_threads_without_topology_refreshes(
    make_app: Callable[..., Flask], redis_cluster: RedisClusterServers
) -> None:
    app = make_app(REDIS_URL=redis_cluster.url, REDIS_MAX_CONNECTIONS=2, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    with app.app_context():
        redis_pool.cluster_client.ping()  # made, slots known
    refreshes = cluster_slots_calls(redis_cluster)
    stop = threading.Event()
    most: dict[int, int] = {}
    all_started = threading.Barrier(20, timeout=10)  # twenty threads at once for two connections per node

    def sample_once() -> None:
        for port, count in ours_per_node(redis_cluster, app.import_name).items():
            most[port] = max(most.get(port, 0), count)

    def sample() -> None:
        while not stop.is_set():
            sample_once()

    def work() -> None:
        all_started.wait()
        with app.app_context():
            for i in range(100):
                redis_pool.cluster_client.incr(f"busy:{i % 12}")

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run_in_threads(work, 20)
    finally:
        stop.set()
        sampler.join(10)
    sample_once()  # the pools keep what they made: the last ones made are seen too
    stats = redis_pool.stats(app)
    assert max(most.values()) == 2  # reached, never passed, on every node
    assert all(pool["created"] <= 2 for pool in stats["pools"])
    assert stats["waits"] > 0
    assert (stats["timeouts"], stats["in_use"]) == (0, 0)
    assert cluster_slots_calls(redis_cluster) == refreshes  # a full pool is no reason to ask for the slots


def cluster_slots_calls(cluster: RedisClusterServers) -> int:
    calls = 0
    for server in cluster.nodes:
        if server.pid is not None:
            with node(server) as client:
                stats = client.info("commandstats")
            calls += int(stats.get("cmdstat_cluster|slots", stats.get("cmdstat_cluster", {})).get("calls", 0))
    return calls


@pytest.fixture
def slow_app(make_app: Callable[..., Flask], redis_cluster: RedisClusterServers) -> tuple[Flask, RedisPool]:
    app = make_app(REDIS_URL=redis_cluster.url, REDIS_SOCKET_TIMEOUT=0.3, REDIS_RETRIES=3, REDIS_STATS_INTERVAL=0)
    return app, RedisPool(app)


def settle(cluster: RedisClusterServers) -> None:
    """Wait until every master has finished the slow script (it answers again)."""
    for server in cluster.masters():
        with node(server) as client:
            client.ping()


def settled_value(redis_pool: RedisPool, app: Flask, key: str) -> str | None:
    """``key``, read after :func:`settle`."""
    with app.app_context():
        value = redis_pool.cluster_client.get(key)
    return value.decode() if isinstance(value, bytes) else value


def test_a_write_that_times_out_runs_once(
    slow_app: tuple[Flask, RedisPool], redis_cluster: RedisClusterServers
) -> None:
    app, redis_pool = slow_app
    with app.app_context():
        redis_pool.cluster_client.delete("slow-counter")
        with pytest.raises(MayHaveRunTimeoutError) as raised:
            redis_pool.cluster_client.eval(SLOW_INCR, 1, "slow-counter")
    assert "not retried: it may already have run" in notes(raised.value)
    settle(redis_cluster)
    assert settled_value(redis_pool, app, "slow-counter") == "1"  # RedisCluster's retry alone: 4


@pytest.mark.parametrize("transaction", [False, True])
def test_a_pipeline_that_times_out_sends_no_write_again(
    slow_app: tuple[Flask, RedisPool], redis_cluster: RedisClusterServers, transaction: bool
) -> None:
    app, redis_pool = slow_app
    with app.app_context():
        redis_pool.cluster_client.delete("{piped}counter", "{piped}slow")
        with redis_pool.cluster_client.pipeline(transaction=transaction) as pipe:
            pipe.incr("{piped}counter")  # answered at once, then the script's answer times out
            pipe.execute_command("EVAL", SLOW_INCR, 1, "{piped}slow")
            with pytest.raises(MayHaveRunError):
                pipe.execute()
    settle(redis_cluster)
    # redis-py alone sends the commands of a node whose connection failed again, one by one,
    # then the whole batch, up to RETRIES times.
    assert settled_value(redis_pool, app, "{piped}counter") == "1"
    assert settled_value(redis_pool, app, "{piped}slow") == "1"
    assert redis_pool.stats(app)["in_use"] == 0


def test_redis_stats_lists_each_gunicorn_worker_on_each_node(redis_cluster: RedisClusterServers) -> None:
    env = {"FLASK_REDIS_STATS_INTERVAL": "0.3", "FLASK_REDIS_MAX_CONNECTIONS": "4"}
    with gunicorn("tests.cluster_app:create_app()", redis_url=redis_cluster.url, workers=2, threads=4, env=env) as (
        port,
        master,
    ):
        workers = gunicorn_workers(master, 2)

        def every_worker_on_every_master() -> bool:
            drive(port, "/hits", concurrency=8, total=60, deadline=10, keepalive=False)
            for server in redis_cluster.masters():
                with node(server) as client:
                    if not workers <= {row["pid"] for row in group_client_list(client.client_list(), "cluster_app")}:
                        return False
            return True

        wait_until(every_worker_on_every_master, 60, "each worker to use every master")
        load_ended = time.time()

        def report_since_load() -> dict[str, Any] | None:
            """What ``flask redis-stats`` reports, once each worker's snapshot in it was
            taken after the load (ages are rounded to 0.1 s)."""
            asked = time.time()
            command = [sys.executable, "-m", "flask", "--app", "tests.cluster_app:create_app", "redis-stats", "--json"]
            cli = subprocess.run(
                command, capture_output=True, text=True, timeout=60, cwd=ROOT,
                env={**os.environ, **env, "REDIS_URL": redis_cluster.url},
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            (report,) = json.loads(cli.stdout)["pools"]
            ages = {row["pid"]: row["snapshot_age"] for row in report["processes"]}
            fresh = all((age := ages.get(pid)) is not None and asked - age > load_ended + 0.1 for pid in workers)
            return report if fresh else None

        report = wait_until(report_since_load, 30, "a report with a snapshot of each worker taken after the load")
    rows = {row["pid"]: row for row in report["processes"] if row["pid"] in workers}
    assert set(rows) == workers
    masters = {f"127.0.0.1:{server.port}" for server in redis_cluster.masters()}
    for row in rows.values():
        nodes = {pool["address"]: pool for pool in row["pools"]}
        assert masters <= set(nodes)  # per node, each worker
        assert all(nodes[address]["created"] >= 1 for address in masters)
        # CLIENT LIST of every node; idle counts only connections open to a server, not the
        # one that asked a seed for the slots, which the cluster client closes afterwards.
        assert len(masters) <= row["server_connections"] == row["in_use"] + row["idle"]
        assert row["suspect"] is None


@dataclass
class Writes:
    """Threads that each SET keys of their own through the app until stopped: which were
    acknowledged, and when requests failed."""

    app: Flask
    acknowledged: dict[str, str] = field(default_factory=dict)
    failures: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, name: str) -> None:
        client = self.app.test_client()
        n = 0
        while not self.stop.is_set():
            key, n = f"w:{name}:{n}", n + 1
            response = client.post(f"/set/{key}/{n}")
            with self.lock:
                if response.status_code == 200:
                    self.acknowledged[key] = str(n)
                else:
                    self.failures.append(time.monotonic())
            time.sleep(0.002)

    def recent_failure(self, seconds: float) -> bool:
        with self.lock:
            return bool(self.failures) and self.failures[-1] > time.monotonic() - seconds

    @property
    def window(self) -> float:
        return (max(self.failures) - min(self.failures)) if self.failures else 0.0


@dataclass
class Outcome:
    failed: int
    acknowledged: int
    window: float
    lost: int

    def __str__(self) -> str:
        return (
            f"{self.failed} failed of {self.failed + self.acknowledged} within {self.window:.2f} s, "
            f"{self.lost} acknowledged writes lost"
        )


def under_writes(
    app: Flask, redis_pool: RedisPool, cluster: RedisClusterServers, disrupt: Callable[[], None]
) -> Outcome:
    """Keep 4 threads writing while ``disrupt()`` runs, until the cluster is healthy and
    writes succeed again; then read every acknowledged key back."""
    app.testing = False  # a failed request is a 500, not an exception in the thread
    writes = Writes(app)
    threads = [threading.Thread(target=writes.run, args=(str(i),), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: writes.acknowledged, 10, "writes before the disruption")
        disrupt()
        cluster.wait_healthy(30)
        wait_until(lambda: writes.acknowledged and not writes.recent_failure(1.0), 30, "writes to succeed again")
    finally:
        writes.stop.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    with app.app_context():
        client = redis_pool.cluster_client
        assert client.set("after-disruption", 1)  # the app follows the new layout
        values = client.mget_nonatomic(list(writes.acknowledged))
    lost = sum(value != expected.encode() for value, expected in zip(values, writes.acknowledged.values(), strict=True))
    assert_every_node_pool_whole(app, redis_pool)
    return Outcome(len(writes.failures), len(writes.acknowledged), writes.window, lost)


def assert_every_node_pool_whole(app: Flask, redis_pool: RedisPool) -> None:
    """Nothing is held, and each live node's pool can still lend ``MAX_CONNECTIONS`` at once."""
    assert redis_pool.stats(app)["in_use"] == 0
    with app.app_context():
        live = {node.name for node in redis_pool.cluster_client.get_nodes()}
    for pool in pools_of(app).pools:
        if pool.address in live:
            held = [pool.get_connection() for _ in range(pool.max_connections)]
            for connection in held:
                pool.release(connection)


def hand_a_master_to_its_replica(cluster: RedisClusterServers) -> None:
    replica = cluster.replica_of(cluster.masters()[0])
    with node(replica) as server:
        server.execute_command("CLUSTER", "FAILOVER")
    wait_until(lambda: replica in cluster.masters(), 30, "the replica to take over")


def kill_a_master(cluster: RedisClusterServers) -> None:
    victim = cluster.masters()[0]
    replica = cluster.replica_of(victim)
    victim.kill()
    wait_until(lambda: replica in cluster.masters(), 30, "the replica to take over")


def move_300_slots(cluster: RedisClusterServers) -> None:
    source, target = cluster.masters()[:2]
    ids = {}
    for server in (source, target):
        with node(server) as client:
            ids[server.port] = client.execute_command("CLUSTER", "MYID")
    move = ["--cluster-from", ids[source.port], "--cluster-to", ids[target.port], "--cluster-slots", "300"]
    command = [cluster.redis_cli(), "--cluster", "reshard", f"127.0.0.1:{source.port}", *move, "--cluster-yes"]
    subprocess.run(command, capture_output=True, check=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("disrupt", "may_lose"),
    [
        (hand_a_master_to_its_replica, False),  # CLUSTER FAILOVER waits for the replica to catch up
        (kill_a_master, True),  # writes it acknowledged but had not passed on are lost with it
        (move_300_slots, False),
    ],
    ids=["CLUSTER FAILOVER", "master SIGKILL", "resharding 300 slots"],
)
def test_writes_through_a_disruption(
    make_app: Callable[..., Flask],
    own_cluster: RedisClusterServers,
    record_property: Callable[..., None],
    request: pytest.FixtureRequest,
    disrupt: Callable[[RedisClusterServers], None],
    may_lose: bool,
) -> None:
    app, redis_pool = writer_app(
        make_app, own_cluster.url, REDIS_SOCKET_TIMEOUT=1, REDIS_SOCKET_CONNECT_TIMEOUT=0.5, REDIS_STATS_INTERVAL=0
    )
    outcome = under_writes(app, redis_pool, own_cluster, lambda: disrupt(own_cluster))
    name = request.node.callspec.id
    record_property(name, str(outcome))
    print(f"{name}: {outcome}")
    assert outcome.window < 15
    if not may_lose:
        assert outcome.lost == 0


def writer_app(make_app: Callable[..., Flask], url: str, **config: object) -> tuple[Flask, RedisPool]:
    """An app on the cluster at ``url`` whose ``POST /set/<key>/<value>`` writes a key."""
    app = make_app(REDIS_URL=url, REDIS_MAX_CONNECTIONS=4, **config)
    redis_pool = RedisPool(app)

    @app.post("/set/<key>/<value>")
    def set_key(key: str, value: str) -> dict[str, bool]:
        return {"ok": bool(redis_pool.cluster_client.set(key, value))}

    return app, redis_pool


def test_close_closes_every_node_pool_and_the_publishers_connections(
    cluster_app: tuple[Flask, RedisPool], redis_cluster: RedisClusterServers
) -> None:
    app, redis_pool = cluster_app
    for i in range(12):
        app.test_client().post(f"/set/closing:{i}/1")
    assert redis_pool.health(app)["ok"]  # on the publisher's connections, one per node it asked
    assert sum(ours_per_node(redis_cluster, app.import_name).values()) == 3
    assert sum(ours_per_node(redis_cluster, app.import_name, publishers=True).values()) > 3
    redis_pool.close(app)
    wait_until(
        lambda: sum(ours_per_node(redis_cluster, app.import_name, publishers=True).values()) == 0,
        5,
        "the nodes to see them close",
    )


def test_a_cluster_client_taken_before_close_raises_and_reopens_nothing(
    cluster_app: tuple[Flask, RedisPool], redis_cluster: RedisClusterServers
) -> None:
    app, redis_pool = cluster_app
    with app.app_context():
        kept = redis_pool.cluster_client  # what a running request holds
        for i in range(12):
            kept.set(f"kept:{i}", 1)
        redis_pool.close(app)
        for i in range(12):  # every node's pool
            with pytest.raises(RuntimeError, match=r"was closed on app .* by close\(\)"):
                kept.get(f"kept:{i}")

    def none_seen() -> bool:
        return not any(ours_per_node(redis_cluster, app.import_name, publishers=True).values())

    wait_until(none_seen, 5, "the nodes to see every connection closed")
