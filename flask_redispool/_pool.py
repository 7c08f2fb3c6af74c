"""A redis-py connection pool that counts, waits cheaply, names its connections.

:func:`create_pool` turns validated :class:`~flask_redispool.Settings` into
redis-py's own :class:`~redis.ConnectionPool`, extended only where redis-py offers
nothing:

- waiting for a free connection (``POOL_BLOCKING``) as a slow path only. redis-py's
  :class:`~redis.BlockingConnectionPool` passes every checkout through a queue and a
  condition variable, which cost a quarter of the throughput of a gunicorn worker with
  8 threads (``bench/bench_load.py``); here the checkout is redis-py's plain one. Only
  while somebody waits do checkouts queue, first come first served, and a release
  wakes the oldest waiter;
- counters for :meth:`~flask_redispool.RedisPool.stats` (checkouts, waits, timeouts,
  connections made), one uncontended lock section per checkout;
- :class:`~flask_redispool.PoolExhaustedError`, naming the config keys;
- connections of its own class (:mod:`flask_redispool._connection`): named
  ``<client name>:<host>:<pid>`` so ``CLIENT LIST`` tells processes apart, also after
  a fork; retried only when the command is safe to repeat; explaining their failures;
- a :class:`~flask_redispool._snapshots.StatsPublisher` per process, started by the
  process's first connection, with a connection of its own.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import BlockingConnectionPool, Connection, ConnectionPool, parse_url
from redis.exceptions import MaxConnectionsError, RedisError

from ._config import BACKOFF_BASE, BACKOFF_CAP, Settings, url_query_conflicts
from ._connection import ConnectionPolicy, OnceRetry, pool_connection_class
from ._errors import ConfigError, PoolExhaustedError
from ._snapshots import StatsPublisher
from ._stats import HOST, PoolCounters, PoolStats

if TYPE_CHECKING:
    from ._asyncio import AsyncPools

__all__ = ["CountedConnectionPool", "create_pool"]

# parse_url's keys that come from the URL's authority and path, not its query string.
_URL_PARTS: Final = frozenset({"host", "port", "db", "username", "password", "path", "connection_class"})
# redis-py reads a non-numeric path ("/zero") silently as db 0; we refuse it.
_DB_PATH_RE: Final = re.compile(r"/?|/[0-9]+/?")


class CountedConnectionPool(ConnectionPool):
    """redis-py's :class:`~redis.ConnectionPool` with counters and an optional wait.

    The peak needs no counting: redis-py makes a connection only when none is idle, and
    never drops one, so the number made is the most in use at once. ``in_use`` and
    ``idle`` come from redis-py's public ``get_connection_count()`` when a snapshot is
    taken.
    """

    settings: Settings
    counters: PoolCounters
    #: Publishes this process's snapshots (:mod:`flask_redispool._snapshots`).
    publisher: StatsPublisher
    #: The same app's ``redis.asyncio`` pools, one per event loop, counted in snapshots.
    async_pools: AsyncPools | None = None

    def __init__(self, *, settings: Settings, policy: ConnectionPolicy, **kwargs: Any) -> None:
        self.settings = settings
        #: What this pool's connections share: names, refusals, error notes.
        self.policy = policy
        #: The connection keyword arguments flask-redispool built from the settings, for the
        #: publisher's connection and the async pools. Not ``connection_kwargs``: redis-py adds
        #: per-pool objects there that refer back to this pool and would keep it alive.
        self.connection_options = {name: value for name, value in kwargs.items() if name != "connection_class"}
        super().__init__(max_connections=settings.max_connections, **kwargs)

    def reset(self) -> None:
        # redis-py calls reset() from __init__ and in a forked child, where another thread's
        # lock may be held forever: each process starts with fresh counters, queue and
        # publisher (the parent's publishing thread does not exist in the child).
        self.counters = PoolCounters()
        # The publisher's thread must not keep the pool alive: it gets a weak snapshot
        # callable and a factory for its own connection.
        side = functools.partial(side_client, self.connection_class, self.connection_options, self.settings)
        self.publisher = StatsPublisher(self.settings, weakref.WeakMethod(self.snapshot), side)
        self._queue: deque[threading.Event] = deque()  # waiting checkouts, oldest first
        self._queue_lock = threading.Lock()
        super().reset()

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        # Every command passes here: the common case is one attribute check, redis-py's
        # checkout and one lock section.
        try:  # when others wait already, queue up behind them
            connection = None if self._queue else ConnectionPool.get_connection(self, *args, **kwargs)
        except MaxConnectionsError:
            connection = None
        except RedisError as exc:  # redis-py connects on checkout: say what to check
            self.policy.explain(exc)
            raise
        if connection is None:  # out of the except block: an error raised now has no chain
            connection = self._wait_for_connection(*args, **kwargs)
        self.counters.checked_out()  # read after super(): a forked child has just reset them
        return connection

    def release(self, connection: Connection) -> None:  # type: ignore[override]
        ConnectionPool.release(self, connection)
        if self._queue:  # the common case pays one attribute check
            self._wake_first()

    def _wake_first(self) -> None:
        with self._queue_lock:
            if self._queue:
                self._queue[0].set()

    def _wait_for_connection(self, *args: Any, **kwargs: Any) -> Connection:
        """Every connection is out, or others wait: queue up for ``POOL_TIMEOUT``, if allowed.

        First come, first served: only the oldest waiter takes a released connection, so
        a thread that releases and checks out again at once cannot starve the others.
        """
        settings = self.settings
        if not settings.pool_blocking:
            raise self._exhausted()
        self.counters.waited()
        deadline = time.monotonic() + settings.pool_timeout
        turn = threading.Event()
        with self._queue_lock:
            self._queue.append(turn)
            if self._queue[0] is turn:  # first in line: a release may have come already
                turn.set()
        try:
            while turn.wait(max(0.0, deadline - time.monotonic())):
                turn.clear()
                try:
                    connection: Connection = super().get_connection(*args, **kwargs)
                    return connection
                except MaxConnectionsError:
                    continue  # not free after all: wait for the next release
            raise self._exhausted() from None
        finally:
            with self._queue_lock:
                self._queue.remove(turn)
            self._wake_first()  # the next in line looks for a free connection too

    def make_connection(self) -> Connection:
        connection: Connection = super().make_connection()  # type: ignore[assignment]
        with self.counters.lock:
            self.counters.created += 1
        if not self.publisher.started:  # this process's first connection
            self.publisher.start()
        return connection

    def connection_counts(self) -> tuple[int, int]:
        """``(in_use, idle)`` as redis-py's public ``get_connection_count()`` reports them."""
        counts = {attrs.get("db.client.connection.state"): n for n, attrs in self.get_connection_count()}
        return counts.get("used", 0), counts.get("idle", 0)

    def snapshot(self) -> PoolStats:
        """This process's view of the pool, JSON-ready; no network I/O."""
        settings, counters, async_pools = self.settings, self.counters, self.async_pools
        in_use, idle = self.connection_counts()
        return PoolStats(
            prefix=settings.prefix,
            url=settings.redacted_url,
            max_connections=self.max_connections,
            blocking=settings.pool_blocking,
            pool_timeout=settings.pool_timeout,
            socket_timeout=settings.socket_timeout,
            retries=settings.retries,
            worst_case_seconds=settings.worst_case_seconds,
            created=counters.created,
            in_use=in_use,
            idle=idle,
            peak_in_use=counters.created,
            checkouts=counters.checkouts,
            waits=counters.waits,
            timeouts=counters.timeouts,
            pid=os.getpid(),
            host=HOST,
            client_name=settings.client_name,
            naming_refused=self.policy.naming_refused,
            async_pools=async_pools.pool_count() if async_pools else 0,
            async_in_use=async_pools.in_use() if async_pools else 0,
            async_checkouts=async_pools.counters.checkouts if async_pools else 0,
            async_waits=async_pools.counters.waits if async_pools else 0,
            async_timeouts=async_pools.counters.timeouts if async_pools else 0,
        )

    def _exhausted(self) -> PoolExhaustedError:
        return self.exhausted_error(self.connection_counts()[0], self.counters)

    def exhausted_error(self, in_use: int, counters: PoolCounters) -> PoolExhaustedError:
        """Count a timeout in ``counters`` (this pool's, or the app's async pools'), and say
        which keys to raise."""
        counters.timed_out()
        settings = self.settings
        if settings.pool_blocking:
            how = f"none was freed within {settings.key('POOL_TIMEOUT')}={settings.pool_timeout:g} s"
        else:
            how = f"{settings.key('POOL_BLOCKING')} is false, so no wait"
        return PoolExhaustedError(
            f"No free Redis connection: {in_use} in use of the {self.max_connections} allowed by "
            f"{settings.key('MAX_CONNECTIONS')}, and {how}. Raise "
            f"{settings.key('MAX_CONNECTIONS')}, or run 'flask redis-stats' to see who holds them."
        )


def side_client(connection_class: type[Any], kwargs: dict[str, Any], settings: Settings) -> Redis:
    """A client on one connection of its own, outside the pool, for the publisher and
    :meth:`~flask_redispool.RedisPool.health`: it never takes or waits for a connection
    that requests need. Named ``<client name>:<host>:<pid>:stats``, which keeps it out of
    the per-process counts. redis-py's pool checks it before each use, so one the server
    closed while idle (its ``timeout``) is reconnected, not failed."""
    pool = BlockingConnectionPool(  # type: ignore[no-untyped-call]
        connection_class=connection_class,
        max_connections=1,
        timeout=settings.worst_case_seconds,
        name_suffix=":stats",
        **kwargs,
    )
    return Redis(connection_pool=pool)


def create_pool(settings: Settings) -> CountedConnectionPool:
    """Build the one pool of an app and prefix. Does no network I/O.

    :raises ConfigError: the URL or ``OPTIONS`` do not make a valid connection.
    """
    kwargs = _url_kwargs(settings)
    kwargs.update(settings.options)
    kwargs.update(settings.ssl_options)
    kwargs.update(
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout,
        health_check_interval=settings.health_check_interval,
        decode_responses=settings.decode_responses,
        retry=OnceRetry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries),
    )
    policy = ConnectionPolicy(settings)
    connection_class = pool_connection_class(kwargs.pop("connection_class", Connection), policy)
    check_connection_kwargs(settings, connection_class, kwargs)
    return CountedConnectionPool(settings=settings, policy=policy, connection_class=connection_class, **kwargs)


def _url_kwargs(settings: Settings) -> dict[str, Any]:
    url = settings.url
    scheme, _, rest = url.partition("://")
    fake = scheme.lower() == "fakeredis"
    try:
        if scheme.lower() != "unix" and not _DB_PATH_RE.fullmatch(urlsplit(url).path):
            raise ValueError("the path must be a database number, such as /0")
        kwargs: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
            "redis://" + rest if fake else url
        )
    except ValueError as exc:
        raise ConfigError(f"{settings.key('URL')} is not a valid Redis URL ({settings.redacted_url}): {exc}") from None
    url_query_conflicts(settings, {k: v for k, v in kwargs.items() if k not in _URL_PARTS})
    if fake:
        kwargs = _fake_kwargs(settings, kwargs)
    return kwargs


def _fake_kwargs(settings: Settings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``fakeredis://[:password@][ignored-host][/db]``: a private in-process server per pool."""
    try:
        from fakeredis import FakeRedisConnection, FakeServer
    except ImportError:
        raise ConfigError(
            f"{settings.key('URL')} uses fakeredis://, but fakeredis is not installed: "
            "pip install 'flask-redispool[fakeredis]'"
        ) from None
    password = kwargs.get("password")
    config = {b"requirepass": unquote(password).encode()} if password else None
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    return {**kwargs, "connection_class": FakeRedisConnection, "server": FakeServer(config=config)}


def check_connection_kwargs(settings: Settings, connection_class: type[Any], kwargs: dict[str, Any]) -> None:
    """Make (but do not connect) one connection now, and pack a command with it, so a bad
    option fails at init_app. The message names options, never their values (secrets)."""
    try:
        connection_class(**kwargs).pack_command("PING", "\u00e9")  # exercises encoding and its errors
    except (TypeError, ValueError, LookupError, RedisError) as exc:
        # A TypeError names the unexpected keyword; other errors may echo a value.
        detail = str(exc) if isinstance(exc, TypeError) else f"{type(exc).__name__} for one of {sorted(kwargs)}"
        raise ConfigError(
            f"{settings.key('OPTIONS')} or {settings.key('URL')} holds an option "
            f"that {getattr(connection_class, 'base', connection_class).__name__} does not take: {detail}"
        ) from None
