"""The Prometheus collectors, read back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from flask_redispool import RedisPool
from flask_redispool.prometheus import PublishedPoolsCollector, RedisPoolCollector
from flask_redispool.testing import free_port

from .conftest import Worker, wait_until


def exposition(collector: Collector) -> list[Sample]:
    """Register ``collector``, scrape, and parse the text as Prometheus would."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape(app: Flask) -> dict[tuple[str, str], float]:
    return {(sample.name, sample.labels["prefix"]): sample.value for sample in exposition(RedisPoolCollector(app))}


def test_metrics_match_stats_for_every_prefix(make_app: Callable[..., Flask], redis_url: str) -> None:
    app = make_app(REDIS_URL=redis_url, CACHE_REDIS_URL=redis_url, CACHE_REDIS_MAX_CONNECTIONS=3)
    main, cache = RedisPool(app), RedisPool(app, config_prefix="CACHE_REDIS")
    with app.app_context():
        main.client.incr("n")
        with main.connection():
            cache.client.ping()
            samples = scrape(app)
    assert samples[("flask_redispool_connections_in_use", "REDIS")] == 1
    assert samples[("flask_redispool_connections_in_use", "CACHE_REDIS")] == 0
    assert samples[("flask_redispool_max_connections", "CACHE_REDIS")] == 3
    after = scrape(app)
    for prefix, pool in (("REDIS", main), ("CACHE_REDIS", cache)):
        stats = pool.stats(app)
        assert after[("flask_redispool_connections_in_use", prefix)] == stats["in_use"] == 0
        assert after[("flask_redispool_connections_idle", prefix)] == stats["idle"]
        assert after[("flask_redispool_checkouts_total", prefix)] == stats["checkouts"]
        assert after[("flask_redispool_waits_total", prefix)] == stats["waits"]
        assert after[("flask_redispool_timeouts_total", prefix)] == stats["timeouts"]
        assert after[("flask_redispool_connections_created_total", prefix)] == stats["created"]
    assert after[("flask_redispool_checkouts_total", "REDIS")] == 2


def test_published_collector_exposes_every_worker(
    app: Flask, redis_pool: RedisPool, start_worker: Callable[..., Worker]
) -> None:
    workers = {start_worker(app.import_name, held=n, interval=0.2).pid: n for n in (1, 2)}
    collector = PublishedPoolsCollector(app)

    def by_pid(name: str) -> dict[int, float]:
        return {int(s.labels["pid"]): s.value for s in exposition(collector) if s.name == name}

    wait_until(lambda: set(by_pid("flask_redispool_connections_in_use")) == set(workers), 10, "both snapshots")
    assert by_pid("flask_redispool_connections_in_use") == workers
    assert by_pid("flask_redispool_checkouts_total") == workers  # one checkout per held connection
    assert by_pid("flask_redispool_max_connections") == dict.fromkeys(workers, 10)
    samples = {s.name: s for s in exposition(collector)}
    assert samples["flask_redispool_published_processes"].value == 2
    assert samples["flask_redispool_published_up"].value == 1
    assert samples["flask_redispool_published_up"].labels == {"prefix": "REDIS", "client_name": app.import_name}


def test_published_collector_reports_redis_down_and_registers_without_io(
    make_app: Callable[..., Flask], redis_pool: RedisPool
) -> None:
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    redis_pool.init_app(app)
    CollectorRegistry().register(PublishedPoolsCollector(app))
    assert redis_pool.stats(app)["created"] == 0  # registering made no connection
    samples = {s.name: s.value for s in exposition(PublishedPoolsCollector(app))}
    assert samples == {"flask_redispool_published_up": 0}  # and the scrape itself succeeds
