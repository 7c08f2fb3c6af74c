"""A write is never run twice because of our retry; reads and refused connects are retried.

Against real servers of the tests' own: each case counts the executions on the server
(a counter the command increments, or ``INFO commandstats``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from redis import Connection, Redis
from redis.asyncio import Connection as AsyncConnection
from redis.exceptions import TimeoutError

from flask_redispool import MayHaveRunError, RedisPool
from flask_redispool._commands import Kind, Transaction, command_kind, judge_send, packed_kinds
from flask_redispool._config import MAX_RETRIES, load_settings
from flask_redispool._connection import ConnectionPolicy, may_have_run, pool_connection_class
from flask_redispool.testing import RedisServer

from .conftest import calls, notes, skip_before

pytestmark = pytest.mark.servers

SOCKET_TIMEOUT = 0.3
SLOW = 0.45  # a slow command's time on the server: past one socket timeout, within two (the retry's)
# Keep the server busy for SLOW seconds: the reply comes after our timeout. A read (EVAL_RO).
# Redis 8 and Valkey give a script the same TIME throughout (it would loop forever): there
# it counts the server's CPU time (os.clock, absent before Redis 8), at least as long.
SLOW_READ = f"""
local os = rawget(_G, 'os')
local function now()
    if os then return os.clock() * 1000000 end
    local time = redis.call('TIME')
    return time[1] * 1000000 + time[2]
end
local start = now()
while now() - start <= {SLOW * 1_000_000:.0f} do end
return 1
"""
# INCR, then as SLOW_READ.
SLOW_INCR = "redis.call('INCR', KEYS[1])" + SLOW_READ


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


@pytest.fixture
def patient_app(make_app: Callable[..., Flask], own_server: RedisServer, redis_pool: RedisPool) -> Flask:
    """As ``app``, with the most retries: eleven tries of at least ``SOCKET_TIMEOUT`` each
    outlast :data:`PAUSE`."""
    app = make_app(REDIS_URL=own_server.url, REDIS_SOCKET_TIMEOUT=SOCKET_TIMEOUT, REDIS_RETRIES=MAX_RETRIES)
    redis_pool.init_app(app)
    return app


#: How long the server holds every command (``CLIENT PAUSE``, in force once the command
#: returns): a read sent within 1.2 s of it, however slow the machine, times out first.
PAUSE = 1.5


def connection_id(redis_pool: RedisPool) -> int:
    """The server's id of the pool's one connection."""
    return int(redis_pool.client.client_id())


def test_a_slow_read_is_retried(patient_app: Flask, redis_pool: RedisPool, observer: Redis) -> None:
    observer.set("key", "value")
    with patient_app.app_context():
        first = connection_id(redis_pool)  # connected before the server holds commands
        observer.client_pause(int(PAUSE * 1000), all=True)
        assert redis_pool.client.get("key") == b"value"  # the first try times out, a retry is answered
        assert connection_id(redis_pool) != first  # the timed-out connection was dropped


@pytest.mark.parametrize("transaction", [False, True], ids=["batch", "transaction"])
def test_a_pipeline_of_reads_is_retried(
    patient_app: Flask, redis_pool: RedisPool, observer: Redis, transaction: bool
) -> None:
    """Also a transaction (MULTI … EXEC in one batch): sent again whole, it runs again whole."""
    observer.set("key", "value")
    with patient_app.app_context():
        first = connection_id(redis_pool)
        observer.client_pause(int(PAUSE * 1000), all=True)
        with redis_pool.pipeline(transaction=transaction) as pipe:
            pipe.get("key")
            pipe.exists("key")
            assert pipe.execute() == [b"value", 1]
        assert connection_id(redis_pool) != first


@pytest.mark.parametrize("transaction", [False, True], ids=["batch", "transaction"])
def test_a_pipeline_of_a_library_sharing_the_pool_is_judged_by_its_commands(
    patient_app: Flask, redis_pool: RedisPool, observer: Redis, transaction: bool
) -> None:
    """A library's own ``redis.Redis(connection_pool=...)`` (Flask-Caching, RQ, Flask-Limiter)
    makes redis-py's pipeline, not ours: its reads are retried, its write runs once."""
    observer.set("key", "value")
    shared = Redis(connection_pool=redis_pool.get_pool(patient_app))
    first = int(shared.client_id())
    observer.client_pause(int(PAUSE * 1000), all=True)
    with shared.pipeline(transaction=transaction) as pipe:
        pipe.get("key")
        pipe.exists("key")
        assert pipe.execute() == [b"value", 1]
    assert int(shared.client_id()) != first
    with shared.pipeline(transaction=transaction) as pipe:
        pipe.get("key")
        pipe.incr("counter")
        pipe.execute_command("DEBUG", "SLEEP", str(SLOW))
        with pytest.raises(MayHaveRunError):
            pipe.execute()
    settle(observer)
    assert observer.get("counter") == b"1"
    assert calls(observer, "incrby") == 1


@pytest.mark.parametrize(("command", "may_write"), [(("GET", "key"), False), (("INCR", "counter"), True)])
def test_a_command_sent_packed_is_judged_by_its_name(
    own_server: RedisServer, command: tuple[str, ...], may_write: bool
) -> None:
    """redis.asyncio's cluster nodes send each command through ``send_packed_command``, not
    ``send_command``: a read that timed out there may be sent again, a write may have run."""
    observer = Redis.from_url(own_server.url, socket_timeout=10)
    connection_class = pool_connection_class(
        AsyncConnection,
        ConnectionPolicy(load_settings({"REDIS_URL": own_server.url}, "REDIS", "test")),
        asynchronous=True,
    )

    async def send() -> BaseException:
        connection = connection_class(port=own_server.port, socket_timeout=SOCKET_TIMEOUT)
        await connection.connect()
        observer.client_pause(int(PAUSE * 1000), all=True)
        try:
            await connection.send_packed_command(connection.pack_command(*command))
            with pytest.raises(TimeoutError) as raised:
                await connection.read_response()
            return raised.value
        finally:
            await connection.disconnect()

    try:
        assert may_have_run(asyncio.run(send())) is may_write
    finally:
        observer.client_unpause()
        observer.close()


@contextmanager
def one_connection(redis_pool: RedisPool, how: str) -> Iterator[Callable[..., Any]]:
    """Send a command and read its reply, one at a time, on one connection: a client's
    ``client()`` or a raw ``connection()``."""
    if how == "client":
        yield redis_pool.client.client().execute_command
        return
    with redis_pool.connection() as connection:

        def send(*args: Any) -> Any:
            connection.send_command(*args)
            return connection.read_response()

        yield send


@pytest.mark.parametrize("how", ["client", "connection"])
def test_a_transaction_sent_command_by_command_runs_its_exec_once(
    app: Flask, redis_pool: RedisPool, observer: Redis, how: str
) -> None:
    """MULTI, INCR, a slow command, EXEC, each sent alone: the lost EXEC reply is not sent
    again on a new connection, where it would fail with "EXEC without MULTI" after the
    INCR ran; the caller learns that it may have run."""
    with app.app_context(), one_connection(redis_pool, how) as send:
        for args in (("MULTI",), ("INCR", "counter"), ("DEBUG", "SLEEP", str(SLOW))):
            send(*args)
        with pytest.raises(MayHaveRunError) as raised:
            send("EXEC")
    assert isinstance(raised.value, TimeoutError)
    assert "not retried: it may already have run" in notes(raised.value)
    settle(observer)
    assert observer.get("counter") == b"1"
    assert calls(observer, "exec") == 1
    assert redis_pool.stats(app)["in_use"] == 0


def test_an_async_transaction_sent_command_by_command_runs_its_exec_once(
    app: Flask, redis_pool: RedisPool, observer: Redis
) -> None:
    @app.get("/transaction")
    async def transaction() -> str:
        client = redis_pool.async_client.client()
        for args in (("MULTI",), ("INCR", "counter"), ("DEBUG", "SLEEP", str(SLOW))):
            await client.execute_command(*args)
        try:
            await client.execute_command("EXEC")
        except MayHaveRunError as exc:
            return f"may have run: {type(exc).__name__}"
        return "no timeout"

    assert app.test_client().get("/transaction").text == "may have run: MayHaveRunTimeoutError"
    settle(observer)
    assert observer.get("counter") == b"1"
    assert calls(observer, "exec") == 1


@pytest.mark.parametrize(
    "commands",
    [
        [("MULTI",), ("EVAL_RO", SLOW_READ, 0), ("EXEC",)],  # the slow read runs at EXEC
        [("WATCH", "counter"), ("EVAL_RO", SLOW_READ, 0)],
    ],
    ids=["multi", "watch"],
)
def test_a_read_that_continues_a_transaction_of_its_connection_is_not_sent_again(
    app: Flask, redis_pool: RedisPool, observer: Redis, commands: list[tuple[object, ...]], own_server: RedisServer
) -> None:
    """After MULTI or WATCH sent alone, a new connection would not have the transaction (a
    retried EXEC fails, a retried read loses the WATCH): even a read is sent once. It
    changed nothing, so it is no ``MayHaveRunError``."""
    skip_before(own_server, (7, 0), "EVAL_RO")
    with app.app_context():
        client = redis_pool.client.client()
        for args in commands[:-1]:
            client.execute_command(*args)
        with pytest.raises(TimeoutError) as raised:
            client.execute_command(*commands[-1])
    settle(observer)
    assert calls(observer, "eval_ro") == 1
    assert not may_have_run(raised.value)
    assert "not retried: it continued a transaction (MULTI or WATCH)" in notes(raised.value)


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


NONE, WATCHING, QUEUING, QUEUED_A_WRITE = Transaction


@pytest.mark.parametrize(
    ("before", "sent", "may_write", "in_transaction", "after"),
    [
        (NONE, "GET", False, False, NONE),
        (NONE, "INCR", True, False, NONE),
        # redis-py's transaction pipeline: one batch, repeated whole when every command is safe
        (NONE, "MULTI GET EXISTS EXEC", False, False, NONE),
        (NONE, "MULTI GET INCR EXEC", True, False, NONE),
        (NONE, "MULTI INCR DISCARD", False, False, NONE),
        (NONE, "GET INCR", True, False, NONE),  # a batch without a transaction
        # sent one at a time
        (NONE, "MULTI", False, False, QUEUING),
        (QUEUING, "GET", False, True, QUEUING),
        (QUEUING, "INCR", False, True, QUEUED_A_WRITE),  # queued: runs at EXEC
        (QUEUED_A_WRITE, "GET", False, True, QUEUED_A_WRITE),
        (QUEUING, "EXEC", False, True, NONE),
        (QUEUED_A_WRITE, "EXEC", True, True, NONE),
        (QUEUED_A_WRITE, "DISCARD", False, True, NONE),
        (NONE, "WATCH", False, False, WATCHING),
        (WATCHING, "GET", False, True, WATCHING),
        (WATCHING, "INCR", True, True, WATCHING),
        (WATCHING, "MULTI", False, True, QUEUING),
        (WATCHING, "MULTI INCR EXEC", True, True, NONE),  # redis-py's pipeline after watch()
        (WATCHING, "UNWATCH", False, True, NONE),
        (QUEUING, "UNWATCH", False, True, QUEUING),  # queued
        (WATCHING, "EXEC", False, True, WATCHING),  # refused: EXEC without MULTI
        (QUEUING, "MULTI", False, True, QUEUING),  # refused: nested
        (QUEUED_A_WRITE, "RESET", False, True, NONE),
        (NONE, "RESET", False, False, NONE),
    ],
)
def test_what_a_send_means_depends_on_the_transaction_it_continues(
    before: Transaction, sent: str, may_write: bool, in_transaction: bool, after: Transaction
) -> None:
    send = judge_send(before, [command_kind(name) for name in sent.split()])
    assert (send.may_write, send.in_transaction, send.transaction) == (may_write, in_transaction, after)
    assert send.repeatable is (not may_write and not in_transaction)


def test_a_send_of_unknown_commands_is_sent_once() -> None:
    assert judge_send(NONE, None).may_write


def kinds_of(*names: str) -> list[Kind]:
    return [command_kind(name) for name in names]


@pytest.mark.parametrize(
    ("packed", "kinds"),
    [
        ([b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"], kinds_of("GET", "PING")),
        (b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n", kinds_of("GET")),  # a library's spelling
        (b"*3\r\n$6\r\nCONFIG\r\n$3\r\nget\r\n$1\r\nx\r\n", kinds_of("CONFIG GET")),
        (b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n", kinds_of("CONFIG SET")),
        (b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$1\r\nn\r\n", kinds_of("CLIENT SETNAME")),
        (b"*1\r\n$6\r\nOBJECT\r\n", kinds_of("OBJECT")),
        # a large value is a chunk of its own, its CRLF begins the next
        (
            [b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\n", memoryview(b"\r\n*1"), b"\r\n*1\r\n$4\r\nPING\r\n"],
            kinds_of("SET", "PING"),
        ),
        ([], None),
        (b"PING\r\n", None),  # inline, not RESP
        (b"*2\r\n$3\r\nGET\r\n$3\r\nke", None),  # cut short
        ([b"*2\r\n$3\r\nGET\r\n$3\r\nke", b"y\r\n"], kinds_of("GET")),
        ([b"*2\r\n$3\r\nGE", b"T\r\n$1\r\nk\r\n"], None),  # the name cut between chunks
        (b"*2\r\n$3\r\nGET\r\n$-9\r\n", None),
        (b"*0\r\n", None),
        (b"*2\r\n+3\r\nGET\r\n$1\r\nk\r\n", None),
        ("*1\r\n$4\r\nPING\r\n", None),
    ],
)
def test_a_packed_batch_is_read_from_its_bytes(packed: Any, kinds: list[Kind] | None) -> None:
    """Whatever cannot be read whole is unknown, and so sent once (never judged safe)."""
    assert packed_kinds(packed) == kinds


def test_a_batch_packed_by_redis_py_is_read_as_it_was_queued() -> None:
    commands = [
        ("MULTI",),
        ("INCRBY", "k", 1),
        ("SET", "large", b"x" * 7000),
        ("GET", "k"),
        ("CONFIG GET", "x"),
        ("EXEC",),
    ]
    packed = Connection().pack_commands(commands)
    assert len(packed) > 1  # cut around the large value
    assert packed_kinds(packed) == kinds_of(*(str(command[0]) for command in commands))


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


@pytest.mark.parametrize("base_name", ["Connection", "SSLConnection", "UnixDomainSocketConnection", "Sentinel", "fake"])
def test_each_connection_class_sends_and_reads_through_its_base(base_name: str) -> None:
    """A pool's connection class finds its base class's send and read once, when it is made
    (every command calls both): they are the base's own, also in a subclass of it."""
    import redis
    from fakeredis import FakeRedisConnection
    from redis.sentinel import SentinelManagedConnection

    bases: dict[str, type[Any]] = {"Sentinel": SentinelManagedConnection, "fake": FakeRedisConnection}
    base = bases.get(base_name) or getattr(redis, base_name)
    made = pool_connection_class(base, SimpleNamespace(breakers=SimpleNamespace(shared=None)))  # type: ignore[arg-type]
    classes: tuple[Any, ...] = (made, type("Sub", (made,), {}))
    for cls in classes:
        assert cls._base_send_packed_command is base.send_packed_command
        assert cls._base_read_response is base.read_response
