"""A write is never run twice because of our retry; reads and refused connects are retried.

Against real servers of the tests' own: each case counts the executions on the server
(a counter the command increments, or ``INFO commandstats``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import TimeoutError

from flask_redispool import MayHaveRunError, RedisPool
from flask_redispool._commands import command_kind
from flask_redispool._connection import may_have_run
from flask_redispool.testing import RedisServer

from .conftest import notes

SOCKET_TIMEOUT = 0.3
SLOW = 0.45  # a slow command's time on the server: past one socket timeout, within two (the retry's)
# INCR, then keep the server busy for SLOW seconds: the reply comes after our timeout.
SLOW_INCR = f"""
redis.call('INCR', KEYS[1])
local start = redis.call('TIME')
while true do
    local now = redis.call('TIME')
    if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > {SLOW * 1_000_000:.0f} then break end
end
return 1
"""


@pytest.fixture
def observer(own_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(own_server.url, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def app(make_app: Callable[..., Flask], own_server: RedisServer, redis_pool: RedisPool) -> Flask:
    app = make_app(REDIS_URL=own_server.url, REDIS_SOCKET_TIMEOUT=SOCKET_TIMEOUT, REDIS_RETRIES=1)
    redis_pool.init_app(app)
    return app


def settle(observer: Redis) -> None:
    """Wait until the server has finished the slow command (it answers again)."""
    observer.ping()


def calls(observer: Redis, command: str) -> int:
    stats = observer.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_a_slow_write_script_runs_once_and_says_it_was_not_retried(
    app: Flask, redis_pool: RedisPool, observer: Redis
) -> None:
    with app.app_context(), pytest.raises(TimeoutError) as raised:
        redis_pool.client.eval(SLOW_INCR, 1, "counter")
    settle(observer)
    assert observer.get("counter") == b"1"  # redis-py's Retry alone would have made it 2
    assert may_have_run(raised.value)
    assert isinstance(raised.value, MayHaveRunError)  # and still redis-py's TimeoutError
    assert "not retried: it may already have run" in notes(raised.value)
    assert redis_pool.stats(app)["in_use"] == 0


def test_a_slow_exec_runs_its_transaction_once(app: Flask, redis_pool: RedisPool, observer: Redis) -> None:
    with app.app_context(), redis_pool.pipeline() as pipe:
        pipe.incr("counter")
        pipe.execute_command("DEBUG", "SLEEP", str(SLOW))
        with pytest.raises(TimeoutError):
            pipe.execute()
    settle(observer)
    assert observer.get("counter") == b"1"
    assert calls(observer, "exec") == 1


def test_a_slow_read_is_retried(app: Flask, redis_pool: RedisPool, observer: Redis) -> None:
    observer.set("key", "value")
    before = calls(observer, "get")
    blocker = threading.Thread(target=observer.execute_command, args=("DEBUG", "SLEEP", str(SLOW)))
    with app.app_context():
        redis_pool.client.ping()  # connected before the server goes busy
        blocker.start()
        time.sleep(0.05)  # DEBUG SLEEP has begun
        try:
            assert redis_pool.client.get("key") == b"value"  # the first try times out, the retry answers
        finally:
            blocker.join(10)
    assert calls(observer, "get") - before == 2  # sent twice: the timed-out try ran, and the retry


def test_a_pipeline_of_reads_is_retried(app: Flask, redis_pool: RedisPool, observer: Redis) -> None:
    observer.set("key", "value")
    blocker = threading.Thread(target=observer.execute_command, args=("DEBUG", "SLEEP", str(SLOW)))
    with app.app_context():
        redis_pool.client.ping()
        blocker.start()
        time.sleep(0.05)
        try:
            with redis_pool.pipeline(transaction=False) as pipe:
                pipe.get("key")
                pipe.exists("key")
                assert pipe.execute() == [b"value", 1]
        finally:
            blocker.join(10)


def test_a_write_is_retried_when_the_connection_was_refused(
    make_app: Callable[..., Flask], own_server: RedisServer, redis_pool: RedisPool
) -> None:
    """Refused while connecting: nothing was sent, so the write is retried, and runs once."""
    app = make_app(REDIS_URL=own_server.url, REDIS_RETRIES=10)  # the most: >= 0.35 s of jittered backoff
    redis_pool.init_app(app)
    own_server.stop()
    restart = threading.Timer(0.05, own_server.start)
    restart.start()
    try:
        with app.app_context():
            assert redis_pool.client.incr("counter") == 1  # refused first, then it came up
    finally:
        restart.join(10)
    observer = Redis.from_url(own_server.url)
    try:
        assert observer.get("counter") == b"1"
    finally:
        observer.close()


def test_an_async_slow_write_runs_once(app: Flask, redis_pool: RedisPool, observer: Redis) -> None:
    @app.get("/slow")
    async def slow() -> str:
        try:
            await redis_pool.async_client.eval(SLOW_INCR, 1, "counter")
        except TimeoutError as exc:
            return f"timeout, may have run: {may_have_run(exc)}"
        return "no timeout"

    assert app.test_client().get("/slow").text == "timeout, may have run: True"
    settle(observer)
    assert observer.get("counter") == b"1"


@pytest.mark.parametrize(
    ("args", "repeatable"),
    [
        (("GET", "k"), True),
        (("get", "k"), True),
        ((b"MGET", "a", "b"), True),
        (("CLIENT LIST",), True),
        (("EVAL_RO", "return 1", 0), True),
        (("INCR", "k"), False),
        (("SET", "k", "v"), False),
        (("EVAL", "return 1", 0), False),  # a script may write: sent once
        (("RPUSH", "q", "job"), False),
        (("NO-SUCH-COMMAND",), False),
    ],
)
def test_only_commands_safe_to_repeat_are_repeatable(args: tuple[object, ...], repeatable: bool) -> None:
    assert command_kind(args[0]).repeatable is repeatable


def test_a_timeout_while_a_new_connection_names_itself_is_not_a_write(make_app: Callable[..., Flask]) -> None:
    """Over RESP2 (redis-py 7's default) the first bytes a new connection sends are our
    CLIENT SETNAME: a timeout there comes before the write was sent, so it may be retried."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app = make_app(REDIS_URL=url, REDIS_OPTIONS={"protocol": 2}, REDIS_SOCKET_TIMEOUT=0.1, REDIS_RETRIES=0)
        redis_pool = RedisPool(app)
        with app.app_context(), pytest.raises(TimeoutError) as raised:
            redis_pool.client.set("key", 1)
    assert not may_have_run(raised.value)
    assert "not retried" not in notes(raised.value)
