"""A password given to flask-redispool never shows up in anything it produces."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask
from redis.exceptions import RedisError

from flask_redispool import RedisPool
from flask_redispool.testing import RedisServer

from .conftest import PASSWORD
from .test_cli import _closed_port


def _outputs_of(app: Flask, redis_pool: RedisPool) -> list[str]:
    with app.app_context():
        client = redis_pool.client
        client.set("k", "v")
        with redis_pool.pipeline() as pipe, redis_pool.connection() as connection:
            seen = [repr(pipe), repr(connection), repr(client.pubsub())]
        seen += [repr(client), repr(redis_pool.get_pool()), repr(redis_pool.settings()), str(redis_pool.stats())]
    runner = app.test_cli_runner()
    for args in (["redis-stats"], ["redis-stats", "--json"], ["redis-ping"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        seen.append(result.output)
    return [*seen, repr(redis_pool)]


@pytest.mark.parametrize(
    "config",
    [
        {"REDIS_URL": "redis://:{password}@127.0.0.1:{port}/0"},
        {"REDIS_URL": "redis://default:{password}@127.0.0.1:{port}/0"},
        {"REDIS_URL": "redis://127.0.0.1:{port}/0", "REDIS_OPTIONS": {"password": "{password}"}},
    ],
)
def test_password_is_never_shown(
    make_app: Callable[..., Flask],
    auth_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, object],
) -> None:
    def fill(value: object) -> object:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return str(value).format(password=PASSWORD, port=auth_server.port)

    caplog.set_level(logging.DEBUG)
    app = make_app(**{key: fill(value) for key, value in config.items()})
    redis_pool = RedisPool(app)
    outputs = _outputs_of(app, redis_pool)
    outputs += [record.getMessage() for record in caplog.records]
    assert all(PASSWORD not in text for text in outputs)
    assert any("***" in text for text in outputs) == ("{password}@" in str(config["REDIS_URL"]))


def test_errors_for_a_wrong_password_or_a_dead_server_hide_it(
    make_app: Callable[..., Flask], auth_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = make_app(REDIS_URL=f"redis://:wrong-{PASSWORD}@127.0.0.1:{auth_server.port}/0")
    dead = make_app(REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0")
    texts = []
    for app in (wrong, dead):
        redis_pool = RedisPool(app)
        with app.app_context(), pytest.raises(RedisError) as info:
            redis_pool.client.ping()
        texts += [str(info.value), repr(info.value)]
        for args in (["redis-stats"], ["redis-ping"]):
            result = app.test_cli_runner().invoke(args=args)
            assert result.exit_code == 1
            texts.append(result.output)
    assert "invalid" in texts[0].lower() or "auth" in texts[0].lower()
    texts += [record.getMessage() for record in caplog.records]
    assert all(PASSWORD not in text for text in texts)
