"""The topology registry: each URL scheme picks one topology, the rest of the package asks
it and never which one it is, and a topology registered for a new scheme is served by the
hub, the stats and the CLI with no other change."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from flask import Flask

from flask_redispool import ConfigError, RedisPool
from flask_redispool._cluster import Cluster
from flask_redispool._config import Settings, load_settings
from flask_redispool._connection import ConnectionPolicy
from flask_redispool._pool import CountedPool
from flask_redispool._sentinel import SentinelService
from flask_redispool._single import OneConnection, SingleServer
from flask_redispool._topology import TOPOLOGIES, topology_class

PACKAGE = Path(__file__).resolve().parent.parent / "flask_redispool"
#: The modules that use a topology: none of them may ask which one it is.
USERS = ("_extension.py", "_state.py", "_snapshots.py", "_poolset.py", "_health.py", "_cli.py", "prometheus.py")


class RedisTest(SingleServer):
    """A tiny topology for ``redis+test://``: one server, reached as ``redis://``."""

    def _make_pools(self, settings: Settings) -> tuple[ConnectionPolicy, Sequence[CountedPool], OneConnection]:
        return super()._make_pools(dataclasses.replace(settings, url="redis" + settings.url[len("redis+test") :]))


@pytest.mark.parametrize(
    ("url", "topology"),
    [
        ("redis://127.0.0.1:1/0", SingleServer),
        ("REDISS://127.0.0.1:1/0", SingleServer),
        ("unix:///tmp/redis.sock", SingleServer),
        ("fakeredis://", SingleServer),
        ("redis+sentinel://127.0.0.1:1/mymaster", SentinelService),
        ("redis+cluster://127.0.0.1:1,127.0.0.1:2", Cluster),
    ],
)
def test_the_registry_maps_each_scheme_to_its_topology(url: str, topology: type) -> None:
    assert topology_class(load_settings({"REDIS_URL": url}, "REDIS", "app")) is topology


def test_the_registry_lists_the_schemes_in_the_order_users_read_them() -> None:
    assert list(TOPOLOGIES) == [
        "redis",
        "rediss",
        "unix",
        "fakeredis",
        "redis+sentinel",
        "rediss+sentinel",
        "redis+cluster",
        "rediss+cluster",
    ]


@pytest.fixture
def redis_test() -> Iterator[str]:
    """``redis+test://`` registered for :class:`RedisTest`, for this test only."""
    TOPOLOGIES["redis+test"] = f"{__name__}:RedisTest"
    yield "redis+test"
    del TOPOLOGIES["redis+test"]


def test_an_unknown_scheme_is_refused_listing_the_registry(redis_test: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"REDIS_URL": "http://localhost:6379/0"}, "REDIS", "app")
    assert str(info.value) == (
        "REDIS_URL must be a URL with one of the schemes redis://, rediss://, unix://, fakeredis://, "
        "redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://, redis+test://, got http://localhost:6379/0"
    )


def test_a_scheme_is_refused_once_it_leaves_the_registry(redis_test: str) -> None:
    del TOPOLOGIES[redis_test]
    try:
        with pytest.raises(ConfigError, match="must be a URL with one of the schemes"):
            load_settings({"REDIS_URL": "redis+test://127.0.0.1:1/0"}, "REDIS", "app")
    finally:
        TOPOLOGIES[redis_test] = f"{__name__}:RedisTest"


def test_a_registered_topology_is_served_by_the_hub_stats_and_cli(
    redis_test: str, make_app: Callable[..., Flask], redis_url: str
) -> None:
    app = make_app(REDIS_URL=redis_url.replace("redis://", "redis+test://", 1))
    redis_pool = RedisPool(app)
    assert type(redis_pool._state(app).topology) is RedisTest
    with app.app_context():
        redis_pool.client.set("topology:test", "1")
        assert redis_pool.replica_client.get("topology:test") == b"1"
        with pytest.raises(RuntimeError, match=r"cluster_client is for Redis Cluster URLs"):
            redis_pool.cluster_client  # noqa: B018
    stats = redis_pool.stats(app)
    assert stats["url"].startswith("redis+test://")
    assert stats["checkouts"] == 2
    assert redis_pool.health(app)["ok"]
    runner = app.test_cli_runner()
    ping = runner.invoke(args=["redis-ping"])
    assert ping.exit_code == 0, ping.output
    assert "PONG" in ping.output
    result = runner.invoke(args=["redis-stats", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)["pools"]
    assert report["pool"]["url"].startswith("redis+test://")
    assert report["server_error"] is None


def _asks_which_topology(source: str) -> list[str]:
    """What in ``source`` asks which topology it is: an ``isinstance`` against a cluster or
    Sentinel class, an attribute named ``cluster`` or ``sentinel`` (``pools.cluster is not
    None``, ``settings.sentinel``), or a comparison with a ``redis+…`` scheme."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            classes = ast.unparse(node.args[1])
            if "Cluster" in classes or "Sentinel" in classes:
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Attribute) and node.attr in ("cluster", "sentinel"):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Compare):
            constants = [part for part in (node.left, *node.comparators) if isinstance(part, ast.Constant)]
            if any(isinstance(c.value, str) and c.value.startswith("redis+") for c in constants):
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("module", USERS)
def test_the_users_of_a_topology_never_ask_which_one_it_is(module: str) -> None:
    assert _asks_which_topology((PACKAGE / module).read_text()) == []


def test_the_check_finds_the_branches_it_is_meant_to_find() -> None:
    source = (
        "if pools.cluster is not None: pass\n"
        "if isinstance(client, RedisCluster): pass\n"
        "x = settings.sentinel\n"
        "y = scheme == 'redis+cluster'\n"
    )
    assert sorted(_asks_which_topology(source)) == sorted(
        ["pools.cluster", "isinstance(client, RedisCluster)", "settings.sentinel", "scheme == 'redis+cluster'"]
    )
