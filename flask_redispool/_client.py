"""The client handed to each app context, and what it gives back at teardown.

A plain :class:`redis.Redis` on a shared pool already returns the connection after
each command. What it cannot return by itself is a connection still held when the
context ends: a pipeline left mid-``WATCH``, a pubsub never closed, a ``MONITOR``
never exited, a single-connection client from ``client.client()``, a raw connection
taken with :meth:`RedisPool.connection() <flask_redispool.RedisPool.connection>` and
never given back, the client of its own connection that
:meth:`RedisPool.blocking() <flask_redispool.RedisPool.blocking>` lends in a slot of
the pool. :class:`ContextClient` remembers those holders in the context's
:class:`Held`, and teardown returns their connections (:meth:`Held.release_sync`), or a
response streamed from a generator does when it ends (:mod:`flask_redispool._streaming`).
(A lock holds no connection: each of its commands borrows one like any other command.)

A plain command costs nothing extra: every context of an app shares one prepared
client, and only what holds a connection is remembered, in the context's ``g``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from redis import Redis
from redis.client import Monitor, Pipeline, PubSub
from redis.connection import Connection, ConnectionPool

from ._context import g_here
from ._streaming import hand_over_at_response

__all__ = [
    "AppClient",
    "ContextClient",
    "Held",
    "HeldMonitor",
    "HeldPipeline",
    "WaitingLoan",
    "held_here",
    "release_holder",
]


class _Holder(Protocol):
    """A pipeline, or a raw connection's checkout: may hold one connection of ``connection_pool``."""

    connection: Connection | None
    connection_pool: ConnectionPool

    def reset(self) -> None: ...


class _Checkout:
    """A raw connection lent by :meth:`RedisPool.connection`; released once only."""

    __slots__ = ("__weakref__", "connection", "connection_pool")

    def __init__(self, pool: ConnectionPool, connection: Connection) -> None:
        self.connection_pool = pool
        self.connection: Connection | None = connection

    def reset(self) -> None:
        """Nothing to reset beyond the connection, which :func:`release_holder` drops."""

    def give_back(self) -> None:
        """Return the connection as it is: its ``with`` block ended normally."""
        connection, self.connection = self.connection, None
        if connection is not None:
            self.connection_pool.release(connection)


class WaitingLoan(_Checkout):
    """A slot of the pool lent to :attr:`client`, a client of one connection of its own
    made for waiting (:meth:`RedisPool.blocking() <flask_redispool.RedisPool.blocking>`).

    The slot's connection stays checked out, and so counted, bounded and waited for as any
    other; it is disconnected, so that the server sees one connection for the slot: the
    client's. Giving the loan back, whichever way, closes the client's connection and
    returns the slot's.
    """

    __slots__ = ("client", "close_client")

    def __init__(
        self, pool: ConnectionPool, connection: Connection, client: Redis, close_client: Callable[[], object]
    ) -> None:
        super().__init__(pool, connection)
        self.client = client
        self.close_client = close_client

    def reset(self) -> None:
        """Close the client's connection for good (:func:`release_holder` then returns the slot's)."""
        self.close_client()

    def give_back(self) -> None:
        self.reset()
        super().give_back()


class Held:
    """What one app context took through one ``RedisPool`` that holds a connection beyond
    one command: pipelines, pubsubs, monitors, pinned and raw connections (weakly: one
    that is garbage-collected gives its connection back itself), and the async ones
    with the loop they belong to. Kept in the context's ``g`` until teardown."""

    __slots__ = ("async_holders", "give_back_async", "loop", "sync")

    def __init__(self) -> None:
        self.sync: weakref.WeakSet[Any] = weakref.WeakSet()
        self.async_holders: list[Any] = []
        self.loop: Any = None
        #: Gives back async holders on ``loop`` (set with it, by the first one).
        self.give_back_async: Callable[[list[Any]], Coroutine[Any, Any, None]] | None = None

    def release_sync(self) -> None:
        """Give back every sync connection still held.

        Runs in teardown; connections are dropped without network I/O, so it does not
        block on a Redis that has stopped answering.
        """
        for holder in list(self.sync):
            release_holder(holder)

    def pass_sync(self) -> list[Any]:
        """Hand the sync holders over to a streamed response, which holds them until it ends
        and then gives them back (:mod:`flask_redispool._streaming`); the async stay."""
        holders, self.sync = list(self.sync), weakref.WeakSet()
        return holders

    def pass_async(self) -> list[Any]:
        """Hand the async holders over to a streamed Quart response, which gives them back
        with :attr:`give_back_async` when it ends."""
        holders, self.async_holders = self.async_holders, []
        return holders

    @staticmethod
    def give_back(holders: list[Any]) -> None:
        """Give back the connections of ``holders`` that :meth:`pass_sync` handed over."""
        for holder in holders:
            release_holder(holder)


def held_here(key: str) -> Held | None:
    """The current app context's :class:`Held` under ``key`` (made on first use), or
    ``None`` outside an app context, where nothing is remembered.

    Made in a Flask request, it has the request's response take over what it holds if
    that response is streamed (:mod:`flask_redispool._streaming`): only requests that
    hold something pay for the hand-over."""
    g = g_here()
    if g is None:
        return None
    namespace = g.__dict__
    held: Held | None = namespace.get(key)
    if held is None:
        held = namespace[key] = Held()
        hand_over_at_response(key)
    return held


class AppClient(Redis):
    """A :class:`redis.Redis` on one app's pool that keeps the pool's connection names.

    ``CLIENT SETNAME`` renames whichever pooled connection runs it, for good: RQ's
    ``Worker`` does so to find its address. ``flask redis-stats`` matches the server's
    connections to processes by their names, so while the pool names its connections,
    :meth:`client_setname` leaves them as they are, answers ``True`` and logs one
    warning per pool. With naming off (``CLIENT_NAME = False``), it runs as usual.
    """

    def client_setname(self, name: str, **kwargs: Any) -> bool:
        policy = getattr(self.connection_pool, "policy", None)
        if policy is None or policy.connection_name("") is None:
            return bool(super().client_setname(name, **kwargs))
        policy.kept_name(name)
        return True

    def monitor(self) -> Monitor:
        """redis-py's ``monitor()``, whose connection comes back when the monitor is dropped
        (:class:`HeldMonitor`)."""
        return HeldMonitor(self.connection_pool)  # type: ignore[no-untyped-call]


class ContextClient(AppClient):
    """The :class:`redis.Redis` of one app's pool, shared by every context and thread.

    Behaves exactly like :class:`redis.Redis`. Plain commands borrow a connection and
    give it back before they return; what holds one longer (``pipeline()``,
    ``pubsub()``, ``monitor()``, ``client()``, and the pool's ``waiting()`` and
    ``checkout()``) is remembered in the current app context's :class:`Held`, so that
    teardown can give back whatever is still out when the context ends. Its
    ``pipeline()`` makes a :class:`HeldPipeline`.
    """

    #: Where the current context's :class:`Held` lives in ``g``.
    held_key = "_redispool_held"

    def _hold(self, holder: Any) -> None:
        held = held_here(self.held_key)
        if held is not None:
            held.sync.add(holder)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = HeldPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        self._hold(pipe)
        return pipe

    def pubsub(self, **kwargs: Any) -> PubSub:
        pubsub: PubSub = super().pubsub(**kwargs)
        self._hold(pubsub)
        return pubsub

    def monitor(self) -> Monitor:
        monitor = super().monitor()
        self._hold(monitor)
        return monitor

    def client(self) -> Redis:
        """A client of this class pinned to one connection of the pool until closed (what
        redis-py's ``client()`` makes), given back at teardown if it is still open then."""
        client = type(self)(connection_pool=self.connection_pool, single_connection_client=True)
        client.held_key = self.held_key
        self._hold(client)
        return client

    def waiting(self, client: Redis, close_client: Callable[[], object]) -> WaitingLoan:
        """Lend ``client``, a client of a connection of its own not connected yet, a slot of
        this pool (:class:`WaitingLoan`), remembered until given back."""
        pool = self.connection_pool
        connection = pool.get_connection()
        connection.disconnect()  # type: ignore[no-untyped-call]
        loan = WaitingLoan(pool, connection, client, close_client)
        self._hold(loan)
        return loan

    def checkout(self) -> tuple[_Checkout, Connection]:
        """Take a raw connection from the pool, remembered until given back."""
        pool = self.connection_pool
        connection = pool.get_connection()
        checkout = _Checkout(pool, connection)
        self._hold(checkout)
        return checkout, connection


class HeldPipeline(Pipeline):
    """redis-py's :class:`~redis.client.Pipeline`, whose ``with`` block, when it raises,
    gives the connection back disconnected: the block may have left a reply unread or a
    ``WATCH`` open, which must not reach the next borrower. A block that ends normally
    resets it, as redis-py's does."""

    def __exit__(self, exc_type: type[BaseException] | None, *args: object) -> None:
        if exc_type is not None:
            release_holder(self)
        self.reset()


class HeldMonitor(Monitor):
    """redis-py's :class:`~redis.client.Monitor`, which forgets its connection once it has
    given it back, so that teardown cannot give it back a second time, and gives it back
    when it is dropped still holding it.

    redis-py's monitor takes its connection when it is made, not when its ``with`` block
    starts, and unlike its pipelines and pubsubs has no ``__del__``: one made and dropped
    would keep its pool slot for good. Contexts remember what holds a connection weakly,
    so teardown never sees a monitor that is already gone.
    """

    def __exit__(self, *args: object) -> None:
        try:
            super().__exit__(*args)  # type: ignore[no-untyped-call]
        finally:
            self.connection = None

    def __del__(self) -> None:
        if getattr(self, "connection", None) is not None:  # None also when __init__ found no connection
            with contextlib.suppress(Exception):  # as redis-py's own __del__ methods do
                release_holder(self)


def release_holder(holder: _Holder | PubSub | Redis | Monitor) -> None:
    """Return ``holder``'s connection to its pool, disconnected, if it holds one.

    The holder was abandoned mid-use: the server may still owe the connection a reply,
    or keep a ``WATCH``, a subscription or a longer timeout for it. Disconnecting drops
    all of that, so the next borrower starts clean (the pool reconnects it on checkout).
    """
    if isinstance(holder, PubSub):  # close() disconnects, drops its connect callback and releases
        holder.close()
        return
    connection: Connection | None = holder.connection
    if connection is None:
        return
    if isinstance(holder, Monitor):  # it may be reading MONITOR output: disconnect and release
        holder.connection = None
        connection.disconnect()  # type: ignore[no-untyped-call]
        holder.connection_pool.release(connection)
    elif isinstance(holder, Redis) and not isinstance(holder, Pipeline):  # pinned to one connection
        connection.disconnect()  # type: ignore[no-untyped-call]
        holder.close()  # releases it
    else:
        holder.connection = None
        holder.reset()  # without a connection: resets state, no UNWATCH round trip
        connection.disconnect()  # type: ignore[no-untyped-call]
        holder.connection_pool.release(connection)
