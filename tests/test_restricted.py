"""Restricted and managed servers: ``CLIENT`` renamed away, ACL users with few rights,
read-only replicas, a full ``maxmemory``. Requests work on each with the default config;
what cannot be shown is said, and the publisher backs off instead of hammering.

Every server here is a real redis-server started by the test on a free loopback port.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool.testing import RedisServer

from .conftest import PASSWORD, pools_of, run_in_threads, skip_before, wait_until

pytestmark = pytest.mark.servers

ServerFactory = Callable[..., RedisServer]
# A command the ACL refuses, as each server words it: "this user has no permissions to run
# the 'scan' command" (7.0; 6.2 adds "or its subcommand"), "User app has no ..." (8.2, Valkey).
NO_PERMISSION = r"NoPermissionError: (this user|User app) has no permissions to run the '[a-z|]+' command"


@pytest.fixture
def hardened(start_server: ServerFactory) -> RedisServer:
    """A server with ``CLIENT`` disabled, a common hardening step."""
    return start_server("--rename-command", "CLIENT", "")


def observe(server: RedisServer) -> Redis:
    return Redis.from_url(server.url, socket_timeout=10)


def hold(app: Flask, redis_pool: RedisPool, count: int) -> None:
    """Make ``count`` connections of the pool by holding them at once."""
    pool = redis_pool.get_pool(app)
    held = [pool.get_connection() for _ in range(count)]
    for connection in held:
        pool.release(connection)


def test_requests_work_where_client_is_disabled_and_naming_is_given_up_once(
    make_app: Callable[..., Flask], hardened: RedisServer, redis_pool: RedisPool, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(REDIS_URL=hardened.url)
    redis_pool.init_app(app)
    with caplog.at_level(logging.WARNING, logger="flask_redispool"), app.app_context():
        assert redis_pool.client.incr("hits") == 1  # its connection's CLIENT SETNAME is refused
        hold(app, redis_pool, 3)
        assert redis_pool.client.incr("hits") == 2
    (warning,) = [r for r in caplog.records if "refused CLIENT SETNAME" in r.getMessage()]
    assert "REDIS_CLIENT_NAME = False" in warning.getMessage()
    stats = redis_pool.stats(app)
    assert stats["created"] == 3
    assert re.match("ResponseError: unknown command [`']CLIENT[`']", stats["naming_refused"] or "")  # 6.2: `CLIENT`


def test_client_name_false_sends_no_client_setname(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool, server: Redis
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_CLIENT_NAME=False)
    redis_pool.init_app(app)
    before = int(server.info("commandstats").get("cmdstat_client|setname", {}).get("calls", 0))
    with app.app_context():
        redis_pool.client.incr("hits")
        hold(app, redis_pool, 2)
    after = int(server.info("commandstats").get("cmdstat_client|setname", {}).get("calls", 0))
    assert after == before
    assert redis_pool.settings(app).client_name == app.import_name  # still names its snapshots
    with app.app_context():
        report = redis_pool.report()
    assert report["server_error"] == "connections are unnamed (REDIS_CLIENT_NAME is False)"


@dataclass
class ACLServer:
    """A server of the test's own, and its default (all-powerful) user's client."""

    server: RedisServer
    admin: Redis

    def user(self, name: str, *rules: str) -> str:
        """Add an ACL user with ``rules`` on top of every right; a URL that logs in as it."""
        if any("|" in rule for rule in rules):
            skip_before(self.server, (7, 0), "An ACL rule that takes a subcommand away (-client|list)")
        self.admin.execute_command("ACL", "SETUSER", name, "on", f">{PASSWORD}", "~*", "&*", "+@all", *rules)
        return f"redis://{name}:{PASSWORD}@127.0.0.1:{self.server.port}/0"


@pytest.fixture
def acl_server(start_server: ServerFactory) -> Iterator[ACLServer]:
    server = start_server()
    acl = ACLServer(server, observe(server))
    yield acl
    acl.admin.close()


def setname_refusals(observer: Redis) -> int:
    return int(observer.info("commandstats").get("cmdstat_client|setname", {}).get("rejected_calls", 0))


def test_requests_work_for_a_user_without_client_setname_which_is_asked_once(
    make_app: Callable[..., Flask], acl_server: ACLServer, redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=acl_server.user("app", "-client|setname"))
    redis_pool.init_app(app)
    with app.app_context():
        assert redis_pool.client.incr("hits") == 1
        hold(app, redis_pool, 3)  # two more connections, which do not ask again
    assert setname_refusals(acl_server.admin) == 1
    assert re.match(NO_PERMISSION, redis_pool.stats(app)["naming_refused"] or "")


def stats_command(app: Flask) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["redis-stats"])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("rules", "missing", "shown"),
    [
        (("-client|list",), f"server view unavailable: {NO_PERMISSION}", "snapshots"),
        (("-scan",), f"snapshots unavailable: {NO_PERMISSION}", "server view"),
        (("-client|setname",), "server view unavailable: connections are unnamed: the server refused", "snapshots"),
    ],
)
def test_redis_stats_prints_a_partial_view_and_says_what_is_missing(
    make_app: Callable[..., Flask],
    acl_server: ACLServer,
    redis_pool: RedisPool,
    rules: tuple[str, ...],
    missing: str,
    shown: str,
) -> None:
    app = make_app(REDIS_URL=acl_server.user("app", *rules))
    redis_pool.init_app(app)
    code, output = stats_command(app)
    assert code == 0, output
    assert re.search(missing, output), output
    assert f"{shown} unavailable" not in output


def test_redis_stats_fails_when_it_can_show_nothing(
    make_app: Callable[..., Flask], acl_server: ACLServer, redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=acl_server.user("app", "-scan", "-client|list"))
    redis_pool.init_app(app)
    code, output = stats_command(app)
    assert code == 1
    assert re.search(f"showed neither the published snapshots \\({NO_PERMISSION}", output), output
    assert PASSWORD not in output


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:{port}/999", "refused the connection: ResponseError: "),
        ("redis://app:wrong-{password}@127.0.0.1:{port}/0", "refused the connection: AuthenticationError: "),
    ],
)
@pytest.mark.parametrize("command", ["redis-stats", "redis-ping"])
def test_a_refused_connection_fails_both_commands_with_the_same_words(
    make_app: Callable[..., Flask],
    acl_server: ACLServer,
    redis_pool: RedisPool,
    url: str,
    words: str,
    command: str,
) -> None:
    acl_server.user("app")
    app = make_app(REDIS_URL=url.format(port=acl_server.server.port, password=PASSWORD))
    redis_pool.init_app(app)
    result = app.test_cli_runner().invoke(args=[command])
    assert result.exit_code == 1
    assert words in result.output
    assert "unreachable" not in result.output
    assert PASSWORD not in result.output


def refusing_server(kind: str, start_server: ServerFactory) -> tuple[str, RedisServer]:
    """A URL whose server answers reads but refuses the publisher's SET, and that server."""
    if kind == "replica":
        primary = start_server()
        replica = start_server("--replicaof", "127.0.0.1", str(primary.port))
        return replica.url, replica
    if kind == "maxmemory":
        full = start_server("--maxmemory", "1", "--maxmemory-policy", "noeviction")
        return full.url, full
    server = start_server()
    observe(server).execute_command("ACL", "SETUSER", "reader", "on", f">{PASSWORD}", "~*", "+@all", "-@write")
    return f"redis://reader:{PASSWORD}@127.0.0.1:{server.port}/0", server


@pytest.mark.parametrize("kind", ["replica", "maxmemory", "acl-without-writes"])
def test_the_publisher_backs_off_on_a_server_that_refuses_its_snapshot(
    make_app: Callable[..., Flask],
    start_server: ServerFactory,
    redis_pool: RedisPool,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    url, server = refusing_server(kind, start_server)
    app = make_app(REDIS_URL=url, REDIS_STATS_INTERVAL=0.1)
    redis_pool.init_app(app)
    observer = observe(server)
    connections_before = int(observer.info("stats")["total_connections_received"])
    publisher = pools_of(app).publisher
    with caplog.at_level(logging.WARNING, logger="flask_redispool"), app.app_context():
        assert redis_pool.client.get("anything") is None  # reads work, and start the publisher
        wait_until(lambda: publisher.failures >= 1, 5, "the first refused snapshot")
        first = time.monotonic()  # seen after it happened: what follows is measured short, never long
        wait_until(lambda: publisher.failures >= 4, 20, "the fourth refused snapshot")
        # Pauses of 0.2, 0.4 and 0.8 s between the four refusals: 1.4 s. One a 0.1 s interval
        # took 0.3 s before the publisher backed off.
        elapsed = time.monotonic() - first
        assert elapsed >= 1.0, f"four refusals within {elapsed:.2f} s: the pause does not grow"
        assert redis_pool.client.exists("anything") == 0  # still costs requests nothing
    connections = int(observer.info("stats")["total_connections_received"]) - connections_before
    assert connections <= 2  # the pool's one and the publisher's one: no reconnect per interval
    refusals = [r for r in caplog.records if r.getMessage().startswith("Could not publish")]
    assert len(refusals) == 1
    assert "growing pause" in refusals[0].getMessage()
    assert PASSWORD not in caplog.text


def test_the_publisher_survives_a_server_timeout_shorter_than_its_interval(
    make_app: Callable[..., Flask], start_server: ServerFactory, redis_pool: RedisPool, caplog: pytest.LogCaptureFixture
) -> None:
    """The server closes connections idle for more than 1 s (in whole seconds of its clock,
    so surely after 2 s); the publisher publishes every 2.5 s, each time on a new connection."""
    server = start_server("--timeout", "1")
    app = make_app(REDIS_URL=server.url, REDIS_STATS_INTERVAL=2.5)
    redis_pool.init_app(app)
    observer = observe(server)
    connections_before = int(observer.info("stats")["total_connections_received"])
    publisher = pools_of(app).publisher
    published: list[float] = []  # when each snapshot seen was taken
    missing = 0  # times the snapshot was not there once published (it lives 7.5 s)

    def third_publish() -> bool:
        nonlocal missing
        snapshot = observer.get(publisher.key)
        if snapshot is None:
            missing += bool(published)
        elif (taken := json.loads(snapshot)["published_at"]) not in published:
            published.append(taken)
        return len(published) >= 3

    with caplog.at_level(logging.INFO, logger="flask_redispool"), app.app_context():
        redis_pool.client.incr("hits")
        wait_until(third_publish, 30, "three snapshots")
    assert publisher.failures == 0
    assert not [r for r in caplog.records if r.name == "flask_redispool"]
    assert missing == 0  # there from the first publish on
    connections = int(observer.info("stats")["total_connections_received"]) - connections_before
    assert connections >= 1 + 3  # the pool's, and the publisher's anew for each publish
    snapshot = json.loads(observer.get(publisher.key) or "{}")
    assert snapshot["checkouts"] == 1


def test_async_views_work_where_client_is_disabled(
    make_app: Callable[..., Flask], hardened: RedisServer, redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=hardened.url)
    redis_pool.init_app(app)

    @app.get("/")
    async def view() -> str:
        return str(await redis_pool.async_client.incr("hits"))

    observer = observe(hardened)
    with app.app_context():
        redis_pool.client.incr("hits")  # the sync pool learns that names are refused
    pools: list[int] = []
    # Counted while both threads, each with its loop, are alive: a thread that ended first
    # has its loop closed when another thread makes one.
    both_served = threading.Barrier(2, action=lambda: pools.append(redis_pool.stats(app)["async_pools"]), timeout=10)

    def serve() -> None:
        app.test_client().get("/")
        both_served.wait()

    run_in_threads(serve, 2)
    assert observer.get("hits") == b"3"
    assert pools == [2]  # two loops, two new async connections
