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
Async holders always are: their teardown runs on the loop of the view.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from flask import Response, after_this_request, has_request_context

from ._context import flask_g

if TYPE_CHECKING:
    from ._client import Held

__all__ = ["StreamedBody", "hand_over_at_response", "hand_to_stream"]

#: Gives back a list of holders (:meth:`Held.give_back <flask_redispool._client.Held.give_back>`).
GiveBack = Callable[[list[Any]], None]


class StreamedBody:
    """A streamed response's body, a generator, that gives back what its view held once the
    stream is over: exhausted, raised, closed, or garbage-collected unclosed.

    It is the response's WSGI iterable (``response.response``): the server iterates it and
    calls :meth:`close`, directly (``direct_passthrough``) or through ``Response.close()``.
    """

    __slots__ = ("__weakref__", "_body", "_held", "_release")

    def __init__(self, body: Generator[Any, None, None]) -> None:
        self._body = body
        self._held: list[tuple[GiveBack, list[Any]]] = []
        self._release = weakref.finalize(self, _give_back, self._held)
        self._release.atexit = False  # the pools close at exit anyway

    def hold(self, holders: list[Any], give_back: GiveBack) -> None:
        """Keep ``holders`` until the stream is over, then ``give_back`` them (each
        prefix's view hands its own)."""
        self._held.append((give_back, holders))

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


def _give_back(held: list[tuple[GiveBack, list[Any]]]) -> None:
    for give_back, holders in held:
        give_back(holders)


def hand_over_at_response(held_key: str) -> None:
    """Inside a Flask request: let its response take over what its context holds under
    ``held_key`` (:func:`hand_to_stream`). Called once per context, at its first hold."""
    if has_request_context():
        after_this_request(hand_to_stream(held_key))


def hand_to_stream(held_key: str) -> Callable[[Response], Response]:
    """The ``after_request`` function of one prefix: a response streamed from a generator
    takes over the sync holders of the context's :class:`~flask_redispool._client.Held`
    under ``held_key``. The common case (nothing held) is one look-up."""

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
