"""The :class:`RedisPool` Flask extension."""

from __future__ import annotations

import asyncio
import functools
import re
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, cast

import redis.asyncio
from flask import Flask
from redis import Redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.connection import Connection

from . import _context
from ._advice import PoolAdvice, Thresholds, build_advice
from ._asyncio import AsyncContextClient, AsyncLoopClient, LoopOwner, ServingLoops, ThreadLoops, release_async
from ._cli import register_commands
from ._client import AppClient, ContextClient, Held, release_holder
from ._config import Settings, check_seconds, load_settings
from ._context import flask_g, g_here, watch_quart
from ._errors import UNAVAILABLE
from ._health import Health, check_health, closed_health
from ._pool import CountedPool, SidePool
from ._snapshots import build_report
from ._state import CLOSED_KEY, EXTENSION_KEY, LOOPS_KEY, AppState, app_states, before_close
from ._topology import open_topology

if TYPE_CHECKING:
    from ._state import App
    from ._stats import PoolReport, PoolStats

__all__ = ["CLOSED_KEY", "EXTENSION_KEY", "LOOPS_KEY", "AppState", "RedisPool", "app_states"]

_NONE: Final[dict[str, Any]] = {}  # the pools of an app with no RedisPool
# Per prefix, the finalizer that cleans up when an app is collected without close().
_FINALIZERS_KEY: Final = "redispool.finalizers"
T = TypeVar("T")
_PREFIX_RE: Final = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*")


class RedisPool:
    """One bounded, counted Redis connection pool per Flask app.

    .. code-block:: python

        redis_pool = RedisPool()

        def create_app():
            app = Flask(__name__)
            app.config["REDIS_URL"] = "redis://localhost:6379/0"
            redis_pool.init_app(app)
            return app

        @bp.get("/hits")
        def hits():
            return {"hits": redis_pool.client.incr("hits")}

    One ``RedisPool`` may serve many apps; its per-app state lives in
    ``app.extensions["redispool"]``. One app may have several, each with its own
    ``config_prefix`` (``RedisPool(app, config_prefix="JOBS_REDIS")`` reads
    ``JOBS_REDIS_URL``, ...).

    :param app: call :meth:`init_app` on this app now.
    :param config_prefix: the prefix of this instance's config keys.
    """

    #: What a view catches to serve without Redis, whatever the topology: the server is
    #: down, hung or unreachable, refused the connection, the pool is full, or the circuit
    #: breaker is open (redis-py's ``ConnectionError`` and ``TimeoutError``, and the
    #: cluster client's ``RedisClusterException``). A command's own error (``WRONGTYPE``)
    #: is not caught: a fallback would hide a bug. See :ref:`redis-optional`.
    #:
    #: .. code-block:: python
    #:
    #:     try:
    #:         views = redis_pool.client.incr("views")
    #:     except redis_pool.Unavailable:
    #:         views = None
    Unavailable: ClassVar[tuple[type[Exception], ...]] = UNAVAILABLE

    def __init__(self, app: App | None = None, *, config_prefix: str = "REDIS") -> None:
        if not isinstance(config_prefix, str) or not _PREFIX_RE.fullmatch(config_prefix):
            raise ValueError(
                f"config_prefix must be an upper-case config key prefix such as 'REDIS' "
                f"or 'JOBS_REDIS', got {config_prefix!r}"
            )
        self.config_prefix = config_prefix
        self._held_key = f"_redispool_held_{config_prefix}"
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<RedisPool config_prefix={self.config_prefix!r}>"

    def init_app(self, app: App) -> None:
        """Validate the config, create this app's pool and register teardown and CLI.

        Does no network I/O: the first connection is made by the first command.

        :raises ConfigError: a config value is missing or invalid.
        :raises RuntimeError: this prefix is already registered on ``app``.
        """
        states = app.extensions.setdefault(EXTENSION_KEY, {})
        if self.config_prefix in app.extensions.get(CLOSED_KEY, ()):
            raise RuntimeError(self._closed_message(app))
        if self.config_prefix in states:
            raise RuntimeError(
                f"A RedisPool with config_prefix {self.config_prefix!r} is already registered "
                f"on app {app.name!r}. Call init_app once per app, or give the second "
                f"RedisPool another config_prefix."
            )
        settings = load_settings(app.config, self.config_prefix, _default_client_name(app, self.config_prefix))
        topology = open_topology(settings, owner=repr(self), held_key=self._held_key, loops=_loop_owner(app))
        state = AppState(self, settings, topology, topology.client, topology.replica_client)
        states[self.config_prefix] = state
        dropped = weakref.finalize(app, _dropped, state)  # the state does not refer to the app
        dropped.atexit = False
        app.extensions.setdefault(_FINALIZERS_KEY, {})[self.config_prefix] = dropped
        app.teardown_appcontext(_flask_teardown(self._held_key) if isinstance(app, Flask) else self._async_teardown)
        register_commands(app)

    def close(self, app: App | None = None) -> None:
        """Dispose of everything this ``RedisPool`` made for ``app`` (default: the current
        app): the publisher (its snapshot deleted, its thread joined, its connection
        closed), the pool and its connections, the async views' pools, and the app's
        event loops once no ``RedisPool`` is left on it. Safe to call twice.

        Afterwards the app cannot use this prefix any more: ``client`` and the other
        accessors raise a :class:`RuntimeError` that says so, and so does every client
        taken before (``get_client(app)``, the ``client`` of a request still running)
        instead of opening a connection again. A command in flight in another thread ends
        undisturbed, and its connection closes when it comes back. :meth:`health` reports
        ``ok`` false. Call it when an app is done serving, e.g. at the end of a test or of
        a script that made it:

        .. code-block:: python

            app = create_app()
            try:
                run_the_job(app)
            finally:
                redis_pool.close(app)

        An app dropped without ``close()`` is cleaned up when it is garbage-collected:
        its publisher thread ends and its connections close then.

        :raises RuntimeError: this ``RedisPool`` was never registered on ``app``.
        """
        if app is None:
            app = self._current_app()
        states = app.extensions.get(EXTENSION_KEY, {})
        state = states.get(self.config_prefix)
        if state is None or state.extension is not self:
            if self.config_prefix in app.extensions.get(CLOSED_KEY, ()):
                return
            raise self._not_registered(app)
        before_close(app)
        app.extensions.setdefault(CLOSED_KEY, set()).add(self.config_prefix)  # first: others read it
        del states[self.config_prefix]
        app.extensions[_FINALIZERS_KEY].pop(self.config_prefix).detach()  # disposed of here, not at collection
        state.pools.close(self._closed_message(app))  # first: no connection of the app's connects again
        state.async_pools.close_all()
        loops = app.extensions.get(LOOPS_KEY)
        if not states and isinstance(loops, ThreadLoops):
            loops.close()

    def _state(self, app: App | None = None) -> AppState:
        if app is None:
            app = self._current_app()
        state: AppState | None = app.extensions.get(EXTENSION_KEY, {}).get(self.config_prefix)
        if state is None or state.extension is not self:
            if self.config_prefix in app.extensions.get(CLOSED_KEY, ()):
                raise RuntimeError(self._closed_message(app))
            raise self._not_registered(app)
        return state

    def _not_registered(self, app: App) -> RuntimeError:
        return RuntimeError(f"{self!r} is not registered on app {app.name!r}: call init_app(app) first.")

    def _closed_message(self, app: App) -> str:
        return (
            f"{self!r} was closed on app {app.name!r} by close(): its pool is gone. "
            "Make a new app (with the app factory) to use Redis again."
        )

    @property
    def client(self) -> Redis:
        """The Redis client of the current app's pool, for use in a view (or any code
        inside an app context).

        One prepared :class:`redis.Redis` per app, shared by every context and thread, so
        asking for it costs next to nothing. Every connection it takes, through
        commands, pipelines, pubsub, ``monitor()``, ``client()`` or :meth:`connection`,
        is back in the pool when the context ends: what holds a connection beyond one
        command is remembered in the context and given back at teardown. What a view hands
        to a response streamed from a generator is given back when the stream ends instead.

        :raises RuntimeError: outside an app context, or on an app without :meth:`init_app`.
        """
        # Every request runs this, so it stays flat: one call for the app, then plain dict access.
        try:
            app: App = _context.app_here()
        except RuntimeError:
            raise self._outside_context() from None
        state: AppState | None = app.extensions.get(EXTENSION_KEY, _NONE).get(self.config_prefix)
        if state is None or state.extension is not self:
            state = self._state(app)  # raises the explanatory error
        return state.client

    @property
    def cluster_client(self) -> RedisCluster:
        """The Redis Cluster client of the current app, behind ``redis+cluster://`` URLs:
        :attr:`client`'s twin for a cluster, typed as what it is, a
        :class:`redis.cluster.RedisCluster`.

        .. code-block:: python

            @app.get("/hits")
            def hits():
                return {"hits": redis_pool.cluster_client.incr("hits")}

        One client per app, made at the first use (it asks the URL's nodes for the slots),
        then shared by every context and thread. It keeps one pool per node, each of at
        most ``REDIS_MAX_CONNECTIONS``. A pubsub still open when the context ends is closed
        at teardown. Keys of one multi-key command or transaction must share a slot: give
        them one hash tag, as in ``{user:42}:profile`` and ``{user:42}:cart``.

        :raises RuntimeError: outside an app context, on an app without :meth:`init_app`,
            or when ``REDIS_URL`` is not a ``redis+cluster://`` URL.
        :raises redis.exceptions.RedisClusterException: at first use, no node answered.
        """
        app = self._current_app()
        state: AppState | None = app.extensions.get(EXTENSION_KEY, _NONE).get(self.config_prefix)
        if state is None or state.extension is not self:
            state = self._state(app)  # raises the explanatory error
        return state.topology.cluster_client()

    @property
    def replica_client(self) -> Redis:
        """Like :attr:`client`, on the pool that reads from replicas: behind Sentinel
        (``redis+sentinel://``), the service's replicas in turn, or its master while no
        replica is up. Elsewhere it is :attr:`client` itself, so code can read through it
        whatever the topology.

        .. code-block:: python

            @app.get("/profile/<name>")
            def profile(name):
                return redis_pool.replica_client.hgetall(f"profile:{name}")

        A replica may lag behind the master: read your own writes through :attr:`client`.
        Replicas refuse writes (``READONLY``).

        :raises RuntimeError: outside an app context, or on an app without :meth:`init_app`.
        """
        return self._state(self._current_app()).replica_client

    @property
    def async_client(self) -> redis.asyncio.Redis:
        """The ``redis.asyncio`` client of the current app context, for ``async def`` views.

        .. code-block:: python

            @app.get("/hits")
            async def hits():
                return {"hits": await redis_pool.async_client.incr("hits")}

        Its pool belongs to the running event loop: ``init_app`` runs the app's async
        views on one loop per serving thread (see :mod:`flask_redispool._asyncio`), and
        each loop has its own pool, bounded by ``REDIS_MAX_CONNECTIONS``, with the same
        settings as :attr:`client`. What a pipeline or pubsub still holds when the
        context ends is given back.

        :raises RuntimeError: outside an app context or a running event loop, or on a
            loop the app does not manage (``app.async_to_sync`` was replaced).
        """
        return cast(redis.asyncio.Redis, self._loop_client("async_client"))

    @property
    def async_replica_client(self) -> redis.asyncio.Redis:
        """:attr:`replica_client`'s twin for ``async def`` views: behind Sentinel, the running
        loop's client on a pool of the replicas (the master while none is up); elsewhere
        :attr:`async_client` itself.

        :raises RuntimeError: as :attr:`async_client` does.
        """
        client = cast(AsyncContextClient, self._loop_client("async_replica_client"))
        return client.replica or client

    @property
    def async_cluster_client(self) -> AsyncRedisCluster:
        """:attr:`cluster_client`'s twin for ``async def`` views: a
        :class:`redis.asyncio.cluster.RedisCluster` of the running event loop.

        .. code-block:: python

            @app.get("/hits")
            async def hits():
                return {"hits": await redis_pool.async_cluster_client.incr("hits")}

        One per event loop, like :attr:`async_client`, made at its first use on that loop
        and closed with the loop or the app. Each node has at most
        ``REDIS_MAX_CONNECTIONS`` connections per loop; a command finding them all busy
        waits up to ``REDIS_POOL_TIMEOUT`` for one. A write is never run twice, in a
        pipeline neither (a pipeline is not sent again as a whole).

        :raises RuntimeError: outside an app context or a running event loop, or when
            ``REDIS_URL`` is not a ``redis+cluster://`` URL.
        """
        return cast(AsyncRedisCluster, self._loop_client("async_cluster_client"))

    def _loop_client(self, accessor: str) -> AsyncLoopClient:
        """The running event loop's client of the current app, made on first use."""
        app = self._current_app()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(f"{self!r}.{accessor} needs a running event loop: use it in async views.") from None
        state = self._state(app)
        serving = state.topology.async_accessors
        if accessor not in serving:
            settings = state.settings
            raise RuntimeError(
                f"{self!r}.{accessor} does not serve {settings.key('URL')} ({settings.redacted_url}): use {serving[0]}."
            )
        async_pools = state.async_pools
        client = async_pools.prepared(loop)
        if client is None:
            if not async_pools.loops.manages(loop):
                raise RuntimeError(
                    f"{self!r}.{accessor} runs on the event loops flask-redispool gives the app's async "
                    "views, but this code runs on another loop (app.async_to_sync was replaced?)."
                )
            client = async_pools.client(loop)
        return client

    def get_pool(self, app: App | None = None) -> CountedPool:
        """The redis-py connection pool of ``app`` (default: the current app): behind
        Sentinel, the master's.

        :raises RuntimeError: behind ``redis+cluster://``, which has one pool per node.
        """
        return self._state(app).topology.pool()

    def get_client(self, app: App | None = None) -> Redis:
        """A :class:`redis.Redis` on the pool of ``app`` (default: the current app) for code
        that keeps a client for the app's life and runs outside requests too: Flask-Caching,
        Flask-Session, RQ's queues, a thread started at start-up.

        .. code-block:: python

            redis_pool.init_app(app)
            app.config["SESSION_REDIS"] = redis_pool.get_client(app)

        Same pool and settings as :attr:`client`: its connections are bounded by
        ``REDIS_MAX_CONNECTIONS``, named, counted in :meth:`stats`, and never run a write
        twice. What it does not get is the teardown guarantee: a pipeline, pubsub or lock
        it leaves open keeps its connection until it is closed, whether or not a request
        ends. Each call returns a new client, so a library that changes its client's
        attributes does not change the others'. Behind Sentinel it writes to the master.
        Like :attr:`client`, it keeps the pool's connection names: ``client_setname()``
        (RQ's ``Worker`` calls it) logs a warning instead of renaming a pooled connection.

        :raises RuntimeError: ``app`` has no ``RedisPool`` with this prefix, or its URL is
            a Redis Cluster (use :meth:`get_cluster_client`).
        """
        return AppClient(connection_pool=self.get_pool(app))

    def get_cluster_client(self, app: App | None = None) -> RedisCluster:
        """:meth:`get_client`'s twin behind ``redis+cluster://``: the cluster client of
        ``app`` (default: the current app), the one :attr:`cluster_client` hands to views,
        for libraries that keep a client for the app's life.

        .. code-block:: python

            redis_pool.init_app(app)
            app.config["SESSION_REDIS"] = redis_pool.get_cluster_client(app)

        Its connections are those of the nodes' pools, bounded, named and counted like the
        views'. Unlike :attr:`cluster_client`, it is made now if it was not yet: the call
        asks the URL's nodes for the slot map. Every call returns the same client, so that
        the app follows one slot map: a library must not change its attributes.

        :raises RuntimeError: ``app`` has no ``RedisPool`` with this prefix, or its URL is
            not a ``redis+cluster://`` URL (use :meth:`get_client`).
        :raises redis.exceptions.RedisClusterException: no node answered.
        """
        return self._state(app).topology.cluster_client()

    def settings(self, app: App | None = None) -> Settings:
        """The validated settings of ``app`` (default: the current app)."""
        return self._state(app).settings

    def stats(self, app: App | None = None) -> PoolStats:
        """A JSON-ready snapshot of this process's pool for ``app``; no network I/O.

        ``in_use`` is 0 between requests. See :class:`~flask_redispool.PoolStats`.
        """
        return self._state(app).pools.snapshot()

    def report(self, app: App | None = None) -> PoolReport:
        """What every process of ``app`` holds, as ``flask redis-stats`` shows it.

        Reads the snapshots that serving processes publish every ``REDIS_STATS_INTERVAL``
        seconds and groups the server's ``CLIENT LIST`` by process: one row per process
        (counters, snapshot age, server-side connections, leak suspicion), totals, and
        this process's own :meth:`stats`. See :class:`~flask_redispool.PoolReport`.

        :raises redis.RedisError: Redis is unreachable.
        """
        state = self._state(app)
        return build_report(state.reader(), state.pools)

    def advice(
        self,
        app: App | None = None,
        *,
        min_window: float = Thresholds.min_window,
        min_checkouts: int = Thresholds.min_checkouts,
    ) -> PoolAdvice:
        """What to set ``REDIS_MAX_CONNECTIONS`` to, as ``flask redis-stats --advise`` says it.

        Weighs every serving worker's published peak, waits and timeouts, threads and time
        counted against each server's ``maxclients`` (``INFO clients``): raise, lower, keep,
        or too little seen, with the arithmetic in ``reasons``. Lowering needs the longest-
        running worker to have counted ``min_window`` and the workers ``min_checkouts``
        together. See :class:`~flask_redispool.PoolAdvice` and :doc:`/cli`.

        :raises redis.RedisError: Redis is unreachable.
        """
        state = self._state(app)
        thresholds = Thresholds(min_window=min_window, min_checkouts=min_checkouts)
        return build_advice(state.reader(), state.pools, thresholds)

    def health(self, app: App | None = None) -> Health:
        """PING the server and report ``ok``, ``latency_ms``, ``server``, ``server_version``, ``error``,
        ``in_use``, ``max_connections``, ``saturated`` and ``timeouts``. Never raises: for
        ``/healthz``.

        It does not wait for a pooled connection: it uses the connection the pool keeps
        for its stats publisher. A busy worker (every connection checked out) reports
        ``ok`` with ``saturated`` set, so a health probe does not restart it. Behind
        Sentinel it asks the sentinels first: with none answering, new connections cannot
        be made, and it is not ``ok``.

        .. code-block:: python

            @app.get("/healthz")
            def healthz():
                health = redis_pool.health()
                return health, 200 if health["ok"] else 503

        After :meth:`close`, it reports ``ok`` false, with an ``error`` saying so.
        """
        if app is None:
            app = self._current_app()
        if self.config_prefix in app.extensions.get(CLOSED_KEY, ()):
            return closed_health(self._closed_message(app))
        return check_health(self._state(app).pools)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Check a raw connection out of the pool for the ``with`` block.

        .. code-block:: python

            with redis_pool.connection() as conn:
                conn.send_command("PING")
                conn.read_response()

        Always released. If the block raises, the connection is disconnected first, so
        a reply it left unread never reaches the next borrower.
        """
        checkout, connection = self._context_client().checkout()
        yield from _lent(checkout, connection, checkout.give_back)

    def pipeline(self, transaction: bool = True) -> Pipeline:
        """A redis-py :class:`~redis.client.Pipeline` on the app's pool, the same as
        ``redis_pool.client.pipeline()``: use it in a ``with`` block or as it is.

        .. code-block:: python

            with redis_pool.pipeline() as pipe:
                pipe.incr("hits").expire("hits", 60)
                hits, _ = pipe.execute()

        A ``with`` block resets it on exit; if the block raises, its connection is
        disconnected before it is given back, so a reply left unread or a ``WATCH`` left
        open never reaches the next borrower. Without a block, ``execute()`` gives the
        connection back (``pipe.reset()`` too), and teardown gives back one still held
        when the app context ends (after ``pipe.watch()``, say).
        """
        return self._context_client().pipeline(transaction=transaction)

    @contextmanager
    def blocking(self, seconds: float) -> Iterator[Redis]:
        """A client for commands that wait on the server on purpose, for up to ``seconds``.

        ``REDIS_SOCKET_TIMEOUT`` is short, so that a request gives up quickly when Redis
        stops answering; it would also cut off ``BLPOP key 10``. The block's client has
        one connection of its own, made with a socket timeout of ``seconds`` plus
        ``REDIS_SOCKET_TIMEOUT``, in a slot of the pool: the slot is waited for and counted
        as any checkout (``in_use``), and its pooled connection, disconnected meanwhile,
        keeps the short timeout. When the block ends, however it ends, the client's
        connection closes and the slot comes back; the client refuses to be used again.

        .. code-block:: python

            with redis_pool.blocking(10) as client:
                item = client.blpop("jobs", timeout=10)

        A blocking command sent on :attr:`client` whose wait outlasts
        ``REDIS_SOCKET_TIMEOUT`` is refused before it is sent, with a
        :class:`~flask_redispool.BlockingCommandError` that points here.

        For a quiet pubsub in a request, use ``pubsub.get_message(timeout=...)``: it waits
        at most that long. ``pubsub.listen()`` reads with no timeout at all (redis-py
        8.1), neither the socket timeout nor this one: it returns only when a message
        arrives or the connection drops.

        :raises ValueError: ``seconds`` is not a number from 0 to one day.
        """
        seconds = check_seconds(seconds, "seconds")
        lender = self._context_client()  # on a cluster, it says what to use instead
        state = self._state()
        long_timeout = seconds + state.settings.socket_timeout
        client = cast(Redis, state.topology.side.open(socket_timeout=long_timeout, name_suffix=""))
        ended = f"{self!r}: the client of blocking() was used after its block ended; use it inside the block."
        loan = lender.waiting(client, functools.partial(cast(SidePool, client.connection_pool).close_for_good, ended))
        yield from _lent(loan, client, loan.give_back)

    def _context_client(self) -> ContextClient:
        return cast(ContextClient, self.client)

    def _outside_context(self) -> RuntimeError:
        return RuntimeError(
            f"{self!r} was used outside an application context. Use it in a view or inside "
            "'with app.app_context():', or pass app= to get_pool(), settings() or stats()."
        )

    def _current_app(self) -> App:
        """The current app, Flask's or Quart's."""
        try:
            app: App = _context.app_here()
        except RuntimeError:
            raise self._outside_context() from None
        return app

    async def _async_teardown(self, exc: BaseException | None) -> None:
        """Quart: teardown runs on the serving loop itself."""
        held: Held | None = g_here().__dict__.pop(self._held_key, None)
        if held is not None:
            held.release_sync()
            await release_async(held.async_holders)


def _lent(holder: Any, value: T, done: Callable[[], object]) -> Generator[T, None, None]:
    """The body of a ``with`` block that lends ``value``, held by ``holder``: used with
    ``yield from`` in a :func:`~contextlib.contextmanager`, which throws the block's
    exception in here. On an exception the connection is given back disconnected
    (:func:`release_holder`), so a reply left unread never reaches the next borrower;
    otherwise ``done()`` ends the loan normally."""
    try:
        yield value
    except BaseException:
        release_holder(holder)
        raise
    done()


def _flask_teardown(held_key: str) -> Callable[[BaseException | None], None]:
    """Flask's teardown for one prefix: give back what the context still holds.

    It runs for every context of the app, so the common case (nothing held) is one pop
    from ``g``; and it is a plain function, which Flask's ``ensure_sync`` inspects faster
    than a bound method. Async holders are released on the loop their views ran on,
    this thread's, idle again now.
    """

    def teardown(exc: BaseException | None) -> None:
        held: Held | None = flask_g().__dict__.pop(held_key, None)  # teardown runs inside the context
        if held is None:
            return
        held.release_sync()
        if held.async_holders and not held.loop.is_closed():
            held.loop.run_until_complete(release_async(held.async_holders))

    return teardown


def _dropped(state: AppState) -> None:
    """``app`` was garbage-collected without :meth:`RedisPool.close`: close its pool's
    sockets before the collector finalizes them one by one (each would warn "unclosed"),
    and end the publisher, whose own thread deletes the snapshot. No network I/O here:
    this runs inside the garbage collector, in whichever thread triggered it."""
    state.pools.orphan()


def _loop_owner(app: App) -> LoopOwner:
    """Who runs the app's async views, and so owns their loops and pools.

    A Flask app: :class:`ThreadLoops`, installed as its ``async_to_sync`` unless it has
    its own. A Quart app: its serving loop; the pools close after serving.
    """
    owner: LoopOwner | None = app.extensions.get(LOOPS_KEY)
    if owner is not None:
        return owner
    if isinstance(app, Flask):
        loops = ThreadLoops()
        if "async_to_sync" not in vars(app) and type(app).async_to_sync is Flask.async_to_sync:
            app.async_to_sync = loops.async_to_sync  # type: ignore[method-assign]
        owner = loops
    else:
        serving = ServingLoops()
        app.after_serving(serving.close_running)
        watch_quart()
        owner = serving
    app.extensions[LOOPS_KEY] = owner
    return owner


def _default_client_name(app: App, prefix: str) -> str:
    name = re.sub(r"[^!-~]", "-", app.import_name)
    return name if prefix == "REDIS" else f"{name}.{prefix.lower()}"
