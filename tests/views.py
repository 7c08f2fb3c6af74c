"""Views that take a connection and then fail or forget to give it back.

Shared by the teardown tests (a few requests each) and the fault tests (thousands).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from flask_redispool import RedisPool


class Boom(Exception):
    """Raised by test views after they took a connection."""


def client_for(app: Flask, redis_pool: RedisPool, view: Callable[[RedisPool], None]) -> FlaskClient:
    """A test client for ``app`` serving ``view`` at ``/view``; a raising view answers 500."""

    def serve() -> str:
        view(redis_pool)
        return ""

    app.add_url_rule("/view", "view", serve)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    return app.test_client()


def leave_a_transaction(redis_pool: RedisPool) -> None:
    pipe = redis_pool.client.pipeline()
    pipe.watch("guarded")
    pipe.multi()
    pipe.incr("guarded-counter")
    raise Boom


def leave_a_subscription(redis_pool: RedisPool) -> None:
    pubsub = redis_pool.client.pubsub()
    pubsub.subscribe("news")
    raise Boom


def leave_a_raw_connection(redis_pool: RedisPool) -> None:
    manager = redis_pool.connection()
    connection = manager.__enter__()  # never exited, as a crashed view would
    connection.send_command("GET", "guarded")  # its reply is never read
    raise Boom


def raise_in_a_connection_block(redis_pool: RedisPool) -> None:
    with redis_pool.connection() as connection:
        connection.send_command("GET", "guarded")
        raise Boom


def raise_in_a_pipeline_block(redis_pool: RedisPool) -> None:
    with redis_pool.pipeline() as pipe:
        pipe.watch("guarded")
        pipe.multi()
        pipe.set("guarded", "from the failed view")
        raise Boom


def raise_after_a_command(redis_pool: RedisPool) -> None:
    redis_pool.client.incr("counter")
    raise Boom


def leave_an_open_pipeline_without_raising(redis_pool: RedisPool) -> None:
    pipe = redis_pool.client.pipeline()
    pipe.watch("guarded")


def leave_a_monitor(redis_pool: RedisPool) -> None:
    monitor = redis_pool.client.monitor().__enter__()  # MONITOR sent, never exited
    assert monitor.connection is not None
    raise Boom


def raise_in_a_monitor_block(redis_pool: RedisPool) -> None:
    with redis_pool.client.monitor():
        raise Boom


def leave_a_single_connection_client(redis_pool: RedisPool) -> None:
    pinned = redis_pool.client.client()  # redis-py's client pinned to one connection
    pinned.set("guarded", "from the failed view")
    raise Boom  # the traceback keeps ``pinned`` alive: only teardown can give its connection back


LEAKY_VIEWS = [
    leave_a_transaction,
    leave_a_subscription,
    leave_a_raw_connection,
    raise_in_a_connection_block,
    raise_in_a_pipeline_block,
    raise_after_a_command,
    leave_an_open_pipeline_without_raising,
    leave_a_monitor,
    raise_in_a_monitor_block,
    leave_a_single_connection_client,
]
