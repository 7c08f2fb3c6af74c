"""Prometheus metrics of this process's pools (``pip install 'flask-redispool[prometheus]'``).

.. code-block:: python

    from prometheus_client import REGISTRY
    from flask_redispool.prometheus import RedisPoolCollector

    REGISTRY.register(RedisPoolCollector(app))

Each ``RedisPool`` on the app is one label set (``prefix``, ``client_name``). Values are
read from :meth:`RedisPool.stats() <flask_redispool.RedisPool.stats>` at scrape time,
so scraping costs the app nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .extension import app_states

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["RedisPoolCollector"]

LABELS = ("prefix", "client_name")
#: (family, metric name, stats key, help); counters get ``_total`` from prometheus_client.
METRICS: tuple[tuple[type[GaugeMetricFamily] | type[CounterMetricFamily], str, str, str], ...] = (
    (GaugeMetricFamily, "flask_redispool_connections_in_use", "in_use", "Connections checked out of the pool now."),
    (GaugeMetricFamily, "flask_redispool_connections_idle", "idle", "Connections idle in the pool now."),
    (GaugeMetricFamily, "flask_redispool_max_connections", "max_connections", "The limit, REDIS_MAX_CONNECTIONS."),
    (CounterMetricFamily, "flask_redispool_checkouts", "checkouts", "Connections checked out of the pool."),
    (CounterMetricFamily, "flask_redispool_waits", "waits", "Checkouts that found every connection busy and waited."),
    (CounterMetricFamily, "flask_redispool_timeouts", "timeouts", "Checkouts that ended in PoolExhaustedError."),
    (CounterMetricFamily, "flask_redispool_connections_created", "created", "Connections the pool has made."),
)


class RedisPoolCollector(Collector):
    """Collects the pool gauges and counters of every ``RedisPool`` on ``app``."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        snapshots = [state.pool.snapshot() for state in app_states(self.app)]
        for family, name, key, documentation in METRICS:
            metric = family(name, documentation, labels=LABELS)
            for stats in snapshots:
                metric.add_metric([stats["prefix"], stats["client_name"]], stats[key])  # type: ignore[literal-required]
            yield metric
