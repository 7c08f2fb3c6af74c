"""Streamed responses: what a view opens and hands to its stream stays usable until the
stream ends, and is given back then, however it ends; under the Flask test client and
under a real gunicorn whose client hangs up mid-stream."""

from __future__ import annotations

import gc
import http.client
import json
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask, Response, stream_with_context
from redis import Redis
from redis.client import PubSub
from redis.exceptions import WatchError
from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import ClosingIterator

from bench.loadgen import gunicorn
from flask_redispool import RedisPool
from flask_redispool._stats import group_client_list
from flask_redispool.testing import assert_nothing_held

from .conftest import our_connections, wait_until
from .views import Boom


def subscribers(server: Redis, channel: str = "news") -> int:
    count: int = server.pubsub_numsub(channel)[0][1]
    return count


def wait_subscribed(server: Redis, count: int = 1) -> None:
    wait_until(lambda: subscribers(server) == count, 10, f"{count} subscriber(s) of 'news'")


def messages(pubsub: PubSub, count: int, seconds: float = 5) -> Iterator[bytes]:
    """Up to ``count`` messages' data from ``pubsub``, within ``seconds``."""
    deadline = time.monotonic() + seconds
    received = 0
    while received < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            received += 1
            yield message["data"]


def serve_stream(app: Flask, redis_pool: RedisPool, stream: Callable[[PubSub], Iterator[bytes]]) -> None:
    """``/events``: a view that subscribes to ``news``, then streams ``ready`` and
    ``stream(pubsub)`` with ``stream_with_context``. (Werkzeug's test client reads the
    first chunk before it returns the response, as a server sends it at once.)"""

    @app.get("/events")
    def events() -> Response:
        pubsub = redis_pool.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("news")

        def body() -> Iterator[bytes]:
            yield b"ready\n"
            yield from stream(pubsub)

        return Response(stream_with_context(body()))


def test_a_streamed_pubsub_receives_every_message_then_is_given_back(
    app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    def stream(pubsub: PubSub) -> Iterator[bytes]:
        for data in messages(pubsub, 10):
            yield data + b"\n"

    serve_stream(app, redis_pool, stream)
    response = app.test_client().get("/events")  # the view has returned: the stream goes on
    try:
        wait_subscribed(server)
        assert redis_pool.stats(app)["in_use"] == 1
        for number in range(10):
            server.publish("news", str(number))
        assert response.get_data().split() == [b"ready", *(str(number).encode() for number in range(10))]
        assert_nothing_held(app)  # back when the stream ended, before the response is closed
    finally:
        response.close()
    wait_subscribed(server, 0)


def test_a_request_hands_over_what_it_holds_without_an_app_wide_hook(
    app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    """The first hold of a request registers the hand-over for that request only: the app has
    no ``after_request`` function of ours (a request that holds nothing runs none), and a
    streamed pubsub still lives until its stream ends."""
    assert not any(app.after_request_funcs.values())
    serve_stream(app, redis_pool, lambda pubsub: (data + b"\n" for data in messages(pubsub, 2)))
    response = app.test_client().get("/events")
    try:
        wait_subscribed(server)
        for number in range(2):
            server.publish("news", str(number))
        assert response.get_data().split() == [b"ready", b"0", b"1"]
        assert_nothing_held(app)
    finally:
        response.close()
    wait_subscribed(server, 0)


def test_a_stream_that_raises_gives_back_what_it_held(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    def stream(pubsub: PubSub) -> Iterator[bytes]:
        yield from messages(pubsub, 3)
        raise Boom

    serve_stream(app, redis_pool, stream)
    response = app.test_client().get("/events")
    try:
        wait_subscribed(server)
        for number in range(3):
            server.publish("news", str(number))
        with pytest.raises(Boom):
            response.get_data()
        assert_nothing_held(app)
    finally:
        response.close()
    wait_subscribed(server, 0)


def test_a_stream_closed_early_gives_back_what_the_view_and_the_stream_held(
    app: Flask, redis_pool: RedisPool, server: Redis
) -> None:
    """The client went away after two messages: the WSGI server closes the response."""
    still_subscribed = []

    def stream(pubsub: PubSub) -> Iterator[bytes]:
        pipe = redis_pool.client.pipeline()  # opened in the stream's own context, left open
        pipe.watch("seen")
        try:
            yield from messages(pubsub, 10)
        finally:
            still_subscribed.append(pubsub.subscribed)

    serve_stream(app, redis_pool, stream)
    response = app.test_client().get("/events")
    wait_subscribed(server)
    for number in range(10):
        server.publish("news", str(number))
    body = iter(response.response)
    assert [next(body) for _ in range(3)] == [b"ready\n", b"0", b"1"]
    assert redis_pool.stats(app)["in_use"] == 2  # the pubsub and the stream's pipeline
    response.close()
    assert still_subscribed == [True]  # the stream's finally could still use it
    assert_nothing_held(app)
    wait_subscribed(server, 0)


def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], None]:
    """A WSGI server's, which sends nothing."""
    return lambda data: None


@pytest.mark.parametrize("end", ["closed", "dropped"])
def test_a_stream_that_never_starts_gives_back_what_the_view_held(
    app: Flask, redis_pool: RedisPool, server: Redis, end: str
) -> None:
    """The server never iterates the body (the client went before the headers were sent),
    then closes it, or drops it without closing (against PEP 3333)."""
    serve_stream(app, redis_pool, lambda pubsub: messages(pubsub, 1))
    body = app(EnvironBuilder(path="/events").get_environ(), start_response)
    assert isinstance(body, ClosingIterator)
    wait_subscribed(server)
    assert redis_pool.stats(app)["in_use"] == 1
    if end == "closed":
        body.close()
    else:
        del body
        gc.collect()
    assert_nothing_held(app)
    wait_subscribed(server, 0)


def test_a_plain_generator_keeps_what_it_captured(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    """Without stream_with_context the generator runs outside any context: it cannot ask
    for redis_pool.client, but what the view handed it works until the stream ends."""

    @app.get("/events")
    def events() -> Response:
        pubsub = redis_pool.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("news")

        def stream() -> Iterator[bytes]:
            yield b"ready\n"
            yield from messages(pubsub, 2)
            with pytest.raises(RuntimeError, match="outside an application context"):
                redis_pool.client.ping()

        return Response(stream())

    response = app.test_client().get("/events")
    wait_subscribed(server)
    server.publish("news", "a")
    server.publish("news", "b")
    assert response.get_data() == b"ready\nab"
    response.close()
    assert_nothing_held(app)
    wait_subscribed(server, 0)


def _pipeline(redis_pool: RedisPool, server: Redis) -> Callable[[], Iterator[bytes]]:
    """A WATCH the view set holds through the stream: a write in between aborts the transaction."""
    pipe = redis_pool.client.pipeline()
    pipe.watch("stock")

    def stream() -> Iterator[bytes]:
        server.set("stock", "changed by another client")
        pipe.multi()
        pipe.set("stock", "from the stream")
        try:
            pipe.execute()
        except WatchError:
            yield b"aborted"

    return stream


def _monitor(redis_pool: RedisPool, server: Redis) -> Callable[[], Iterator[bytes]]:
    """A MONITOR the view entered sees commands sent while the stream runs."""
    monitor = redis_pool.client.monitor().__enter__()

    def stream() -> Iterator[bytes]:
        server.echo("seen by the monitor")
        while "seen by the monitor" not in (command := monitor.next_command())["command"]:
            pass
        yield command["command"].encode()

    return stream


def _pinned_client(redis_pool: RedisPool, server: Redis) -> Callable[[], Iterator[bytes]]:
    """``client.client()`` keeps its one connection: the stream's commands run on the view's."""
    pinned = redis_pool.client.client()
    view_id = pinned.client_id()

    def stream() -> Iterator[bytes]:
        yield b"same" if pinned.client_id() == view_id else b"another connection"

    return stream


@pytest.mark.parametrize(
    ("holder", "expected"),
    [(_pipeline, b"aborted"), (_monitor, b"ECHO seen by the monitor"), (_pinned_client, b"same")],
)
def test_every_holder_a_view_hands_to_its_stream_keeps_its_connection(
    app: Flask,
    redis_pool: RedisPool,
    server: Redis,
    holder: Callable[[RedisPool, Redis], Callable[[], Iterator[bytes]]],
    expected: bytes,
) -> None:
    @app.get("/stream")
    def stream() -> Response:
        return Response(stream_with_context(holder(redis_pool, server)()))

    with app.test_client().get("/stream") as response:
        assert response.get_data().endswith(expected)
    assert_nothing_held(app)
    wait_until(
        lambda: all(c["flags"] == "N" for c in our_connections(server, app.import_name)),
        10,
        "no connection of the app left watching, monitoring or subscribed",
    )


def test_a_stream_keeps_what_its_view_opened_on_every_prefix(app: Flask, redis_pool: RedisPool, server: Redis) -> None:
    app.config["JOBS_REDIS_URL"] = app.config["REDIS_URL"]
    jobs_pool = RedisPool(app, config_prefix="JOBS_REDIS")

    @app.get("/events")
    def events() -> Response:
        pubsubs = [pool.client.pubsub(ignore_subscribe_messages=True) for pool in (redis_pool, jobs_pool)]
        for pubsub in pubsubs:
            pubsub.subscribe("news")

        def stream() -> Iterator[bytes]:
            yield b"ready\n"
            for pubsub in pubsubs:
                yield from messages(pubsub, 1)

        return Response(stream_with_context(stream()))

    response = app.test_client().get("/events")
    wait_subscribed(server, 2)
    server.publish("news", "x")
    assert response.get_data() == b"ready\nxx"
    response.close()
    assert_nothing_held(app)
    wait_subscribed(server, 0)


def test_gunicorn_gives_a_subscriber_back_when_its_client_hangs_up(redis_url: str, server: Redis) -> None:
    """And the worker's ``idle`` counts what the server sees: the subscriber's connection,
    given back disconnected, is not idle on the server (it was: IDLE 1, SERVER 0)."""

    def stream_subscribers() -> list[str]:
        return [c["id"] for c in our_connections(server, "stream_app") if c.get("sub") == "1"]

    def pool(port: int) -> dict[str, int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/pool")
            figures: dict[str, int] = json.loads(connection.getresponse().read())
            return figures
        finally:
            connection.close()

    def on_server(pid: int) -> int:
        return sum(p["connections"] for p in group_client_list(server.client_list(), "stream_app") if p["pid"] == pid)

    with gunicorn("tests.stream_app:create_app()", redis_url=redis_url, workers=1, threads=4) as (port, _):
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # every read bounded
        try:
            client.request("GET", "/events")
            response = client.getresponse()
            assert (response.status, response.getheader("Content-Type")) == (200, "text/event-stream; charset=utf-8")
            assert response.readline() == b": subscribed\n"
            (subscriber,) = wait_until(stream_subscribers, 10, "the stream's subscriber")
            assert pool(port)["in_use"] == 1
            for number in range(3):
                server.publish("news", f"m{number}")
            data: list[bytes] = []
            while len(data) < 3:
                line = response.readline()
                assert line, "the stream ended"
                if line.startswith(b"data: "):
                    data.append(line.strip())
            assert data == [b"data: m0", b"data: m1", b"data: m2"]
        finally:
            client.close()  # hang up mid-stream
        wait_until(lambda: subscriber not in stream_subscribers(), 30, "the subscriber's connection to close")
        figures = wait_until(
            lambda: (figures := pool(port))["in_use"] == 0 and figures, 30, "the worker to give the connection back"
        )
        assert subscribers(server) == 0
        assert figures["idle"] == on_server(figures["pid"])
