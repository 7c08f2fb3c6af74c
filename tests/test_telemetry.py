"""OpenTelemetry: our pools' waits and timeouts reach an OpenTelemetry reader through
OpenTelemetry's own API, under the semantic-convention names redis-py uses, each recorded
once, with or without redis-py's observability; every pool under a name of its own (a
Sentinel service's by service and role); nothing timed while no meter provider is set.

The app runs in a process of its own (``tests/telemetry_app.py``): OpenTelemetry's meter
provider is set once per process, and redis-py's observability is process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Flask

from flask_redispool import RedisPool
from flask_redispool._telemetry import observed
from flask_redispool.testing import RedisServer

from .conftest import SentinelService
from .telemetry_app import HOLD

APP = Path(__file__).resolve().parent / "telemetry_app.py"
WAIT_TIME, TIMEOUTS = "db.client.connection.wait_time", "db.client.connection.timeouts"


def _report(url: str, *args: str) -> dict[str, Any]:
    ran = subprocess.run(
        [sys.executable, str(APP), url, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    report: dict[str, Any] = json.loads(ran.stdout)
    return report


def _points(report: dict[str, Any], metric: str, pool: str) -> list[dict[str, Any]]:
    return [
        point
        for point in report["metrics"].get(metric, [])
        if point["attributes"]["db.client.connection.pool.name"] == pool
    ]


def _recorded_by(report: dict[str, Any]) -> dict[str, set[str]]:
    """Each metric's instrumentation scopes: who recorded it."""
    return {metric: {point["scope"] for point in points} for metric, points in report["metrics"].items()}


def _check_recorded_once(report: dict[str, Any], ours: set[str]) -> None:
    """``ours`` are recorded by flask-redispool alone; everything else by redis-py alone."""
    recorded_by = _recorded_by(report)
    assert all(recorded_by.get(metric) == {"flask_redispool"} for metric in ours)
    assert all(scopes == {"redis-py"} for metric, scopes in recorded_by.items() if metric not in ours)


def _check_single_server_figures(report: dict[str, Any], server_url: str) -> None:
    """The sync and async pools' waits and timeouts, under the server's address, once each."""
    stats = report["stats"]
    assert (stats["checkouts"], stats["waits"], stats["timeouts"]) == (15, 2, 1)
    assert (stats["async_checkouts"], stats["async_timeouts"]) == (2, 1)
    name = urlsplit(server_url).netloc  # host:port
    assert {point["attributes"]["db.client.connection.pool.name"] for point in report["metrics"][WAIT_TIME]} == {name}

    # Each checkout that got a connection, timed once (redis-py's non-blocking pool times
    # none): ten commands, two held, the read that waited for them and the two held again;
    # the async pool's two.
    [wait] = _points(report, WAIT_TIME, name)
    assert wait["count"] == stats["checkouts"] + stats["async_checkouts"]
    assert HOLD * 0.9 <= wait["sum"] < 5  # the read that waited
    assert wait["attributes"] == {
        "db.system": "redis",
        "redis.client.library": f"redis-py:v{redis.__version__}",
        "db.client.connection.pool.name": name,
    }
    [timeouts] = _points(report, TIMEOUTS, name)
    assert timeouts["value"] == stats["timeouts"] + stats["async_timeouts"]


def test_the_pools_figures_reach_opentelemetry_once_each(redis_server: RedisServer) -> None:
    report = _report(redis_server.url)
    _check_single_server_figures(report, redis_server.url)
    # Waits and timeouts are ours alone; what redis-py records of our pools is its own.
    _check_recorded_once(report, {WAIT_TIME, TIMEOUTS})
    # A creation time per connection made: two by the sync pool, two by the async one.
    assert sum(point["count"] for point in report["metrics"]["db.client.connection.create_time"]) == 4
    assert report["stats"]["created"] == 2


def test_the_pools_figures_need_only_a_meter_provider(redis_server: RedisServer) -> None:
    report = _report(redis_server.url, "--without-redis-py")
    _check_single_server_figures(report, redis_server.url)
    assert _recorded_by(report) == {WAIT_TIME: {"flask_redispool"}, TIMEOUTS: {"flask_redispool"}}


def test_without_a_meter_provider_checkouts_are_not_timed(app: Flask, redis_pool: RedisPool) -> None:
    assert not observed()  # this process sets no meter provider
    with app.app_context():
        redis_pool.client.ping()
        assert redis_pool.get_pool(app).events.checkout_time == ()  # nobody times a checkout


def test_sentinel_pools_are_named_by_service_and_role_and_counted_once_each(
    sentinel_service: SentinelService,
) -> None:
    report = _report(sentinel_service.url)
    stats, service = report["stats"], sentinel_service.name
    ours = {
        point["attributes"]["db.client.connection.pool.name"]
        for metric in (WAIT_TIME, TIMEOUTS)
        for point in report["metrics"].get(metric, [])
    }
    assert ours == {f"{service}/master", f"{service}/replica"}

    # Each pool's checkouts timed once, sync and async together under the pool's name
    # (sync: 3 INCRs on the master, 2 GETs on a replica; async: 2 and 1).
    figures = {pool["role"]: pool for pool in stats["pools"]}
    assert stats["async_checkouts"] == 3
    for role, checkouts, async_checkouts in [("master", 3, 2), ("replica", 2, 1)]:
        assert figures[role]["checkouts"] == checkouts
        [wait] = _points(report, WAIT_TIME, f"{service}/{role}")
        assert wait["count"] == checkouts + async_checkouts
    _check_recorded_once(report, {WAIT_TIME})
    theirs = {  # redis-py's own figures name the pools alike: mymaster/master:6379_<id>
        point["attributes"]["db.client.connection.pool.name"].split(":")[0]
        for point in report["metrics"]["db.client.connection.create_time"]
    }
    assert {f"{service}/master", f"{service}/replica"} <= theirs  # and the sentinels' own, by address
    assert "unknown" not in theirs
