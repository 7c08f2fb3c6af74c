"""Streamed responses keep what their view opened until the stream ends.

A view that subscribes and returns ``Response(stream_with_context(gen()))`` hands its
pubsub to a generator that runs only after the view has returned. Flask ends the view's
app context before the stream starts (since Flask 3.1.2 it runs ``teardown_appcontext``
when the view returns, and again when the ``stream_with_context`` generator ends; 3.1.0
and 3.1.1 kept the contexts pushed until the stream ended), and a generator without
``stream_with_context`` always runs after teardown: what teardown gives back would be
gone before the stream's first message.

The first time a request's context holds something, :func:`hand_over_at_response`
registers :func:`hand_to_stream`'s function for that request only (Flask's
``after_this_request``): a request that holds nothing pays nothing here. When the
response's body is a generator (Flask's way to stream, with or without
``stream_with_context``) it moves what the context holds (pipelines, pubsubs, monitors,
pinned clients, raw connections) from the context to the body, wrapped in a
:class:`StreamedBody`. The body holds them (the context remembers them weakly) and gives
them back as soon as the stream is over, however it ends: exhausted, the generator
raising, or closed by the WSGI server (the client went away) before it ended or even
began. A body that is never closed (a response dropped before it was sent) gives them
back when it is garbage-collected. What the generator opens itself, inside the context
that ``stream_with_context`` pushes again, is given back by that context's teardown.

Other bodies without a length (``send_file``, the page of an ``abort()``) are not
streams a view feeds: their view's connections are given back at teardown, as usual.
A Flask async view's holders always are: their teardown runs on the loop of the view.

A Quart request registers :func:`hand_to_async_stream` (Quart's ``after_this_request``)
instead: a body made from a generator, async or plain, is wrapped in an
:class:`AsyncStreamedBody`, which takes over the sync and the async holders alike (Quart
runs views and streams on the one serving loop) and awaits their give-back when Quart's
``async with`` over the body ends, however the stream ended.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine, Generator
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from flask import Response, after_this_request, has_request_context

from ._context import _quart, flask_g, g_here

if TYPE_CHECKING:
    from ._client import Held

__all__ = [
    "AsyncStreamedBody",
    "StreamedBody",
    "hand_over_at_response",
    "hand_to_async_stream",
    "hand_to_stream",
    "run_soon",
]

#: Gives back a list of holders (:meth:`Held.give_back <flask_redispool._client.Held.give_back>`).
GiveBack = Callable[[list[Any]], "Coroutine[Any, Any, None] | None"]


class _Holding:
    """What a streamed body holds for its view: given back once, when the stream is over,
    or when the body is garbage-collected first (a response dropped unsent)."""

    __slots__ = ("__weakref__", "_held", "_release")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._held: list[tuple[GiveBack, list[Any]]] = []
        self._release = weakref.finalize(self, _give_back, self._held, loop)
        self._release.atexit = False  # the pools close at exit anyway

    def hold(self, holders: list[Any], give_back: GiveBack) -> None:
        """Keep ``holders`` until the stream is over, then ``give_back`` them (each
        prefix's view hands its own; an async ``give_back`` is awaited)."""
        self._held.append((give_back, holders))


class StreamedBody(_Holding):
    """A streamed response's body, a generator, that gives back what its view held once the
    stream is over: exhausted, raised, closed, or garbage-collected unclosed.

    It is the response's WSGI iterable (``response.response``): the server iterates it and
    calls :meth:`close`, directly (``direct_passthrough``) or through ``Response.close()``.
    """

    __slots__ = ("_body",)

    def __init__(self, body: Generator[Any, None, None]) -> None:
        super().__init__()
        self._body = body

    def __iter__(self) -> StreamedBody:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._body)
        except BaseException:  # StopIteration too: the generator is done
            self._release()
            raise

    def close(self) -> None:
        """Close the generator (its ``finally`` blocks may still use what it holds), then
        give back its view's connections; safe to call twice."""
        try:
            self._body.close()
        finally:
            self._release()


class AsyncStreamedBody(_Holding):
    """A Quart response's iterable body (``response.iterable_body_class``: what an async or
    plain generator becomes) that gives back what its view held once the stream is over.

    Quart sends a body as ``async with body as chunks: async for chunk in chunks``: the
    ``async with`` ends however the stream does (exhausted, raised, or cancelled because
    the client went away), closes the generator, then awaits the give-back on the view's
    loop. A body never entered gives back when it is garbage-collected.
    """

    __slots__ = ("_body",)

    def __init__(self, body: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(loop)
        self._body = body

    async def __aenter__(self) -> Any:
        return await self._body.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._body.__aexit__(*exc_info)
        finally:
            if self._release.detach() is not None:  # not given back yet
                for give_back, holders in self._held:
                    outcome = give_back(holders)
                    if outcome is not None:
                        await outcome


#: Give-backs of dropped bodies started on their loop, kept until they end (a loop keeps
#: its tasks weakly).
_GIVING_BACK: set[asyncio.Task[Any]] = set()


def run_soon(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run ``coroutine`` on ``loop`` from any thread (a finalizer's), as a task kept until
    it ends; if ``loop`` is closed, its pools closed with it: nothing is left to give back."""

    def start() -> None:
        task = loop.create_task(coroutine)
        _GIVING_BACK.add(task)
        task.add_done_callback(_GIVING_BACK.discard)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:
        coroutine.close()


def _give_back(held: list[tuple[GiveBack, list[Any]]], loop: asyncio.AbstractEventLoop | None) -> None:
    for give_back, holders in held:
        outcome = give_back(holders)
        if outcome is not None and loop is not None:
            run_soon(loop, outcome)


def hand_over_at_response(held_key: str) -> None:
    """Inside a Flask or Quart request: let its response take over what its context holds
    under ``held_key`` (:func:`hand_to_stream`). Called once per context, at its first hold."""
    if has_request_context():
        after_this_request(hand_to_stream(held_key))
    elif _quart and _quart[0].has_request_context():
        _quart[0].after_this_request(hand_to_async_stream(held_key))


def hand_to_stream(held_key: str) -> Callable[[Response], Response]:
    """The ``after_request`` function of one prefix: a response streamed from a generator
    takes over the sync holders of the context's :class:`~flask_redispool._client.Held`
    under ``held_key`` (the async ones are given back at teardown, on the view's loop).
    The common case (nothing held) is one look-up."""

    def after_request(response: Response) -> Response:
        held: Held | None = flask_g().__dict__.get(held_key)
        if held is None or not held.sync:
            return response
        body = response.response
        if isinstance(body, GeneratorType):
            body = response.response = StreamedBody(body)
        if isinstance(body, StreamedBody):
            body.hold(held.pass_sync(), held.give_back)
        return response

    return after_request


def hand_to_async_stream(held_key: str) -> Callable[[Any], Coroutine[Any, Any, Any]]:
    """:func:`hand_to_stream` for Quart: a response whose body is an iterable (an async or
    plain generator) takes over every holder, sync and async, of the context's ``Held``."""

    async def after_request(response: Any) -> Any:
        held: Held | None = g_here().__dict__.get(held_key)
        body = response.response
        if held is None or not isinstance(body, response.iterable_body_class):
            return response
        streamed = response.response = AsyncStreamedBody(body, held.loop)
        streamed.hold(held.pass_sync(), held.give_back)
        if held.give_back_async is not None:
            streamed.hold(held.pass_async(), held.give_back_async)
        return response

    return after_request
