"""redis-py connection pools that count, name their connections, and explain exhaustion.

:func:`create_pool` turns validated :class:`~flask_redispool.config.Settings` into one
of redis-py's own pools (:class:`~redis.BlockingConnectionPool` by default), extended
only where redis-py offers nothing:

- counters for :meth:`~flask_redispool.RedisPool.stats` (checkouts, waits, timeouts,
  connections made), one uncontended lock section per checkout;
- :class:`~flask_redispool.PoolExhaustedError`, naming the config keys, instead of
  redis-py's bare "No connection available.";
- connection names ``<client name>:<host>:<pid>`` computed when each connection is
  made, so ``CLIENT LIST`` tells processes apart, also after a fork.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import (
    BlockingConnectionPool,
    Connection,
    ConnectionPool,
    parse_url,
)
from redis.exceptions import ConnectionError, MaxConnectionsError, RedisError
from redis.retry import Retry

from .config import BACKOFF_BASE, BACKOFF_CAP, Settings, url_query_conflicts
from .errors import ConfigError, PoolExhaustedError
from .stats import PoolCounters, PoolStats

__all__ = ["CountedBlockingConnectionPool", "CountedConnectionPool", "CountedPool", "create_pool"]

#: The host part of every connection name: CLIENT SETNAME takes no spaces or colons here.
HOST: Final = re.sub(r"[^!-9;-~]", "-", socket.gethostname()) or "unknown"

# redis-py's BlockingConnectionPool says this, and only this, when its wait times out.
_BLOCKING_TIMEOUT_MESSAGE: Final = "No connection available."
# parse_url's keys that come from the URL's authority and path, not its query string.
_URL_PARTS: Final = frozenset({"host", "port", "db", "username", "password", "path", "connection_class"})
# redis-py reads a non-numeric path ("/zero") silently as db 0; we refuse it.
_DB_PATH_RE: Final = re.compile(r"/?|/[0-9]+/?")

if TYPE_CHECKING:
    _PoolBase = ConnectionPool
else:
    _PoolBase = object


class _CountedPool(_PoolBase):
    """Counting for both redis-py pool classes.

    The checkout path pays one uncontended lock section. ``in_use`` and ``idle`` are
    read from redis-py's public ``get_connection_count()`` when a snapshot is taken,
    and the peak needs no counting at all: both redis-py pools make a connection only
    when none is idle, and never drop one, so the number made is the most in use at
    once.
    """

    settings: Settings
    counters: PoolCounters

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        # redis-py calls reset() from __init__ and in a forked child: stats are per process.
        self.counters = PoolCounters()
        super().reset()

    def _all_busy(self) -> bool:
        """Whether a checkout now would have to wait for a connection."""
        return False

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        if self._all_busy():
            self.counters.waited()
        try:
            connection: Connection = super().get_connection(*args, **kwargs)
        except ConnectionError as exc:
            if not _is_exhausted(exc):
                raise
            self.counters.timed_out()
            raise PoolExhaustedError(self._exhausted_message()) from None
        counters = self.counters  # read after super(): a forked child has just reset them
        with counters.lock:
            counters.checkouts += 1
        return connection

    def make_connection(self) -> Connection:
        connection: Connection = super().make_connection()  # type: ignore[assignment]
        with self.counters.lock:
            self.counters.created += 1
        return connection

    def connection_counts(self) -> tuple[int, int]:
        """``(in_use, idle)`` as redis-py's public ``get_connection_count()`` reports them."""
        counts = {attrs.get("db.client.connection.state"): n for n, attrs in self.get_connection_count()}
        return counts.get("used", 0), counts.get("idle", 0)

    def snapshot(self) -> PoolStats:
        """This process's view of the pool, JSON-ready; no network I/O."""
        settings, counters = self.settings, self.counters
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
        )

    def _exhausted_message(self) -> str:
        settings = self.settings
        in_use = self.connection_counts()[0]
        if settings.pool_blocking:
            how = f"none was freed within {settings.key('POOL_TIMEOUT')}={settings.pool_timeout:g} s"
        else:
            how = f"{settings.key('POOL_BLOCKING')} is false, so no wait"
        return (
            f"No free Redis connection: {in_use} in use of the {self.max_connections} allowed by "
            f"{settings.key('MAX_CONNECTIONS')}, and {how}. Raise "
            f"{settings.key('MAX_CONNECTIONS')}, or run 'flask redis-stats' to see who holds them."
        )


class CountedConnectionPool(_CountedPool, ConnectionPool):
    """redis-py's :class:`~redis.ConnectionPool` with counters (``POOL_BLOCKING=False``)."""


class CountedBlockingConnectionPool(_CountedPool, BlockingConnectionPool):
    """redis-py's :class:`~redis.BlockingConnectionPool` with counters (the default)."""

    def _all_busy(self) -> bool:
        # The LIFO queue holds idle connections and free slots; empty means every one is out.
        return not self.pool.queue


#: Either pool class; what :meth:`RedisPool.get_pool() <flask_redispool.RedisPool.get_pool>` returns.
CountedPool = CountedConnectionPool | CountedBlockingConnectionPool


def _is_exhausted(exc: ConnectionError) -> bool:
    return isinstance(exc, MaxConnectionsError) or exc.args == (_BLOCKING_TIMEOUT_MESSAGE,)


class _NamedConnection:
    """Mixed into a redis-py connection class: appends ``:host:pid`` to the client name.

    Connection objects are made in the process that uses them (redis-py's pool resets
    itself in a forked child), so the pid is always the current one.
    """

    def __init__(self, *args: Any, client_name: str | None = None, **kwargs: Any) -> None:
        if client_name:
            client_name = f"{client_name}:{HOST}:{os.getpid()}"
        super().__init__(*args, client_name=client_name, **kwargs)  # type: ignore[call-arg]


@functools.cache
def named(connection_class: type[Any]) -> type[Any]:
    """A subclass of ``connection_class`` whose client name carries host and pid."""
    name = f"Named{connection_class.__name__}"
    return type(name, (_NamedConnection, connection_class), {"__module__": __name__})


def create_pool(settings: Settings) -> CountedPool:
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
        client_name=settings.client_name,
        retry=Retry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries),
    )
    connection_class = kwargs.pop("connection_class", Connection)
    _check_connection_kwargs(settings, connection_class, kwargs)
    kwargs["connection_class"] = named(connection_class)
    if settings.pool_blocking:
        return CountedBlockingConnectionPool(
            settings=settings,
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout,
            **kwargs,
        )
    return CountedConnectionPool(settings=settings, max_connections=settings.max_connections, **kwargs)


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
        from fakeredis import FakeServer
        from fakeredis._clients._sync import FakeRedisConnection
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


def _check_connection_kwargs(settings: Settings, connection_class: type[Any], kwargs: dict[str, Any]) -> None:
    """Make (but do not connect) one connection now, so a bad option fails at init_app."""
    try:
        connection_class(**kwargs)
    except (TypeError, ValueError, RedisError) as exc:
        raise ConfigError(
            f"{settings.key('OPTIONS')} or {settings.key('URL')} holds an option "
            f"that {connection_class.__name__} does not take: {exc}"
        ) from None
