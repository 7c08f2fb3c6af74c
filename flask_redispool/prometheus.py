"""Prometheus metrics of the pools (``pip install 'flask-redispool[prometheus]'``).

Two collectors with the same metric names; register one:

- :class:`RedisPoolCollector`: this process's pools, read from
  :meth:`RedisPool.stats() <flask_redispool.RedisPool.stats>` at scrape time (no I/O).
- :class:`PublishedPoolsCollector`: every process's pools, read from the snapshots they
  publish into Redis (``REDIS_STATS_INTERVAL``), one series per process labelled
  ``host`` and ``pid``. Under gunicorn a scrape reaches one worker at random; this
  collector makes any of them answer for all, with no ``PROMETHEUS_MULTIPROC_DIR``.
  Sum in PromQL: ``sum by (prefix) (rate(flask_redispool_checkouts_total[5m]))``.

.. code-block:: python

    from prometheus_client import REGISTRY
    from flask_redispool.prometheus import PublishedPoolsCollector

    REGISTRY.register(PublishedPoolsCollector(app))

Each ``RedisPool`` on the app is one label set (``prefix``, ``client_name``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._config import STATS_FRESH_INTERVALS
from ._errors import REDIS_ERRORS
from ._snapshots import read_snapshots
from ._state import app_states
from ._stats import FIGURES, is_fresh

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["PublishedPoolsCollector", "RedisPoolCollector"]

LABELS = ("prefix", "client_name")
PROCESS_LABELS = (*LABELS, "host", "pid")
#: (family, metric name, stats key, help), from the figures that have a metric; counters
#: get ``_total`` from prometheus_client.
METRICS: tuple[tuple[type[GaugeMetricFamily] | type[CounterMetricFamily], str, str, str], ...] = tuple(
    (
        CounterMetricFamily if figure.counter else GaugeMetricFamily,
        f"flask_redispool_{figure.metric}",
        figure.name,
        figure.doc,
    )
    for figure in FIGURES
    if figure.metric
)


class RedisPoolCollector(Collector):
    """Collects the pool gauges and counters of every ``RedisPool`` on ``app``."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        snapshots = [state.pools.snapshot() for state in app_states(self.app)]
        for family, name, key, documentation in METRICS:
            metric = family(name, documentation, labels=LABELS)
            for stats in snapshots:
                metric.add_metric([stats["prefix"], stats["client_name"]], stats[key])  # type: ignore[literal-required]
            yield metric


class PublishedPoolsCollector(Collector):
    """Collects every process's published snapshot of each ``RedisPool`` on ``app``.

    Each scrape reads the snapshots from Redis (one SCAN and one MGET per pool). Only
    fresh snapshots count: a process that stopped publishing drops out within
    two intervals, as it does from ``flask redis-stats``. Also exposes
    ``flask_redispool_published_processes``, ``flask_redispool_published_skipped``
    (snapshots left out because they did not fit: see :ref:`published-stats`) and
    ``flask_redispool_published_up`` (0 when Redis could not be read: the scrape still
    succeeds).
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> Iterator[Metric]:
        # Without describe(), registering would call collect(), and so talk to Redis.
        for family, name, _key, documentation in METRICS:
            yield family(name, documentation, labels=PROCESS_LABELS)
        yield from self._process_gauges()

    def collect(self) -> Iterator[Metric]:
        metrics = [family(name, doc, labels=PROCESS_LABELS) for family, name, _key, doc in METRICS]
        processes, skipped_snapshots, up = self._process_gauges()
        for state in app_states(self.app):
            settings = state.settings
            labels = [settings.prefix, settings.client_name]
            try:
                snapshots, skipped = read_snapshots(state.reader(), settings)
            except REDIS_ERRORS:
                up.add_metric(labels, 0)
                continue
            now = time.time()
            fresh = [s for s in snapshots if is_fresh(s, now, STATS_FRESH_INTERVALS)]
            for stats in fresh:
                for metric, (_family, _name, key, _doc) in zip(metrics, METRICS, strict=True):
                    values = [*labels, stats["host"], str(stats["pid"])]
                    metric.add_metric(values, stats[key])  # type: ignore[literal-required]
            processes.add_metric(labels, len(fresh))
            skipped_snapshots.add_metric(labels, skipped)
            up.add_metric(labels, 1)
        yield from metrics
        yield processes
        yield skipped_snapshots
        yield up

    @staticmethod
    def _process_gauges() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "flask_redispool_published_processes", "Processes with a fresh published snapshot.", labels=LABELS
            ),
            GaugeMetricFamily(
                "flask_redispool_published_skipped",
                "Published snapshots left out because they did not fit.",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "flask_redispool_published_up", "1 if the published snapshots could be read from Redis.", labels=LABELS
            ),
        )
