"""redis_pool.health() against a real server, a dead one and a password-protected one."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask

from flask_redispool import RedisPool
from flask_redispool.testing import RedisServer, free_port

from .conftest import PASSWORD


def test_health_of_a_live_server(app: Flask, redis_pool: RedisPool, redis_server: RedisServer) -> None:
    health = redis_pool.health(app)
    assert health["ok"] is True
    assert health["error"] is None
    assert health["latency_ms"] is not None
    assert 0 < health["latency_ms"] < 1000
    assert health["server_version"] == ".".join(map(str, redis_server.version))
    assert (health["in_use"], health["max_connections"]) == (0, 10)
    assert json.loads(json.dumps(health)) == health


@pytest.mark.parametrize("password", ["", PASSWORD])
def test_health_of_a_dead_server_never_raises(make_app: Callable[..., Flask], password: str) -> None:
    credentials = f":{password}@" if password else ""
    app = make_app(REDIS_URL=f"redis://{credentials}127.0.0.1:{free_port()}/0")
    redis_pool = RedisPool(app)
    health = redis_pool.health(app)
    assert (health["ok"], health["latency_ms"], health["server_version"], health["in_use"]) == (False, None, None, 0)
    assert health["error"] is not None
    assert health["error"].startswith("ConnectionError: ")
    assert not password or password not in json.dumps(health)


def test_example_app_healthz(make_example: Callable[..., Flask], redis_url: str) -> None:
    live = make_example(REDIS_URL=redis_url)
    dead = make_example(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert live.test_client().get("/healthz").status_code == 200
    response = dead.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["ok"] is False
