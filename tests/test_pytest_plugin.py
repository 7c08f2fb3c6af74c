"""The pytest plugin, as a user's suite meets it: run in a pytest of its own (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest
from flask import Flask
from flask_redispool import RedisPool

redis_pool = RedisPool()


def make_app(url):
    app = Flask("user_app")
    app.config.update(REDIS_URL=url, REDIS_STATS_INTERVAL=0)
    redis_pool.init_app(app)
    return app


def test_fake(redispool_fake_url, redispool_watch):
    app = redispool_watch(make_app(redispool_fake_url))
    with app.app_context():
        assert redis_pool.client.incr("n") == 1


def test_a_leak_is_reported(redispool_fake_url, redispool_watch):
    app = redispool_watch(make_app(redispool_fake_url))
    redis_pool.get_pool(app).get_connection()  # never given back


def test_real(redispool_url):
    with make_app(redispool_url).app_context():
        redis_pool.client.set("left-over", 1)


def test_real_is_flushed_between_tests(redispool_url):
    with make_app(redispool_url).app_context():
        assert redis_pool.client.get("left-over") is None
"""


def test_fixtures_fake_real_and_leak_watch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_leak_is_reported*",
            "*Redis connections still checked out on app 'user_app': REDIS: 1 sync, 0 async*",
        ]
    )


def test_an_unrelated_suite_starts_no_server(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
from flask_redispool import testing

def refuse(*args, **kwargs):
    raise AssertionError("a redis-server was started for a suite that asked for none")

testing.RedisServer.start = refuse
"""
    )
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)  # the conftest's trap for a server start was not sprung


FIXTURE_ORDER_TESTS = """
import pytest
from flask import Flask
from flask_redispool import RedisPool

redis_pool = RedisPool()


@pytest.fixture
def app(redispool_url):
    app = Flask("user_app")
    app.config.update(REDIS_URL=redispool_url, REDIS_STATS_INTERVAL=0)
    redis_pool.init_app(app)
    yield app
    redis_pool.close(app)  # torn down before a watch asked for earlier


@pytest.fixture
def subscriber(app):
    with app.app_context():
        pubsub = redis_pool.client.pubsub()
        pubsub.subscribe("news")
        yield pubsub
        pubsub.close()  # given back at teardown, before the app closes: no leak


def test_leak_app_first(app, redispool_watch):
    redis_pool.get_pool(redispool_watch(app)).get_connection()  # never given back


def test_leak_watch_first(redispool_watch, app):
    redis_pool.get_pool(redispool_watch(app)).get_connection()  # never given back


def test_clean_watch_first(redispool_watch, app, subscriber):
    redispool_watch(app)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"


def test_clean_app_first(app, subscriber, redispool_watch):
    redispool_watch(app)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"
"""


def test_the_leak_watch_does_not_depend_on_fixture_order(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order=FIXTURE_ORDER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=4, errors=2)
    leak = "*Redis connections still checked out on app 'user_app': REDIS: 1 sync, 0 async*"
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leak_app_first*", leak])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leak_watch_first*", leak])
    assert "ERROR at teardown of test_clean" not in result.stdout.str()
