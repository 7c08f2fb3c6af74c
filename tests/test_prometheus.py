"""The Prometheus collector, read back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flask_redispool import RedisPool
from flask_redispool.prometheus import RedisPoolCollector


def scrape(app: Flask) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(RedisPoolCollector(app))
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels["prefix"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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
