"""OpenTelemetry: our pools' figures reach an OpenTelemetry reader through redis-py's own
observability, under the semantic-convention names, each recorded once.

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
