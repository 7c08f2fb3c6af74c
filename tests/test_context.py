"""How flask-redispool finds the current app and its ``g``: through Flask's and Quart's
public proxies (``current_app``, ``g``, ``has_app_context()``), Flask's and Quart's apps
alike, in one process."""

from __future__ import annotations

import asyncio

import flask
import pytest
import quart
from flask import Flask

from flask_redispool import RedisPool, _context


def test_the_current_flask_app_and_its_g_are_found() -> None:
    app, other = Flask("first"), Flask("second")
    with pytest.raises(RuntimeError):
        _context.app_here()
    assert _context.g_here() is None
    with app.app_context():
        assert _context.app_here() is app
        assert _context.g_here() is flask.g._get_current_object()
        with other.app_context():  # the innermost context wins
            assert _context.app_here() is other
            assert _context.g_here() is flask.g._get_current_object()
        assert _context.app_here() is app
    assert _context.g_here() is None


async def _found_in_quart(app: quart.Quart) -> tuple[bool, bool]:
    async with app.app_context():
        return _context.app_here() is app, _context.g_here() is quart.g._get_current_object()


def test_quart_apps_are_found_beside_flask_apps() -> None:
    _context.watch_quart()
    flask_app, quart_app = Flask("flask-side"), quart.Quart("quart-side")
    assert asyncio.run(_found_in_quart(quart_app)) == (True, True)
    with flask_app.app_context():  # Flask's context is still found once Quart is watched
        assert _context.app_here() is flask_app
        assert _context.g_here() is flask.g._get_current_object()
    with pytest.raises(RuntimeError):
        _context.app_here()
    assert _context.g_here() is None


def test_one_redis_pool_serves_a_flask_and_a_quart_app_in_one_process(redis_url: str) -> None:
    redis_pool = RedisPool()
    flask_app, quart_app = Flask("flask-side"), quart.Quart("quart-side")
    for app in (flask_app, quart_app):
        app.config["REDIS_URL"] = redis_url
        redis_pool.init_app(app)
    try:

        async def in_quart() -> bool:
            async with quart_app.app_context():
                return redis_pool.client is redis_pool._state(quart_app).client

        assert asyncio.run(in_quart())
        with flask_app.app_context():
            assert redis_pool.client is redis_pool._state(flask_app).client
        with pytest.raises(RuntimeError, match=r"used outside an application context"):
            redis_pool.client  # noqa: B018
    finally:
        redis_pool.close(flask_app)
        redis_pool.close(quart_app)
