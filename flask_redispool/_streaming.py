"""Streamed responses keep what their view opened until the stream ends.

A view that subscribes and returns ``Response(stream_with_context(gen()))`` hands its
pubsub to a generator that runs only after the view has returned. Flask ends the view's
app context before the stream starts (since Flask 3.1.2 it runs ``teardown_appcontext``
when the view returns, and again when the ``stream_with_context`` generator ends; 3.1.0
and 3.1.1 kept the contexts pushed until the stream ended), and a generator without
``stream_with_context`` always runs after teardown: what teardown gives back would be
gone before the stream's first message.

:func:`hand_to_stream` is an ``after_request`` function: when the response's body is a
generator (Flask's way to stream, with or without ``stream_with_context``) it moves what
the context holds (pipelines, pubsubs, monitors, pinned clients, raw connections) from
the context to the body, wrapped in a :class:`StreamedBody`. The body holds them (the
context remembers them weakly) and gives them back as soon as the stream is over,
however it ends: exhausted, the generator raising, or closed by the WSGI server (the
client went away) before it ended or even began. A body that is never closed (a
response dropped before it was sent) gives them back when it is garbage-collected.
What the generator opens itself, inside the context that ``stream_with_context``
pushes again, is given back by that context's teardown.

Other bodies without a length (``send_file``, the page of an ``abort()``) are not
streams a view feeds: their view's connections are given back at teardown, as usual.
Async holders always are: their teardown runs on the loop of the view.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator
from types import GeneratorType
from typing import Any

from flask import Response

from ._client import Held, release_holder
from ._context import FLASK_CONTEXT

__all__ = ["StreamedBody", "hand_to_stream"]


class StreamedBody:
    """A streamed response's body, a generator, that gives back what its view held once the
    stream is over: exhausted, raised, closed, or garbage-collected unclosed.

    It is the response's WSGI iterable (``response.response``): the server iterates it and
    calls :meth:`close`, directly (``direct_passthrough``) or through ``Response.close()``.
    """

    __slots__ = ("__weakref__", "_body", "_holders", "_release")

    def __init__(self, body: Generator[Any, None, None]) -> None:
        self._body = body
        self._holders: list[Any] = []
        self._release = weakref.finalize(self, _give_back, self._holders)
        self._release.atexit = False  # the pools close at exit anyway

    def hold(self, holders: list[Any]) -> None:
        """Keep ``holders`` until the stream is over (each prefix's view hands its own)."""
        self._holders.extend(holders)

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


def _give_back(holders: list[Any]) -> None:
    for holder in holders:
        release_holder(holder)


def hand_to_stream(held_key: str) -> Callable[[Response], Response]:
    """The ``after_request`` function of one prefix: a response streamed from a generator
    takes over the sync holders of the context's :class:`~flask_redispool._client.Held`
    under ``held_key``. Every request runs it; the common case (nothing held) is one
    look-up."""

    def after_request(response: Response) -> Response:
        ctx = FLASK_CONTEXT.get(None)
        held: Held | None = ctx.g.__dict__.get(held_key) if ctx is not None else None
        if held is None or not held.sync:
            return response
        body = response.response
        if isinstance(body, GeneratorType):
            body = response.response = StreamedBody(body)
        if isinstance(body, StreamedBody):
            body.hold(held.pass_sync())
        return response

    return after_request
