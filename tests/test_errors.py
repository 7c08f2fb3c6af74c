"""Errors a user meets inside a view name our config keys and the fix, against real servers."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, TimeoutError

from flask_redispool import BlockingCommandError, PoolExhaustedError, RedisPool
from flask_redispool.testing import RedisServer, free_port

from .conftest import PASSWORD, calls, notes


@pytest.mark.parametrize(
    ("name", "command", "wait"),
    [
        ("blpop", lambda client: client.blpop(["jobs"], timeout=5), "up to 5 s"),
        ("brpop", lambda client: client.brpop(["jobs"], timeout=0), "forever (timeout 0)"),
        ("blmove", lambda client: client.blmove("a", "b", timeout=2), "up to 2 s"),
        ("bzpopmin", lambda client: client.bzpopmin(["z"], timeout=1), "up to 1 s"),
        ("xread", lambda client: client.xread({"stream": "0"}, block=3000), "up to 3 s"),
        ("wait", lambda client: client.wait(1, 1000), "up to 1 s"),
    ],
)
def test_a_blocking_command_longer_than_the_socket_timeout_is_refused_before_it_is_sent(
    app: Flask, redis_pool: RedisPool, server: Redis, name: str, command: Callable[[object], object], wait: str
) -> None:
    with app.app_context():
        redis_pool.client.ping()
        sent_before = calls(server, name)
        with pytest.raises(BlockingCommandError) as raised:
            command(redis_pool.client)
        # Refused at once: the server never saw it (sent, it would have waited out the socket timeout).
        assert calls(server, name) == sent_before
        assert redis_pool.client.ping()  # the connection is clean
    message = str(raised.value)
    assert f"may wait {wait} on the server, longer than REDIS_SOCKET_TIMEOUT=0.5 s allows" in message
    assert "with redis_pool.blocking(" in message
    assert redis_pool.stats(app)["in_use"] == 0


def test_blocking_commands_within_the_socket_timeout_or_inside_blocking_are_sent(
    app: Flask, redis_pool: RedisPool
) -> None:
    with app.app_context():
        assert redis_pool.client.blpop(["jobs"], timeout=0.1) is None
        assert redis_pool.client.xread({"stream": "0"}) == []  # XREAD without BLOCK waits for nothing
        with redis_pool.blocking(1) as client:
            assert client.blpop(["jobs"], timeout=1) is None
            assert client.xread({"stream": "$"}, block=200) == []


def test_an_async_blocking_command_is_refused_too(app: Flask, redis_pool: RedisPool) -> None:
    @app.get("/pop")
    async def pop() -> str:
        try:
            await redis_pool.async_client.blpop(["jobs"], timeout=5)
        except BlockingCommandError as exc:
            return str(exc)
        return "sent"

    assert "may wait up to 5 s on the server" in app.test_client().get("/pop").text


def test_a_refused_connection_names_the_key_and_the_worst_case(
    make_app: Callable[..., Flask], redis_pool: RedisPool
) -> None:
    port = free_port()
    app = make_app(REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    redis_pool.init_app(app)
    worst = redis_pool.settings(app).worst_case_seconds
    with app.app_context(), pytest.raises(ConnectionError) as raised:
        redis_pool.client.get("k")
    note = notes(raised.value)
    assert f"could not reach Redis at REDIS_URL (redis://:***@127.0.0.1:{port}/0)" in note
    assert f"gives up after at most {worst:g} s" in note
    assert PASSWORD not in note


@pytest.mark.parametrize(
    "credentials",
    ["", ":wrong-password@", "someone:wrong-password@"],
)
def test_missing_or_wrong_credentials_say_to_put_them_in_the_url(
    make_app: Callable[..., Flask], auth_server: RedisServer, redis_pool: RedisPool, credentials: str
) -> None:
    app = make_app(REDIS_URL=f"redis://{credentials}127.0.0.1:{auth_server.port}/0")
    redis_pool.init_app(app)
    with app.app_context(), pytest.raises(RedisError) as raised:
        redis_pool.client.get("k")
    assert isinstance(raised.value, AuthenticationError)
    assert "wants valid credentials: give them in REDIS_URL as redis://user:password@host" in notes(raised.value)
    assert "wrong-password" not in notes(raised.value)


def test_pool_exhausted_comes_without_redis_py_internals(make_app: Callable[..., Flask], redis_url: str) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.05)
    redis_pool = RedisPool(app)
    pool = redis_pool.get_pool(app)
    held = pool.get_connection()
    try:
        with app.app_context(), pytest.raises(PoolExhaustedError) as raised:
            redis_pool.client.get("k")
    finally:
        pool.release(held)
    error = raised.value
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    shown = "".join(traceback.format_exception(error))
    assert "During handling of the above exception" not in shown
    assert "REDIS_MAX_CONNECTIONS" in shown


@contextlib.contextmanager
def writes_paused(url: str) -> Iterator[None]:
    """The server holds every write command (``CLIENT PAUSE … WRITE``) for the block."""
    observer = Redis.from_url(url)
    observer.client_pause(5000, all=False)
    try:
        yield
    finally:
        observer.client_unpause()
        observer.close()


STALLED = "within REDIS_SOCKET_TIMEOUT=0.5 s: the server is stalled or overloaded"
WAITS = (
    "within REDIS_SOCKET_TIMEOUT=0.5 s. BLPOP waits on the server on purpose: "
    "run it in 'with redis_pool.blocking(seconds) as client:'"
)


@pytest.mark.parametrize(
    ("command", "advice"),
    [
        (lambda client: client.incr("hits"), STALLED),
        (lambda client: client.blpop(["jobs"], timeout=0.4), WAITS),
        (lambda client: client.pipeline().incr("hits").execute(), STALLED),
    ],
    ids=["incr", "blpop", "pipeline"],
)
def test_a_timeout_note_gives_the_advice_that_fits_the_command(
    make_app: Callable[..., Flask],
    own_server: RedisServer,
    redis_pool: RedisPool,
    command: Callable[[Redis], object],
    advice: str,
) -> None:
    """Only a command that waits on the server on purpose is sent to ``blocking()``; a write
    that met a stalled server is not, even on a connection that ran a BLPOP before it."""
    app = make_app(REDIS_URL=own_server.url, REDIS_MAX_CONNECTIONS=1, REDIS_RETRIES=0)
    redis_pool.init_app(app)
    with app.app_context():
        assert redis_pool.client.blpop(["jobs"], timeout=0.1) is None  # connected; its last command waited
        with writes_paused(own_server.url), pytest.raises(TimeoutError) as raised:
            command(redis_pool.client)
    note = notes(raised.value)
    assert advice in note
    assert ("blocking(" in note) is (advice == WAITS)
