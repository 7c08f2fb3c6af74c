"""An app whose pools report to OpenTelemetry, run by ``tests/test_telemetry.py`` in a
process of its own (OpenTelemetry's meter provider is set once per process, and redis-py's
observability is process-wide). Prints what an in-memory reader collected and the pool's
own figures, as one JSON object.

Usage: ``python tests/telemetry_app.py redis://127.0.0.1:PORT/0 [--without-redis-py]``,
or with a ``redis+sentinel://`` URL for a Sentinel service's pools (:func:`sentinel_traffic`).
With ``--without-redis-py``, redis-py's own observability stays off: only the meter
provider is set.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Any

from flask import Flask
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from redis.observability.config import MetricGroup, OTelConfig
from redis.observability.providers import get_observability_instance  # redis-py 7 has it here only

from flask_redispool import PoolExhaustedError, RedisPool

#: How long both connections are held once another checkout waits for one.
HOLD = 0.2


def sync_traffic(app: Flask, redis_pool: RedisPool) -> None:
    """Ten commands; a checkout that waits ``HOLD`` for a connection; one that times out."""

    def waiting_read() -> None:
        with app.app_context():
            redis_pool.client.get("otel")

    with app.app_context():
        for _ in range(10):
            redis_pool.client.incr("otel")
        waiter = threading.Thread(target=waiting_read)
        with redis_pool.connection(), redis_pool.connection():
            waiter.start()
            deadline = time.monotonic() + 10
            while redis_pool.stats(app)["waits"] == 0:  # until the read queues for a connection
                if time.monotonic() > deadline:
                    raise RuntimeError("the read never queued for a connection")
                time.sleep(0.01)
            time.sleep(HOLD)  # what the read waits, at least: the figure the test checks
        waiter.join(timeout=10)
        with redis_pool.connection(), redis_pool.connection(), contextlib.suppress(PoolExhaustedError):
            redis_pool.client.get("otel")


def async_timeout(app: Flask, redis_pool: RedisPool) -> None:
    """Two checkouts of this loop's async pool, and one that times out."""

    async def full_pool() -> None:
        pool = redis_pool.async_client.connection_pool
        held = [await pool.get_connection() for _ in range(2)]
        with contextlib.suppress(PoolExhaustedError):
            await pool.get_connection()
        for connection in held:
            await pool.release(connection)

    with app.app_context():  # as Flask runs an async view
        app.ensure_sync(full_pool)()


def sentinel_traffic(app: Flask, redis_pool: RedisPool) -> None:
    """A few commands on each pool of a Sentinel service, sync and async, one at a time."""

    async def async_commands() -> None:
        for _ in range(2):
            await redis_pool.async_client.incr("otel")
        await redis_pool.async_replica_client.get("otel")

    with app.app_context():
        for _ in range(3):
            redis_pool.client.incr("otel")
        for _ in range(2):
            redis_pool.replica_client.get("otel")
        app.ensure_sync(async_commands)()


def collected(reader: InMemoryMetricReader) -> dict[str, list[dict[str, Any]]]:
    """Each metric's data points: attributes, and a value or a histogram's count and sum."""
    found: dict[str, list[dict[str, Any]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    entry: dict[str, Any] = {"scope": scope.scope.name, "attributes": dict(point.attributes or {})}
                    if isinstance(point, HistogramDataPoint):
                        entry.update(count=point.count, sum=point.sum)
                    elif isinstance(point, NumberDataPoint):
                        entry["value"] = point.value
                    found.setdefault(metric.name, []).append(entry)
    return found


def main(url: str, with_redis_py: bool) -> None:
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if with_redis_py:
        groups = [MetricGroup.CONNECTION_BASIC, MetricGroup.CONNECTION_ADVANCED]
        get_observability_instance().init(OTelConfig(metric_groups=groups))
    app = Flask("telemetry_app")
    # POOL_TIMEOUT well past HOLD: the read that waits HOLD gets its connection on a busy machine too.
    app.config.update(REDIS_URL=url, REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=1, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    if url.startswith("redis+sentinel://"):
        sentinel_traffic(app, redis_pool)
    else:
        sync_traffic(app, redis_pool)
        async_timeout(app, redis_pool)
    report = {"stats": redis_pool.stats(app), "metrics": collected(reader)}
    redis_pool.close(app)
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main(sys.argv[1], with_redis_py="--without-redis-py" not in sys.argv[2:])
