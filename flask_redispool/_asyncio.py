"""``redis.asyncio`` pools for ``async def`` views: one pool per event loop.

Measured with Flask 3.1 and asgiref 3.13 (and kept as a test,
``test_plain_flask_runs_each_async_view_on_a_new_loop_it_then_closes``): Flask runs each
``async def`` view through :func:`asgiref.sync.async_to_sync`, which makes a **new event
loop for every call**, runs it in a fresh helper thread and closes it when the view
returns. A ``redis.asyncio`` connection belongs to the loop it was opened on, so a pool
made once at ``init_app`` breaks on the next request's loop, and a pool per request
pools nothing: every request would open (and leak) its own connections.

So ``init_app`` runs a Flask app's async views on :class:`ThreadLoops` instead: each
thread that serves requests (a gunicorn ``gthread`` thread, a dev server thread) gets
one event loop, kept for the thread's life and reused by every async view it runs.
Each loop gets its own bounded pool (:class:`AsyncPools`), made on first use; when a
thread has ended, its loop's pools are closed and the loop with them.

A Quart app already runs everything on the server's one loop (:class:`ServingLoops`):
one pool on it, closed after serving.

.. code-block:: python

    @app.get("/hits")
    async def hits():
        return {"hits": await redis_pool.async_client.incr("hits")}
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import redis.asyncio
import redis.asyncio.connection as aio_connection
import redis.asyncio.sentinel as aio_sentinel
from redis.asyncio.client import Monitor, PubSub
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import MaxConnectionsError, RedisError
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from ._client import held_here
from ._config import BACKOFF_BASE, BACKOFF_CAP
from ._connection import AsyncOnceRetry, pool_connection_class
from ._errors import ConfigError
from ._events import PoolEvents
from ._pool import address_of, made_before_failover, pool_repr
from ._stats import PoolCounters
from ._streaming import run_soon
from ._telemetry import PoolTelemetry, name_sentinel_pool
from ._wait import AsyncFairWait

if TYPE_CHECKING:
    from ._poolset import PoolSet

__all__ = [
    "AsyncContextClient",
    "AsyncLoopClient",
    "AsyncPools",
    "CountedAsyncPool",
    "CountedAsyncSentinelPool",
    "LoopOwner",
    "ServingLoops",
    "ThreadLoops",
    "async_connection_kwargs",
    "release_async",
    "remember_async",
]

T = TypeVar("T")
Closer = Callable[[asyncio.AbstractEventLoop], Awaitable[None]]


class AsyncLoopClient(Protocol):
    """One event loop's client of an app: on a counted pool of the loop's own
    (:class:`AsyncContextClient`), or a cluster client with a pool per node."""

    loop: asyncio.AbstractEventLoop
    held_key: str

    def bind(self, loop: asyncio.AbstractEventLoop, held_key: str) -> None:
        """Belong to ``loop``, and keep what holds a connection under ``held_key`` in ``g``."""

    def in_use(self) -> int:
        """Connections it has checked out now."""

    async def close_pool(self) -> None:
        """Close its connections, on its loop."""


#: The sync connection classes a URL gives, and their ``redis.asyncio`` twins.
_ASYNC_TWINS: Final[dict[type[Any], type[Any]]] = {
    Connection: aio_connection.Connection,
    SSLConnection: aio_connection.SSLConnection,
    UnixDomainSocketConnection: aio_connection.UnixDomainSocketConnection,
    SentinelManagedConnection: aio_sentinel.SentinelManagedConnection,
    SentinelManagedSSLConnection: aio_sentinel.SentinelManagedSSLConnection,
}


class LoopOwner(Protocol):
    """Whoever runs an app's async views: knows its loops, and closes them."""

    def manages(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether pools made for ``loop`` will be closed with it."""

    def on_close(self, closer: Closer) -> None:
        """Run ``await closer(loop)`` on each loop before it is closed."""


class ServingLoops:
    """For Quart: views run on the server's loop, which lives as long as the app serves.

    ``init_app`` registers :meth:`close_running` with ``app.after_serving``, so the
    pools close on that loop when serving stops.
    """

    def __init__(self) -> None:
        self._closers: list[Closer] = []

    def manages(self, loop: asyncio.AbstractEventLoop) -> bool:
        return True

    def on_close(self, closer: Closer) -> None:
        self._closers.append(closer)

    async def close_running(self) -> None:
        """Close the pools of the running loop (Quart's ``after_serving``)."""
        loop = asyncio.get_running_loop()
        for closer in self._closers:
            await closer(loop)


class ThreadLoops:
    """Runs an app's ``async def`` views on one event loop per thread, kept for its life.

    ``init_app`` installs :meth:`async_to_sync` as the app's ``async_to_sync`` (Flask's
    documented hook), unless the app already has its own. Called from a thread that
    already runs an event loop, it leaves the call to asgiref, as Flask would.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[threading.Thread, asyncio.AbstractEventLoop] = {}
        self._pid = os.getpid()
        self._closers: list[Closer] = []

    def async_to_sync(self, func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
        """Flask's ``app.async_to_sync``: a function that runs ``func`` to completion."""

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> T:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return self.loop().run_until_complete(func(*args, **kwargs))
            from asgiref.sync import async_to_sync

            return async_to_sync(func)(*args, **kwargs)

        return run

    def loop(self) -> asyncio.AbstractEventLoop:
        """This thread's loop, made on first use (closing the loops of ended threads)."""
        if self._pid != os.getpid():  # a forked child: the parent's loops hold its sockets
            self._loops, self._pid = {}, os.getpid()
        thread = threading.current_thread()
        loop = self._loops.get(thread)
        if loop is None:
            self._close_ended()
            loop = asyncio.new_event_loop()
            with self._lock:
                self._loops[thread] = loop
        return loop

    def manages(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` is one of ours (so its pools will be closed with it)."""
        return self._loops.get(threading.current_thread()) is loop

    def on_close(self, closer: Closer) -> None:
        """Run ``await closer(loop)`` on each loop before it is closed."""
        self._closers.append(closer)

    def live_loops(self) -> int:
        """How many loops are open (one per thread that has run an async view)."""
        return len(self._loops)

    def close(self) -> None:
        """Close every loop that is not running now: at shutdown, and in tests."""
        self._close_where(lambda thread, loop: not loop.is_running())

    def _close_ended(self) -> None:
        self._close_where(lambda thread, loop: not thread.is_alive())

    def _close_where(self, condition: Callable[[threading.Thread, asyncio.AbstractEventLoop], bool]) -> None:
        with self._lock:
            chosen = [(t, loop) for t, loop in self._loops.items() if condition(t, loop)]
            for thread, _ in chosen:
                del self._loops[thread]
        for _, loop in chosen:
            self._close_loop(loop)

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for closer in self._closers:
                loop.run_until_complete(closer(loop))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class CountedAsyncPool(redis.asyncio.ConnectionPool):
    """A ``redis.asyncio`` pool for one loop, bounded like the sync one: redis-py's
    non-blocking pool, and the same wait in front of it (:class:`~flask_redispool._wait.AsyncFairWait`).

    Waits up to ``POOL_TIMEOUT`` for a free connection, first come first served (not at
    all when ``POOL_BLOCKING`` is false), then raises :class:`~flask_redispool.PoolExhaustedError`
    like the sync pool. Its events go to the counters the app's async pools share, and to
    OpenTelemetry.
    """

    def __init__(self, pools: PoolSet, counters: PoolCounters, **kwargs: Any) -> None:
        settings = self.settings = pools.settings
        self._policy = pools.policy
        super().__init__(max_connections=settings.max_connections, **kwargs)
        #: Who listens to what happens to the pool (:mod:`~flask_redispool._events`).
        self.events = PoolEvents(counters)
        self._wait = AsyncFairWait(settings, pools.policy, self.events, settings.max_connections, self.in_use)
        PoolTelemetry(self.events, self.telemetry_name(kwargs))

    def telemetry_name(self, options: dict[str, Any]) -> str:
        """This pool's name in OpenTelemetry: where it connects, as the sync pool's."""
        return address_of(options)

    def __repr__(self) -> str:
        return pool_repr(self, "async")

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        events = self.events
        start = time.monotonic() if events.checkout_time else 0.0
        # When others wait already, queue up behind them.
        connection = None if self._wait.waiters else await self._checkout(*args, **kwargs)
        if connection is None:
            connection = await self._wait.take(functools.partial(self._checkout, *args, **kwargs))
        events.checked_out(start)
        return connection

    async def _checkout(self, *args: Any, **kwargs: Any) -> Any:
        """A connection, or ``None`` when none is free."""
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except MaxConnectionsError:
            return None
        except RedisError as exc:  # redis-py connects on checkout: say what to check
            self._policy.explain(exc)
            raise

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:  # a release cancelled while it waited for the lock is finished by redis-py
            for released in self.events.release:
                released()
            if self._wait.waiters:
                self._wait.wake_first()

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[no-untyped-call]
        for connected in self.events.connect:
            connected()
        return connection

    async def aclose(self) -> None:
        """Close the connections; waiters raise the "closed" error if the app closed."""
        try:
            await super().aclose()
        finally:
            self._wait.wake_all()

    def in_use(self) -> int:
        """Connections checked out of this loop's pool now."""
        counts = {attrs.get("db.client.connection.state"): n for n, attrs in self.get_connection_count()}
        return int(counts.get("used", 0))


class CountedAsyncSentinelPool(CountedAsyncPool, aio_sentinel.SentinelConnectionPool):
    """:class:`CountedAsyncPool` on a Sentinel service's master, found through this loop's
    own ``redis.asyncio`` :class:`~redis.asyncio.sentinel.Sentinel` (``sentinel_manager``),
    which closes with the pool."""

    sentinel_manager: aio_sentinel.Sentinel

    def __init__(self, pools: PoolSet, counters: PoolCounters, **kwargs: Any) -> None:
        super().__init__(pools, counters, **kwargs)
        name_sentinel_pool(self, self.telemetry_name(kwargs))  # as the sync pools are

    def telemetry_name(self, options: dict[str, Any]) -> str:
        """``<service>/master`` or ``<service>/replica``, as the sync pools'."""
        return f"{self.service_name}/{'master' if self.is_master else 'replica'}"

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)
        await self._drop_if_stale(connection)  # it connects again as it sends, where the sentinels say
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await self._drop_if_stale(connection)
        finally:
            await super().release(connection)

    async def _drop_if_stale(self, connection: Any) -> None:
        """Disconnect ``connection`` if it was made before the last failover the sentinels
        announced (:mod:`~flask_redispool._sentinel_watch`): one check of an int."""
        if made_before_failover(connection, self.sentinel_manager):
            with contextlib.suppress(RedisError, OSError):  # a dead old master: nothing to wait for
                await connection.disconnect(nowait=True)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:  # what redis-py 8's Sentinel.aclose() does, which 7 lacks
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


class AsyncHeldMonitor(Monitor):
    """:class:`~flask_redispool._client.HeldMonitor` for ``redis.asyncio``: a monitor of
    ``loop``'s pool.

    A context keeps the monitors it hands out until teardown gives their connections back;
    one made outside a context, dropped still holding its connection, has it given back
    (disconnected: it may be mid-``MONITOR``) on ``loop``'s next turn.
    """

    def __init__(self, connection_pool: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(connection_pool)
        self._loop = loop

    async def __aexit__(self, *args: object) -> None:
        try:
            await super().__aexit__(*args)  # type: ignore[no-untyped-call]
        finally:
            self.connection = None

    def __del__(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            run_soon(self._loop, _give_back(self.connection_pool, connection))


async def _give_back(pool: Any, connection: Any) -> None:
    """On the pool's loop: disconnect ``connection`` and release it to ``pool``."""
    try:
        await connection.disconnect()
    finally:
        await pool.release(connection)


class AsyncContextClient(redis.asyncio.Redis):
    """The ``redis.asyncio.Redis`` of one app's pool on one event loop, shared by every
    context on that loop.

    Keeps the pipelines, pubsubs, monitors and pinned clients it hands out in the
    current context's :class:`~flask_redispool._client.Held` until the context ends,
    so that teardown (:func:`release_async`) can give back a connection one of them
    still holds. (Unlike the sync side it cannot let them go earlier: an async pipeline
    cannot give its connection back when it is garbage-collected.)
    """

    #: The event loop this client's pool belongs to.
    loop: asyncio.AbstractEventLoop
    #: Where the current context's ``Held`` lives in ``g``.
    held_key = "_redispool_held"
    #: Behind Sentinel, the same loop's client on the replicas' pool.
    replica: AsyncContextClient | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, held_key: str) -> None:
        self.loop, self.held_key = loop, held_key
        if self.replica is not None:
            self.replica.bind(loop, held_key)

    def in_use(self) -> int:
        """Connections checked out of this loop's pools now."""
        in_use: int = self.connection_pool.in_use()  # type: ignore[attr-defined]
        return in_use + (self.replica.in_use() if self.replica is not None else 0)

    async def close_pool(self) -> None:
        """Close this loop's pools: their connections are disconnected."""
        try:
            if self.replica is not None:
                await self.replica.close_pool()
        finally:
            await self.connection_pool.aclose()

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
        return self._remember(super().pipeline(transaction, shard_hint))

    def pubsub(self, **kwargs: Any) -> Any:
        return self._remember(super().pubsub(**kwargs))

    def monitor(self) -> Any:
        return self._remember(AsyncHeldMonitor(self.connection_pool, self.loop))

    def client(self) -> Any:
        """A client of this class pinned to one connection of the pool until closed (what
        redis-py's ``client()`` makes), given back at teardown if it is still open then."""
        return self._remember(type(self)(connection_pool=self.connection_pool, single_connection_client=True))

    def _remember(self, holder: T) -> T:
        return remember_async(self, holder)


def remember_async(client: AsyncLoopClient, holder: T) -> T:
    """Keep ``holder`` (a pipeline, pubsub, monitor or pinned client of ``client``) in the
    current context's :class:`~flask_redispool._client.Held`, for teardown."""
    held = held_here(client.held_key)
    if held is not None:
        held.async_holders.append(holder)
        held.loop, held.give_back_async = client.loop, release_async
    return holder


async def release_async(holders: list[Any]) -> None:
    """Give back every connection an async pipeline, pubsub, monitor or pinned client of
    one context still holds, on their loop.

    A connection still held at the end may sit mid-``WATCH`` or have a reply unread:
    it is disconnected and taken from its holder before it goes back, so that the holder's
    own close sends nothing on it (redis-py 7's pipeline ``reset()`` would reconnect it to
    send ``UNWATCH``, which disconnecting has already dropped).
    """
    for holder in holders:
        if isinstance(holder, PubSub):  # a cluster's too: aclose() disconnects before it releases
            await holder.aclose()
            continue
        connection = holder.connection
        if connection is not None:
            holder.connection = None
            await connection.disconnect()
            await holder.connection_pool.release(connection)
        if not isinstance(holder, Monitor):  # a monitor has no aclose()
            await holder.aclose()  # a pipeline forgets its commands; a pinned client has nothing left


class AsyncPools:
    """One app's ``redis.asyncio`` pools, one per event loop, for one config prefix.

    Built from the sync pool's validated connection settings (URL, TLS, timeouts,
    retries, client name), so both sides behave alike. Makes no connection until a
    command runs.
    """

    def __init__(self, pools: PoolSet, loops: LoopOwner, held_key: str) -> None:
        self._pools = pools
        self._held_key = held_key
        self._make_client = pools.topology.async_client
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._clients: dict[asyncio.AbstractEventLoop, AsyncLoopClient] = {}
        #: Checkouts, waits and timeouts over every loop's pool, counted apart from the sync pool's.
        self.counters = PoolCounters()
        self.loops = loops
        loops.on_close(self.close)

    def prepared(self, loop: asyncio.AbstractEventLoop) -> AsyncLoopClient | None:
        """``loop``'s client, if it has a pool already (one dict look-up: every async
        request asks)."""
        if self._pid != os.getpid():
            return None
        return self._clients.get(loop)

    def client(self, loop: asyncio.AbstractEventLoop) -> AsyncLoopClient:
        """``loop``'s client, making its pool on first use."""
        self._forget_parent()
        prepared = self._clients.get(loop)
        if prepared is None:
            client = self._make_client(self.counters)
            client.bind(loop, self._held_key)
            with self._lock:
                prepared = self._clients.setdefault(loop, client)
            self._pools.connected()  # an app that only uses async_client must show up too
        return prepared

    def pool_count(self) -> int:
        """How many loops have a pool."""
        self._forget_parent()
        return len(self._clients)

    def in_use(self) -> int:
        """Connections checked out now, over every loop's pool."""
        self._forget_parent()
        return sum(client.in_use() for client in list(self._clients.values()))

    def _forget_parent(self) -> None:
        # In a forked child the parent's pools and loops are not ours to use or close.
        if self._pid != os.getpid():
            with self._lock:
                self._clients, self._pid, self.counters = {}, os.getpid(), PoolCounters()

    def close_all(self) -> None:
        """Close the pool of every loop that is not running now, each on its own loop
        (:meth:`RedisPool.close`). A running loop's pool closes with that loop."""
        self._forget_parent()
        for loop in list(self._clients):
            if loop.is_closed():
                with self._lock:
                    self._clients.pop(loop, None)
            elif not loop.is_running():
                loop.run_until_complete(self.close(loop))

    async def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close ``loop``'s pool: its connections are disconnected, on that loop."""
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.close_pool()


def async_connection_kwargs(pools: PoolSet, twin: type[Any] | None = None) -> dict[str, Any]:
    """The primary sync pool's connection keyword arguments, for ``redis.asyncio``: the
    same settings, the connection class's async twin (or ``twin``), and an async retry.

    :raises ConfigError: the URL's connection class has no ``redis.asyncio`` twin.
    """
    settings, sync_pool = pools.settings, pools.primary
    kwargs = dict(sync_pool.connection_options)
    twin = twin or _ASYNC_TWINS.get(sync_pool.connection_class.base)
    if twin is None and "server" in kwargs:  # fakeredis://: the same fake server as the sync side
        from fakeredis import FakeAsyncRedisConnection

        twin = FakeAsyncRedisConnection
    if twin is None:
        raise ConfigError(f"{settings.key('URL')} ({settings.redacted_url}) has no redis.asyncio connection class")
    kwargs["retry"] = AsyncOnceRetry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries)
    return {**kwargs, "connection_class": pool_connection_class(twin, pools.policy, asynchronous=True)}
