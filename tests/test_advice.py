"""The sizing advisor: its arithmetic on given figures, then ``flask redis-stats --advise``
against real servers and real gunicorn workers whose right answer is known."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from flask import Flask
from redis import Redis

from bench.loadgen import drive, gunicorn
from example_app import redis_pool as example_pool
from flask_redispool import PoolAdvice, PublishedStats, RedisPool
from flask_redispool._advice import (
    ServerClients,
    Thresholds,
    Verdict,
    advise,
    format_advice,
    pool_advice,
    server_clients,
)
from flask_redispool._snapshots import read_snapshots, snapshot_key
from flask_redispool._stats import HOST
from flask_redispool.testing import RedisClusterServers

from .conftest import PASSWORD, SentinelService, Worker, gunicorn_workers, load_every_worker, pools_of, wait_until
from .test_restricted import ACLServer, acl_server  # noqa: F401  (the fixture: a server of the test's own)

NOW = 1_000_000.0
HOURS = 3600.0


def snapshot(
    pid: int = 1,
    *,
    peak: int = 3,
    limit: int = 10,
    checkouts: int = 5000,
    waits: int = 0,
    timeouts: int = 0,
    seconds: float = 2 * HOURS,
    threads: int = 5,
    async_pools: int = 0,
) -> PublishedStats:
    """One worker's published snapshot, of one pool, counting for ``seconds``."""
    pool = {
        "role": "primary", "address": "a:1", "max_connections": limit, "in_use": 0, "idle": peak, "created": peak,
        "checkouts": checkouts, "waits": waits, "timeouts": timeouts,
    }  # fmt: skip
    counts = {name: pool[name] for name in ("max_connections", "in_use", "idle", "created", "checkouts", "waits")}
    stats = {
        **counts, "timeouts": timeouts, "peak_in_use": peak, "prefix": "REDIS", "url": "redis://a:1/0",
        "blocking": True, "pool_timeout": 1.0, "socket_timeout": 5.0, "retries": 1, "worst_case_seconds": 12.0,
        "pid": pid, "host": "web", "client_name": "shop", "naming_refused": None, "async_pools": async_pools,
        "async_in_use": 0, "async_checkouts": 0, "async_waits": 0, "async_timeouts": 0, "pools": [pool],
        "published_at": NOW - 1, "interval": 10.0, "started_at": NOW - seconds if seconds else 0.0, "threads": threads,
    }  # fmt: skip
    return cast(PublishedStats, stats)


def server(maxclients: int | None = 10000, address: str = "a:1") -> ServerClients:
    return ServerClients(address=address, maxclients=maxclients, connected_clients=12)


def verdict(snapshots: list[PublishedStats], servers: list[ServerClients] | None = None) -> Verdict:
    return advise(snapshots, [server()] if servers is None else servers, max_connections=10, now=NOW)


def test_a_pool_far_above_its_peak_is_lowered_to_the_peak_and_a_quarter() -> None:
    assert verdict([snapshot(1, peak=3), snapshot(2, peak=2)]) == Verdict(
        "lower",
        4,
        ["peak 3 of 10 over 2 h (2 workers, 10000 checkouts), no waits: 4 would do "
         "(the peak and a quarter, at least one more)"],
    )  # fmt: skip
    assert verdict([snapshot(peak=40, limit=100, seconds=HOURS + 300)]).recommended == 50  # a quarter above 40
    assert verdict([snapshot(peak=0)]).recommended == 1


def test_a_pool_near_its_peak_is_kept() -> None:
    assert verdict([snapshot(peak=9)]) == Verdict(
        "keep", 10, ["peak 9 of 10 over 2 h (1 worker, 5000 checkouts), no waits: 10 is about right, keep it"]
    )


def test_waits_raise_the_limit_to_the_threads_alive_however_short_the_watch() -> None:
    seen = [snapshot(1, peak=2, limit=2, waits=30, seconds=20, checkouts=50, threads=6), snapshot(2, limit=2, waits=5)]
    assert verdict(seen) == Verdict(
        "raise",
        6,
        ["peak 3 of 2, 35 wait(s) and 0 timeout(s) in 5050 checkouts: raise to 6, the most threads alive in one "
         "worker (each may hold a connection)"],
    )  # fmt: skip


def test_timeouts_with_fewer_threads_than_connections_raise_by_half() -> None:
    assert verdict([snapshot(peak=10, timeouts=3, threads=8)]) == Verdict(
        "raise",
        15,
        ["peak 10 of 10, 0 wait(s) and 3 timeout(s) in 5000 checkouts, with no more threads than connections: "
         "some hold more than one; raise by half, to 15"],
    )  # fmt: skip


def nine_workers(**figures: Any) -> list[PublishedStats]:
    return [snapshot(pid, **figures) for pid in range(1, 10)]


def test_limits_that_leave_too_little_of_maxclients_are_lowered_or_maxclients_raised() -> None:
    """The issue's example: 9 workers of 10 on a server that takes 100 clients."""
    over = (
        "9 workers x 10 = 90 of maxclients 100 on a:1 leaves 10 for deploys and other clients, less than 25%: "
        "lower to 8 or raise maxclients to 120"
    )
    assert verdict(nine_workers(peak=9), [server(100)]) == Verdict(
        "lower",
        8,
        ["peak 9 of 10 over 2 h (9 workers, 45000 checkouts), no waits: 10 is about right, keep it", over],
        120,
    )
    # However little was watched: that arithmetic needs no peak.
    short = verdict(nine_workers(peak=9, seconds=60, checkouts=10), [server(100)])
    assert (short.advice, short.recommended, short.reasons[-1], short.maxclients_needed) == ("lower", 8, over, 120)


def test_a_raise_is_bounded_by_the_tightest_servers_maxclients() -> None:
    waiting = nine_workers(peak=8, limit=8, waits=1, threads=20)
    bound = "9 workers x 20 = 180 would leave less than 25% of maxclients {} free on b:2"
    raised = verdict(waiting, [server(10000), server(200, "b:2")])  # b:2 takes 16 each with a quarter free
    assert (raised.advice, raised.recommended, raised.maxclients_needed) == ("raise", 16, 240)
    assert raised.reasons[1] == bound.format(200) + ": raise to 16 only, or raise maxclients to 240"
    stuck = verdict(waiting, [server(10000), server(100, "b:2")])  # b:2 takes 8 each: no more than now
    assert (stuck.advice, stuck.recommended, stuck.maxclients_needed) == ("raise", 20, 240)
    assert stuck.reasons[1] == bound.format(100) + ": raise maxclients to 240 first"


def test_too_little_seen_says_what_is_missing() -> None:
    assert verdict([]) == Verdict("too little", None, ["no serving process has published stats yet: nothing to judge"])
    assert verdict([snapshot(seconds=30, checkouts=12)]) == Verdict(
        "too little",
        None,
        ["watched for 30 s, less than 10 min: too short to know the peak",
         "12 checkouts, fewer than 1000: too few to know the peak"],
    )  # fmt: skip
    # A snapshot from before the counting start was published: no watch to speak of.
    assert verdict([snapshot(seconds=0)]).reasons == ["watched for 0 s, less than 10 min: too short to know the peak"]
    enough = advise([snapshot(seconds=30, checkouts=12)], [server()], max_connections=10, now=NOW,
                    thresholds=Thresholds(min_window=30, min_checkouts=12))  # fmt: skip
    assert (enough.advice, enough.recommended) == ("lower", 4)


def test_event_loops_pools_count_no_peak_so_they_are_kept() -> None:
    kept = verdict([snapshot(peak=1, async_pools=2)])
    assert (kept.advice, kept.recommended) == ("keep", 10)
    assert kept.reasons[0].endswith("no waits; the event loops' own pools count no peak: keep 10")


def test_server_clients_reads_info_clients_of_each_node() -> None:
    infos: dict[str, dict[str, Any]] = {
        "b:2": {"maxclients": 100, "connected_clients": 7},
        "a:1": {"connected_clients": "3"},
    }
    assert server_clients(infos) == [
        {"address": "a:1", "maxclients": None, "connected_clients": 3},
        {"address": "b:2", "maxclients": 100, "connected_clients": 7},
    ]
    assert verdict([snapshot(peak=9)], server_clients(infos)).recommended == 10  # a:1 says no limit


def test_format_shows_the_figures_then_the_advice_with_its_arithmetic() -> None:
    advice = PoolAdvice(
        prefix="REDIS", url="redis://:***@a:1/0", client_name="shop", setting="REDIS_MAX_CONNECTIONS",
        max_connections=10, workers=2, threads=6, observed_seconds=7500.0, checkouts=10000, peak_in_use=3, waits=0,
        timeouts=0, async_pools=0, servers=[server()], advice="lower", recommended=4, maxclients_needed=None,
        reasons=["peak 3 of 10 ..."], snapshots_error=None, server_error=None,
    )  # fmt: skip
    assert format_advice(advice) == [
        "REDIS  redis://:***@a:1/0  client name 'shop'",
        "  REDIS_MAX_CONNECTIONS=10  workers=2  threads=6  watched=2 h 5 min  checkouts=10000",
        "  peak_in_use=3  waits=0  timeouts=0",
        "  server a:1  maxclients=10000  connected_clients=12",
        "  advice: lower REDIS_MAX_CONNECTIONS to 4",
        "    peak 3 of 10 ...",
    ]


CLI_PAGE = Path(__file__).resolve().parent.parent / "docs" / "cli.rst"


def test_the_docs_samples_are_what_the_advisor_prints(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL="redis://:hunter2@10.0.0.5:6379/0", REDIS_CLIENT_NAME="shop")
    settings = RedisPool(app).settings(app)  # no I/O

    def sample(snapshots: list[PublishedStats], maxclients: int, connected: int) -> str:
        servers = [ServerClients(address="10.0.0.5:6379", maxclients=maxclients, connected_clients=connected)]
        advice = pool_advice(settings, snapshots, servers, now=NOW)
        return "\n".join(f"    {line}" for line in format_advice(advice)) + "\n"

    page = CLI_PAGE.read_text()
    nine = [snapshot(pid, peak=9, checkouts=45_800, seconds=2 * HOURS + 300, threads=9) for pid in range(1, 10)]
    assert sample(nine, 100, 91) in page
    two = [
        snapshot(pid, peak=1, limit=1, checkouts=100, waits=waits, seconds=seconds, threads=5)
        for pid, waits, seconds in ((1, 83, 12), (2, 78, 11))
    ]
    assert sample(two, 10000, 5) in page
    brief = pool_advice(settings, [snapshot(seconds=30, checkouts=12)], [], now=NOW)
    assert "\n".join(f"    {line}" for line in format_advice(brief)[-3:]) + "\n" in page


# Against real servers and processes.


def test_a_snapshot_says_since_when_its_process_counts_and_its_threads(
    app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    """What the advisor needs besides the counters; an older release's snapshot reads them as 0."""
    with app.app_context():
        redis_pool.client.ping()  # the first connection starts the publisher's thread
    publisher = pools_of(app).publisher
    assert publisher.publish()  # from this thread: the publisher's own is not counted
    threads = threading.active_count() - 1
    published = json.loads(server.get(publisher.key) or "{}")
    assert 0 < published["started_at"] <= published["published_at"] < published["started_at"] + 60
    assert published["threads"] == threads
    older = {name: value for name, value in published.items() if name not in ("started_at", "threads")}
    server.set(snapshot_key(redis_pool.settings(app), HOST, 4242), json.dumps({**older, "pid": 4242}))
    read = {stats["pid"]: stats for stats in read_snapshots(server, redis_pool.settings(app))[0]}
    assert (read[4242]["started_at"], read[4242]["threads"]) == (0.0, 0)
    assert read[os.getpid()]["started_at"] == published["started_at"]


def test_every_node_of_a_cluster_is_weighed(make_app: Callable[..., Flask], redis_cluster: RedisClusterServers) -> None:
    """One node that takes few clients binds: the limit must fit there too."""
    app = make_app(REDIS_URL=redis_cluster.url, REDIS_STATS_INTERVAL=60, REDIS_MAX_CONNECTIONS=20)
    redis_pool = RedisPool(app)
    with app.app_context():
        for i in range(20):
            redis_pool.cluster_client.set(f"advice:{i}", i)  # a connection to every master
    assert pools_of(app).publisher.publish()
    tight = redis_cluster.nodes[-1]
    with Redis(port=tight.port, socket_timeout=5) as node:
        node.config_set("maxclients", 24)  # room for the cluster's own links (counted from Redis 6.2)
        try:
            advice = redis_pool.advice(app)
        finally:
            node.config_set("maxclients", 10000)
    assert advice["server_error"] is advice["snapshots_error"] is None
    addresses = [f"127.0.0.1:{server.port}" for server in redis_cluster.nodes]
    assert sorted(server["address"] for server in advice["servers"]) == sorted(addresses)
    assert {server["address"]: server["maxclients"] for server in advice["servers"]}[addresses[-1]] == 24
    assert (advice["workers"], advice["peak_in_use"], advice["max_connections"]) == (1, 1, 20)
    assert (advice["advice"], advice["recommended"], advice["maxclients_needed"]) == ("lower", 18, 27)
    assert advice["reasons"][-1] == (
        f"1 worker x 20 = 20 of maxclients 24 on {addresses[-1]} leaves 4 for deploys and other clients, "
        "less than 25%: lower to 18 or raise maxclients to 27"
    )


def test_advise_reads_each_worker_and_the_server_and_hides_the_password(
    make_app: Callable[..., Flask], auth_server: Any, start_worker: Callable[..., Worker]
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{auth_server.port}/0"
    app = make_app(REDIS_URL=url, REDIS_CLIENT_NAME="advised")
    RedisPool(app)
    result = app.test_cli_runner().invoke(args=["redis-stats", "--advise"])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    lines = result.output.splitlines()
    assert lines[0] == f"REDIS  redis://:***@127.0.0.1:{auth_server.port}/0  client name 'advised'"
    assert lines[-2:] == [
        "  advice: too little seen to advise",
        "    no serving process has published stats yet: nothing to judge",
    ]


def test_advise_says_what_an_acl_hides_and_fails_when_it_hides_everything(
    make_app: Callable[..., Flask],
    acl_server: ACLServer,  # noqa: F811
) -> None:
    def advise_as(*rules: str) -> tuple[int, str]:
        app = make_app(REDIS_URL=acl_server.user("app", *rules))
        RedisPool(app)
        result = app.test_cli_runner().invoke(args=["redis-stats", "--advise"])
        return result.exit_code, result.output

    code, output = advise_as("-info")
    assert code == 0, output
    assert "  INFO clients unavailable: NoPermissionError: this user has no permissions" in output
    assert "  advice: too little seen to advise" in output
    code, output = advise_as("-info", "-scan")
    assert code == 1
    assert "showed neither the published snapshots (NoPermissionError: this user has no permissions" in output
    assert PASSWORD not in output


def test_advise_json_on_a_publishing_worker(
    make_app: Callable[..., Flask], redis_url: str, server: Redis, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker("advised", held=2, interval=0.2)  # its pool's peak: 2, in 2 checkouts
    app = make_app(REDIS_URL=redis_url, REDIS_CLIENT_NAME="advised")
    RedisPool(app)
    runner = app.test_cli_runner()

    def advised(*args: str) -> dict[str, Any]:
        result = runner.invoke(args=["redis-stats", "--advise", "--json", *args])
        assert result.exit_code == 0, result.output
        (advice,) = json.loads(result.output)["pools"]
        return advice  # type: ignore[no-any-return]

    wait_until(lambda: advised()["workers"] == 1, 10, f"a snapshot of {worker.pid}")
    advice = advised()
    info = server.info("clients")
    assert advice["servers"] == [
        {"address": f"127.0.0.1:{server.connection_pool.connection_kwargs['port']}",
         "maxclients": info["maxclients"], "connected_clients": advice["servers"][0]["connected_clients"]}
    ]  # fmt: skip
    assert advice["servers"][0]["connected_clients"] >= 3  # the worker's 2, its publisher's, ours
    assert (advice["peak_in_use"], advice["checkouts"], advice["max_connections"]) == (2, 2, 10)
    assert advice["threads"] == 1  # its main thread (its publisher's is not counted)
    assert (advice["advice"], advice["recommended"]) == ("too little", None)
    lowered = advised("--min-window", "0", "--min-checkouts", "2")
    assert (lowered["advice"], lowered["recommended"]) == ("lower", 3)


def test_a_sentinel_services_master_and_replicas_are_weighed(
    make_app: Callable[..., Flask], sentinel_service: SentinelService
) -> None:
    app = make_app(REDIS_URL=sentinel_service.url, REDIS_STATS_INTERVAL=60)
    redis_pool = RedisPool(app)
    with app.app_context():
        redis_pool.client.incr("advice")
        redis_pool.replica_client.get("advice")
    assert pools_of(app).publisher.publish()
    advice = redis_pool.advice(app)
    servers = {server.port: server for server in (sentinel_service.master, *sentinel_service.replicas)}
    assert sorted(server["address"] for server in advice["servers"]) == sorted(f"127.0.0.1:{port}" for port in servers)
    assert all(server["maxclients"] for server in advice["servers"])
    assert (advice["workers"], advice["peak_in_use"], advice["advice"]) == (1, 1, "too little")


def advice_once(app: Flask, ready: Callable[[PoolAdvice], object], what: str, **thresholds: Any) -> PoolAdvice:
    """The example app's advice, once ``ready`` finds it complete (the workers publish every 0.2 s)."""

    def complete() -> PoolAdvice | None:
        advice = example_pool.advice(app, **thresholds)
        return advice if ready(advice) else None

    return wait_until(complete, 10, what)


ENV = {"FLASK_REDIS_STATS_INTERVAL": "0.2"}


def test_an_undersized_pool_under_gunicorn_is_raised(make_example: Callable[..., Flask], redis_url: str) -> None:
    """One worker of 4 threads with 1 connection, and requests that keep theirs 50 ms:
    they wait, and the advice is to raise the limit to at least the 4 threads."""
    app = make_example(REDIS_URL=redis_url)
    pools_of(app).publisher.stop()  # this test process only reads
    env = {**ENV, "FLASK_REDIS_MAX_CONNECTIONS": "1"}
    served = gunicorn("tests.advice_app:create_app()", redis_url=redis_url, workers=1, threads=4, env=env)
    with served as (port, master):
        gunicorn_workers(master, 1)
        result = drive(port, "/hold", concurrency=8, total=40, deadline=30)
        advice = advice_once(app, lambda a: a["checkouts"] >= 40, "the 40 requests published")
        table = app.test_cli_runner().invoke(args=["redis-stats", "--advise"])
    assert (result.requests, dict(result.errors)) == (40, {})
    assert (advice["workers"], advice["max_connections"], advice["peak_in_use"]) == (1, 1, 1)
    assert advice["waits"] > 0
    assert advice["advice"] == "raise"
    assert advice["threads"] is not None
    assert advice["recommended"] == advice["threads"] >= 4
    assert table.exit_code == 0, table.output
    assert f"  advice: raise REDIS_MAX_CONNECTIONS to {advice['threads']}" in table.output.splitlines()


def test_an_oversized_pool_under_gunicorn_is_lowered(
    make_example: Callable[..., Flask], redis_url: str, server: Redis
) -> None:
    """Two workers of 4 threads with 10 connections each: at most 4 are ever in use in a
    worker, and the advice is to lower the limit to the peak and a quarter, 5 at most."""
    app = make_example(REDIS_URL=redis_url)
    pools_of(app).publisher.stop()
    with gunicorn("example_app:create_app()", redis_url=redis_url, workers=2, threads=4, env=ENV) as (port, master):
        workers = gunicorn_workers(master, 2)
        load_every_worker(port, workers, server)
        result = drive(port, "/hits", concurrency=16, total=400, deadline=30, keepalive=False)
        hits = int(server.get("example:hits") or 0)  # one checkout each
        ready = lambda a: a["workers"] == 2 and a["checkouts"] >= hits  # noqa: E731
        advice = advice_once(app, ready, f"the {hits} requests published", min_window=0, min_checkouts=100)
        strict = example_pool.advice(app)
    assert (result.requests, dict(result.errors)) == (400, {})
    assert (advice["max_connections"], advice["waits"], advice["timeouts"]) == (10, 0, 0)
    assert 1 <= advice["peak_in_use"] <= 4
    peak = advice["peak_in_use"]
    assert (advice["advice"], advice["recommended"]) == ("lower", max(peak + 1, math.ceil(peak * 1.25)))
    assert (strict["advice"], strict["recommended"]) == ("too little", None)  # a few seconds are not 10 minutes
