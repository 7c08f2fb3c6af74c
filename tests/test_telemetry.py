"""OpenTelemetry: our pools' figures reach an OpenTelemetry reader through redis-py's own
observability, under the semantic-convention names, each recorded once, every pool under a
name of its own (a Sentinel service's by service and role).

The app runs in a process of its own (``tests/telemetry_app.py``): OpenTelemetry's meter
provider is set once per process, and redis-py's observability is process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from flask_redispool.testing import RedisServer

from .conftest import SentinelService
from .telemetry_app import HOLD

APP = Path(__file__).resolve().parent / "telemetry_app.py"
REDIS_PY_8 = int(redis.__version__.split(".")[0]) >= 8


def _points(report: dict[str, Any], metric: str, pool: str) -> list[dict[str, Any]]:
    return [
        point
        for point in report["metrics"].get(metric, [])
        if point["attributes"]["db.client.connection.pool.name"] == pool
    ]


def test_the_pools_figures_reach_opentelemetry_once_each(redis_server: RedisServer) -> None:
    ran = subprocess.run(
        [sys.executable, str(APP), redis_server.url], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    stats, pool, async_pool = report["stats"], report["pool"], report["async_pool"]
    assert (stats["checkouts"], stats["waits"], stats["timeouts"], stats["async_timeouts"]) == (15, 2, 1, 1)

    # Each checkout that got a connection, timed once (redis-py's non-blocking pool times
    # none): ten commands, two held, the read that waited for them and the two held again.
    [wait] = _points(report, "db.client.connection.wait_time", pool)
    assert wait["count"] == stats["checkouts"]
    assert HOLD * 0.9 <= wait["sum"] < 5  # the read that waited

    [timeouts] = _points(report, "db.client.connection.timeouts", pool)
    assert timeouts["value"] == stats["timeouts"]
    [async_timeouts] = _points(report, "db.client.connection.timeouts", async_pool)
    assert async_timeouts["value"] == stats["async_timeouts"]

    [created] = _points(report, "db.client.connection.create_time", pool)  # redis-py's own
    assert created["count"] == stats["created"] == 2
    if REDIS_PY_8:  # redis-py 7 counts only pools registered by hand
        counts = {
            point["attributes"]["db.client.connection.state"]: point["value"]
            for point in _points(report, "db.client.connection.count", pool)
        }
        assert counts == {"idle": 2, "used": 0}


def test_sentinel_pools_are_named_by_service_and_role_and_counted_once_each(
    sentinel_service: SentinelService,
) -> None:
    ran = subprocess.run(
        [sys.executable, str(APP), sentinel_service.url], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    names, stats = report["pools"], report["stats"]
    service = sentinel_service.name
    for pool, role in [
        ("master", "master"),
        ("replica", "replica"),
        ("async_master", "master"),
        ("async_replica", "replica"),
    ]:
        assert names[pool].startswith(f"{service}/{role}:"), names
    assert names["master"] != names["replica"]
    assert names["async_master"] != names["async_replica"]
    every_name = {
        point["attributes"]["db.client.connection.pool.name"]
        for points in report["metrics"].values()
        for point in points
    }
    assert not [name for name in every_name if name.startswith("unknown:")]

    # Each pool's figures under its own name, each recorded once: a wait time per
    # checkout (sync: 3 INCRs on the master, 2 GETs on a replica; async: 2 and 1), a
    # creation time per connection made.
    figures = {pool["role"]: pool for pool in stats["pools"]}
    for pool, role, checkouts in [("master", "master", 3), ("replica", "replica", 2)]:
        assert figures[role]["checkouts"] == checkouts
        [wait] = _points(report, "db.client.connection.wait_time", names[pool])
        assert wait["count"] == checkouts
        [created] = _points(report, "db.client.connection.create_time", names[pool])
        assert created["count"] == figures[role]["created"] == 1
        if REDIS_PY_8:  # redis-py 7 counts only pools registered by hand
            counts = {
                point["attributes"]["db.client.connection.state"]: point["value"]
                for point in _points(report, "db.client.connection.count", names[pool])
            }
            assert counts == {"idle": 1, "used": 0}
    assert stats["async_checkouts"] == 3
    for pool, checkouts in [("async_master", 2), ("async_replica", 1)]:
        [wait] = _points(report, "db.client.connection.wait_time", names[pool])
        assert wait["count"] == checkouts
        [created] = _points(report, "db.client.connection.create_time", names[pool])
        assert created["count"] == 1
