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
