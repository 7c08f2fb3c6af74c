"""redis_pool.health() against a real server, a dead one and a password-protected one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest
from flask import Flask
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool._pool import SidePool
from flask_redispool.testing import RedisServer, free_port, server_kind

from .conftest import PASSWORD, pools_of, wait_until


@pytest.mark.servers
def test_health_of_a_live_server(app: Flask, redis_pool: RedisPool, redis_server: RedisServer) -> None:
    health = redis_pool.health(app)
    assert health["ok"] is True
    assert health["error"] is None
    assert health["latency_ms"] is not None
    assert 0 < health["latency_ms"] < 1000
    assert health["server_version"] == ".".join(map(str, redis_server.version))
    assert health["server"] == ("valkey" if server_kind(redis_server.binary).startswith("valkey") else "redis")
    ping = app.test_cli_runner().invoke(args=["redis-ping"])
    assert ping.output.endswith(f"{str(health['server']).title()} {health['server_version']}\n"), ping.output
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


def test_health_after_close_reports_the_pool_closed(app: Flask, redis_pool: RedisPool) -> None:
    assert redis_pool.health(app)["ok"] is True
    redis_pool.close(app)
    health = redis_pool.health(app)  # a /healthz that outlives its pool answers 503, not 500
    assert (health["ok"], health["latency_ms"], health["in_use"], health["saturated"]) == (False, None, 0, False)
    assert health["error"] == (
        f"RuntimeError: <RedisPool config_prefix='REDIS'> was closed on app {app.name!r} by close(): "
        "its pool is gone. Make a new app (with the app factory) to use Redis again."
    )
    with app.app_context():
        assert redis_pool.health() == health


def test_example_app_healthz(make_example: Callable[..., Flask], redis_url: str) -> None:
    live = make_example(REDIS_URL=redis_url)
    dead = make_example(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert live.test_client().get("/healthz").status_code == 200
    response = dead.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["ok"] is False


def test_a_busy_pool_is_healthy_and_says_it_is_saturated(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool
) -> None:
    """Every connection checked out: health answers at once, without waiting POOL_TIMEOUT."""
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=2, REDIS_POOL_TIMEOUT=10)
    redis_pool.init_app(app)
    pool = redis_pool.get_pool(app)
    held = [pool.get_connection() for _ in range(2)]
    try:
        started = time.monotonic()
        health = redis_pool.health(app)
        took = time.monotonic() - started
    finally:
        for connection in held:
            pool.release(connection)
    assert took < 5  # a checkout of the full pool would have waited the 10 s POOL_TIMEOUT
    assert (health["ok"], health["saturated"], health["in_use"], health["timeouts"]) == (True, True, 2, 0)
    assert redis_pool.health(app)["saturated"] is False


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}/999",  # a database the server does not have
        "redis://nobody:wrong@127.0.0.1:{port}/0",  # credentials it refuses
    ],
)
def test_health_never_raises_whatever_the_server_says(
    make_app: Callable[..., Flask], redis_server: RedisServer, url: str
) -> None:
    app = make_app(REDIS_URL=url.format(port=redis_server.port))
    health = RedisPool(app).health(app)
    assert health["ok"] is False
    assert health["error"] is not None
    assert "flask-redispool:" in health["error"]  # the note that names REDIS_URL
    assert "wrong" not in health["error"]


def test_health_waits_its_turn_for_the_side_connection_and_gives_up_after_the_worst_case(
    make_app: Callable[..., Flask], redis_url: str, redis_pool: RedisPool
) -> None:
    """The one connection outside the pool, which health checks share with the publisher,
    is waited for in the pools' fair wait, up to ``worst_case_seconds``, and counted
    nowhere: the pool's own figures stay at zero."""
    quick = make_app(REDIS_URL=redis_url, REDIS_SOCKET_TIMEOUT=0.1, REDIS_SOCKET_CONNECT_TIMEOUT=0.1, REDIS_RETRIES=0)
    redis_pool.init_app(quick)
    side_pool = _side_pool(quick)
    held = side_pool.get_connection()
    try:
        health = redis_pool.health(quick)
    finally:
        side_pool.release(held)
    worst = redis_pool.settings(quick).worst_case_seconds
    assert (health["ok"], health["in_use"], health["timeouts"]) == (False, 0, 0)
    assert health["error"] is not None
    assert health["error"].startswith(
        "PoolExhaustedError: The connection that REDIS keeps outside its pool for stats and health checks "
        f"was not free within {worst:g} s"
    )
    assert redis_pool.health(quick)["ok"] is True  # given back: the next check has it

    app = make_app(REDIS_URL=redis_url, REDIS_SOCKET_TIMEOUT=10)
    redis_pool.init_app(app)
    side_pool = _side_pool(app)
    held = side_pool.get_connection()
    answers: list[dict[str, object]] = []
    waiting = threading.Thread(target=lambda: answers.append(dict(redis_pool.health(app))))
    waiting.start()
    try:
        wait_until(lambda: side_pool._wait.waiters, 10, "the health check to wait for the side connection")
    finally:
        side_pool.release(held)
        waiting.join(30)
    assert not waiting.is_alive()
    assert [(answer["ok"], answer["timeouts"]) for answer in answers] == [(True, 0)]
    assert (redis_pool.stats(app)["waits"], redis_pool.stats(app)["timeouts"]) == (0, 0)


def _side_pool(app: Flask) -> SidePool:
    """The pool of the connection outside the pool, which the publisher and health checks share."""
    return cast(SidePool, cast(Redis, pools_of(app).publisher.side).connection_pool)
