"""redis-py connection pools that count, wait cheaply, name their connections.

:class:`CountedPool` extends redis-py's own pools (:class:`~redis.ConnectionPool`, and
:class:`~redis.sentinel.SentinelConnectionPool` behind Sentinel) only where redis-py
offers nothing; :func:`create_pool` builds one for a single server from validated
:class:`~flask_redispool.Settings`:

- waiting for a free connection (``POOL_BLOCKING``) as a slow path only. redis-py's
  :class:`~redis.BlockingConnectionPool` passes every checkout through a queue and a
  condition variable, which cost a quarter of the throughput of a gunicorn worker with
  8 threads (``bench/bench_load.py``); here the checkout is redis-py's plain one. Only
  while somebody waits do checkouts queue (:class:`~flask_redispool._wait.FairWait`,
  the wait every pool kind shares), first come first served, and a release wakes the
  oldest waiter;
- events for its listeners (:mod:`~flask_redispool._events`): the counters of
  :meth:`~flask_redispool.RedisPool.stats` (checkouts, waits, timeouts, connections
  made; a checkout costs one C call), OpenTelemetry, and its owner
  (:class:`~flask_redispool._poolset.PoolSet`), which starts publishing that process's
  snapshots at its first connection;
- :class:`~flask_redispool.PoolExhaustedError`, naming the config keys;
- connections of its own class (:mod:`flask_redispool._connection`): named
  ``<client name>:<host>:<pid>`` so ``CLIENT LIST`` tells processes apart, also after
  a fork; retried only when the command is safe to repeat; explaining their failures.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import Connection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel, SentinelConnectionPool

from ._client_cache import PoolCache, cached_connection, check_client_cache, wrapped_connection
from ._config import BACKOFF_BASE, BACKOFF_CAP, Settings, url_query_conflicts
from ._connection import ConnectionPolicy, OnceRetry, PoolConnection, pool_connection_class
from ._errors import ConfigError, PoolExhaustedError
from ._events import PoolEvents
from ._stats import PoolCounters, PoolFigures
from ._telemetry import PoolTelemetry, name_sentinel_pool
from ._url import parse_url
from ._wait import FairWait

__all__ = [
    "CountedConnectionPool",
    "CountedPool",
    "CountedSentinelPool",
    "SideConnectionPool",
    "SidePool",
    "SideSentinelPool",
    "address_of",
    "check_query_options",
    "connection_options",
    "create_pool",
    "made_before_failover",
    "parse_addresses",
    "pool_repr",
    "side_client",
]

# The keys of parse_url() that come from the URL's authority and path, not its query string.
_URL_PARTS: Final = frozenset({"host", "port", "db", "username", "password", "path", "connection_class"})
# Options a library sharing the pool may change for its new connections, and we watch.
_WATCHED: Final = ("socket_timeout", "socket_connect_timeout", "retry", "health_check_interval")
logger = logging.getLogger("flask_redispool")
# What the path of a one-server URL may be: a database number, or nothing.
_DB_PATH_RE: Final = re.compile(r"/?|/[0-9]+/?")


if TYPE_CHECKING:
    _PoolBase = ConnectionPool
    _SentinelPoolBase = SentinelConnectionPool
else:
    _PoolBase = _SentinelPoolBase = object


class CountedPool(_PoolBase):
    """Counters and an optional wait, mixed into a redis-py connection pool class.

    :class:`CountedConnectionPool` puts it on redis-py's :class:`~redis.ConnectionPool`,
    :class:`CountedSentinelPool` on :class:`~redis.sentinel.SentinelConnectionPool`. The
    pools of one app and prefix belong to a :class:`~flask_redispool._poolset.PoolSet`,
    which builds snapshots from their :meth:`figures` and publishes them.

    The peak needs no counting: redis-py makes a connection only when none is idle, and
    never drops one, so the number made is the most in use at once. ``in_use`` and
    ``idle`` are counted only when asked for (:meth:`connection_counts`).
    """

    settings: Settings
    counters: PoolCounters
    max_connections: int
    connection_class: type[Any]
    #: What the pool serves: ``"primary"``, or ``"master"`` and ``"replica"`` behind Sentinel.
    role: str

    #: The checkout and release of the redis-py pool class this one is mixed into, found
    #: through the MRO once, when a class is made (:meth:`__init_subclass__`). Called on
    #: every command, they cost what a method call does; ``super()`` would cost about
    #: 0.2 µs more each, twice per command (CPython 3.11).
    _pool_get_connection: Callable[..., Connection]
    _pool_release: Callable[..., None]
    _pool_ensure_connection: Callable[..., None]  # redis-py 8 and later

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._pool_get_connection = super().get_connection
        cls._pool_release = super().release
        cls._pool_ensure_connection = getattr(super(), "ensure_connection", None)  # type: ignore[assignment]

    def __init__(
        self,
        *args: Any,
        settings: Settings,
        policy: ConnectionPolicy,
        role: str = "primary",
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        #: What this pool's connections share: names, refusals, error notes.
        self.policy = policy
        self.role = role
        #: The connection keyword arguments flask-redispool built from the settings, for the
        #: publisher's connection and the async pools. Not ``connection_kwargs``: redis-py adds
        #: per-pool objects there that refer back to this pool and would keep it alive.
        self.connection_options = {name: value for name, value in kwargs.items() if name != "connection_class"}
        #: Its connections' circuit breaker, read on every checkout (:mod:`~flask_redispool._breaker`).
        self.breaker = policy.breakers.of(address_of(self.connection_options))
        kwargs["max_connections"] = settings.max_connections
        #: Its client-side caching (``CLIENT_CACHE``): a cache per connection, made here
        #: (:meth:`make_connection`), not redis-py's one per pool; ``None`` when off.
        self.client_cache = None if settings.client_cache is None else PoolCache(settings)
        #: Who listens to what happens to the pool (:mod:`~flask_redispool._events`): its
        #: counters, OpenTelemetry, the owner that starts publishing at the first connection.
        self.events = PoolEvents()
        self.counters = PoolCounters()
        self.events.listen(self.counters)
        self._start_afresh()
        _POOLS.add(self)
        super().__init__(*args, **kwargs)
        PoolTelemetry(self.events, self.telemetry_name())

    def _start_afresh(self) -> None:
        """Fresh counters and wait: at birth, and in a forked child at once (through
        :func:`os.register_at_fork`), where the parent's waiting threads do not exist and
        another thread's lock may be held forever."""
        counters, self.counters = self.counters, PoolCounters()
        self.events.replace(counters, self.counters)
        self._announced = False  # whether this process's first connection was reported
        self._drift_seen: set[str] = set()  # options found changed by somebody else, warned about
        #: Every connection this process's pool made: redis-py keeps each one (and forgets
        #: the parent's in a child, as this does), so the idle ones are those not checked out.
        self._made: list[PoolConnection] = []
        self._wait = FairWait(self.settings, self.policy, self.events, self.settings.max_connections, self._in_use)

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        # Every command passes here: the common case is two attribute checks, redis-py's
        # checkout and its listeners' calls (one C call to count it).
        events = self.events
        if self.breaker.refusing:  # Redis is out of reach: fail before taking a connection
            self.breaker.refuse()
        start = time.monotonic() if events.checkout_time else 0.0  # timed as redis-py's blocking pool does
        try:  # when others wait already, queue up behind them (a forked child starts with none)
            connection = None if self._wait.waiters else self._pool_get_connection(*args, **kwargs)
        except MaxConnectionsError:
            connection = None
        except RedisError as exc:  # redis-py connects on checkout: say what to check
            self.policy.explain(exc, breaker=self.breaker)
            raise
        if connection is None:  # out of the except block: an error raised now has no chain
            connection = self._wait.take(functools.partial(self._checkout, args, kwargs))
        connection.checked_out = True  # type: ignore[attr-defined]  # ours (PoolConnection)
        events.checked_out(start)
        return connection

    def _checkout(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Connection | None:
        """A waiter's try: a connection, or ``None`` when none is free."""
        try:
            return self._pool_get_connection(*args, **kwargs)
        except MaxConnectionsError:
            return None
        except RedisError as exc:
            self.policy.explain(exc, breaker=self.breaker)
            raise

    def release(self, connection: Connection) -> None:  # type: ignore[override]
        connection.checked_out = False  # type: ignore[attr-defined]  # first: once back, another may take it
        self._pool_release(connection)
        for released in self.events.release:
            released()
        if self._wait.waiters or self.policy.closed:  # the common case pays two attribute checks
            self._after_release()

    def _after_release(self) -> None:
        if self.policy.closed:  # what comes back to a closed pool closes (none connects again)
            self.disconnect(inuse_connections=False)
        self._wait.wake_first()

    def close_for_good(self) -> None:
        """Close the idle connections now, and each one in use when it comes back; the
        waiters raise. Its :attr:`policy` is closed already, so no connection of the pool
        connects again: a checkout raises a :class:`RuntimeError` (:meth:`RedisPool.close()
        <flask_redispool.RedisPool.close>`). A command in flight in another thread ends
        undisturbed."""
        self.disconnect(inuse_connections=False)
        self._wait.wake_all()

    def make_connection(self) -> Connection:
        connection: Connection = super().make_connection()  # type: ignore[assignment]
        self._check_drift(connection.made_with)  # type: ignore[attr-defined]  # of our connection_class
        if self.client_cache is not None:  # behind redis-py's cache proxy, with a cache of its own
            connection = cached_connection(connection, self.client_cache)
            connection.register_connect_callback(self.client_cache.check_server)  # type: ignore[no-untyped-call]
        self._made.append(connection)  # type: ignore[arg-type]
        for connected in self.events.connect:  # OpenTelemetry may have been turned on since
            connected()
        if not self._announced:  # this process's first connection: the owner starts publishing
            self._announced = True
            for first in self.events.first_connect:
                first()
        return connection

    def ensure_connection(self, connection: Connection) -> None:
        """Connect ``connection`` at its checkout (redis-py's, without a cache).

        With a cache, what waits on an idle connection's socket are the server's
        invalidations, which the cache proxy reads before its next command: the connection
        is kept (redis-py's pool, which does not know of the caches, would close it as one
        given back with a reply unread). One that the server closed connects afresh, its
        cache flushed."""
        if self.client_cache is None:
            self._pool_ensure_connection(connection)
            return
        connection.connect()  # type: ignore[no-untyped-call]
        try:
            connection.can_read()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            connection.disconnect()  # type: ignore[no-untyped-call]
            connection.connect()  # type: ignore[no-untyped-call]

    def _in_use(self) -> int:
        return self.connection_counts()[0]

    def _check_drift(self, made_with: dict[str, Any]) -> None:
        """Warn once per option when a new connection was made with other options than the
        pool was given (``made_with``): a library sharing the pool changed them (RQ's
        ``Worker`` raises ``socket_timeout`` to minutes), and the settings that ``stats()``
        and the error notes quote no longer hold."""
        for name in _WATCHED:
            live, meant = made_with.get(name), self.connection_options.get(name)
            if live != meant and name not in self._drift_seen:
                self._drift_seen.add(name)
                settings = self.settings
                logger.warning(
                    "Something changed the %s pool's %s from %r to %r (RQ's Worker raises socket_timeout): "
                    "requests on this pool now use it too. Give that consumer a RedisPool of its own "
                    "(another config_prefix) instead of sharing %s's.",
                    settings.prefix,
                    name,
                    meant,
                    live,
                    settings.key("URL"),
                )

    def connection_counts(self) -> tuple[int, int]:
        """``(in_use, idle)``: connections checked out, as redis-py's public
        ``get_connection_count()`` reports them, and idle connections open to the server.

        A connection given back disconnected (what teardown took from a pubsub or pipeline
        left open, one whose connect failed) waits in the pool until a checkout connects it
        again: the server does not see it, so it is not counted idle, and ``in_use + idle``
        is what the server lists for the pool.
        """
        counts = {attrs.get("db.client.connection.state"): n for n, attrs in self.get_connection_count()}
        idle = [
            connection
            for connection in list(self._made)
            if wrapped_connection(connection).socket_open and not connection.checked_out
        ]
        return counts.get("used", 0), len(idle)

    def __repr__(self) -> str:
        return pool_repr(self, f"role={self.role} address={self.address}")

    @property
    def address(self) -> str | None:
        """Where this pool connects: ``host:port``, a socket path, or ``None`` when that
        is not known yet (a Sentinel master before its first connection) or varies
        (Sentinel replicas)."""
        return address_of(self.connection_options)

    def telemetry_name(self) -> str:
        """This pool's name in OpenTelemetry (``db.client.connection.pool.name``): where it
        connects."""
        return address_of(self.connection_options)

    def figures(self) -> PoolFigures:
        """This pool's part of a snapshot; no network I/O."""
        counters = self.counters
        in_use, idle = self.connection_counts()
        return PoolFigures(
            role=self.role,
            address=self.address,
            max_connections=self.max_connections,
            in_use=in_use,
            idle=idle,
            created=counters.created,
            checkouts=counters.checkouts,
            waits=counters.waits,
            timeouts=counters.timeouts,
        )


#: Every pool of ours in this process, for the fork hook below.
_POOLS: weakref.WeakSet[CountedPool] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    for pool in list(_POOLS):
        pool._start_afresh()


os.register_at_fork(after_in_child=_start_afresh_in_child)


class CountedConnectionPool(CountedPool, ConnectionPool):
    """redis-py's :class:`~redis.ConnectionPool`, counted (:class:`CountedPool`)."""


class _Unwatched:
    """The generation of a Sentinel pool whose sentinels nobody follows (a stub in tests)."""

    generation = 0


def made_before_failover(connection: Any, sentinel_manager: object) -> bool:
    """Whether a Sentinel pool's ``connection`` (sync or async) was made before the last
    failover its sentinels' listener heard of (:mod:`~flask_redispool._sentinel_watch`):
    one check of an int, on each checkout and release."""
    made_after = getattr(wrapped_connection(connection), "generation", 0)  # through a cache proxy
    return bool(made_after != getattr(sentinel_manager, "watch", _Unwatched).generation)


class _KeepsSlotAfterFailover(_SentinelPoolBase):
    """What our pools on a Sentinel service, counted or not, do with a connection made
    before a failover (:mod:`~flask_redispool._sentinel_watch`), or that comes back from a
    former master: disconnect it and keep it, so that its next use connects where the
    sentinels say now and the pool keeps its size."""

    def _drop_if_stale(self, connection: Connection) -> None:
        """Disconnect ``connection`` if it was made before the last failover heard of."""
        if made_before_failover(connection, self.sentinel_manager):
            connection.disconnect()  # type: ignore[no-untyped-call]

    def _forget_former_master(self, connection: Connection) -> None:
        """Disconnect ``connection`` if it served a master other than the current one, or
        was made before the last failover heard of."""
        served = wrapped_connection(connection)  # a cache proxy's address is the one it was made with
        if self.is_master and (served.host, served.port) != self.master_address:
            connection.disconnect()  # type: ignore[no-untyped-call]
        else:
            self._drop_if_stale(connection)

    def owns_connection(self, connection: Connection) -> bool:
        """Whether ``connection`` is this process's: the check of a plain pool.

        redis-py's Sentinel pool also disowns a connection to a former master when it comes
        back after a failover, and drops it; before redis-py 8.1 the pool's slot went with
        it, so every failover shrank the pool for good (redis-py#4187). Our ``release()``
        disconnects such a connection and keeps it instead (:meth:`_forget_former_master`),
        on every version.
        """
        return ConnectionPool.owns_connection(self, connection)  # type: ignore[return-value]


class CountedSentinelPool(CountedPool, _KeepsSlotAfterFailover, SentinelConnectionPool):
    """redis-py's :class:`~redis.sentinel.SentinelConnectionPool`, counted: a Sentinel
    service's master (``is_master=True``) or its replicas."""

    #: The last connection lent out: where it is connected is the master as the pool last
    #: reached it. (redis-py's ``master_address`` is what the last sentinel asked said,
    #: even when that answer was stale and the connection failed.) Kept, not formatted:
    #: every command passes here, and the address is read only for stats.
    _lent: Connection | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        name_sentinel_pool(self, self.telemetry_name())  # redis-py's figures: mymaster/master:6379_<id>

    def telemetry_name(self) -> str:
        """``<service>/master`` or ``<service>/replica``: its connections go wherever the
        sentinels say."""
        return f"{self.service_name}/{self.role}"

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        connection = CountedPool.get_connection(self, *args, **kwargs)  # ours: cheaper than super()
        self._drop_if_stale(connection)  # it connects again as it sends, where the sentinels say
        self._lent = connection
        return connection

    def release(self, connection: Connection) -> None:  # type: ignore[override]
        self._forget_former_master(connection)
        CountedPool.release(self, connection)  # ours: cheaper than super()

    @property
    def address(self) -> str | None:
        lent = None if self._lent is None else wrapped_connection(self._lent)
        return f"{lent.host}:{lent.port}" if self.is_master and lent is not None else None


class _SideWait(FairWait):
    """The side connection's wait: always, up to ``worst_case_seconds`` (the most one
    command of the other user takes), and reported to nobody."""

    def __init__(self, settings: Settings, policy: ConnectionPolicy) -> None:
        worst = settings.worst_case_seconds
        super().__init__(
            dataclasses.replace(settings, pool_blocking=True, pool_timeout=worst), policy, PoolEvents(), 1, lambda: 1
        )

    def exhausted(self, why: str | None = None) -> PoolExhaustedError:
        return PoolExhaustedError(
            f"The connection that {self._settings.prefix} keeps outside its pool for stats and health "
            f"checks was not free within {self._settings.pool_timeout:g} s (the worst case of one command)."
        )


class SidePool(_PoolBase):
    """One connection outside the counted pools, for the publisher and health checks,
    mixed into a redis-py pool class: a checkout that finds it out waits in the one fair
    wait (:class:`~flask_redispool._wait.FairWait`) up to ``worst_case_seconds``. Counted
    nowhere: its connection is named ``...:stats``, which keeps it out of the per-process
    counts too."""

    #: Why a checkout is refused: set when its owner is done with it (:meth:`close_for_good`).
    closed: str | None = None

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(*args, **{**kwargs, "max_connections": 1})
        self._wait = _SideWait(settings, self.connection_class.policy)

    def __repr__(self) -> str:
        return pool_repr(self, "outside the pool")

    def close_for_good(self, message: str) -> None:
        """Close the connection; from now on a checkout raises a :class:`RuntimeError`
        with ``message`` (a client used after the block that lent it)."""
        self.closed = message
        self.disconnect()

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        if self.closed is not None:
            raise RuntimeError(self.closed)
        checkout = functools.partial(self._checkout, args, kwargs)
        connection = None if self._wait.waiters else checkout()
        return connection if connection is not None else self._wait.take(checkout)

    def _checkout(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Connection | None:
        try:
            return super().get_connection(*args, **kwargs)
        except MaxConnectionsError:
            return None

    def release(self, connection: Connection) -> None:  # type: ignore[override]
        super().release(connection)
        self._wait.wake_first()


class SideConnectionPool(SidePool, ConnectionPool):
    """The side connection to one server (or one cluster node)."""


class SideSentinelPool(SidePool, _KeepsSlotAfterFailover, SentinelConnectionPool):
    """The side connection to a Sentinel service's master: it follows the master as
    :class:`CountedSentinelPool` does, and keeps its one slot after a failover."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        connection = super().get_connection(*args, **kwargs)
        self._drop_if_stale(connection)
        return connection

    def release(self, connection: Connection) -> None:  # type: ignore[override]
        self._forget_former_master(connection)
        super().release(connection)


def address_of(options: dict[str, Any]) -> str:
    """Where connections made with ``options`` (a pool's connection keyword arguments)
    go: ``host:port``, a socket path, or ``fakeredis``."""
    if "path" in options:
        return str(options["path"])
    if "server" in options:
        return "fakeredis"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


def pool_repr(pool: Any, where: str) -> str:
    """A pool's repr (a sync or async pool of ours, with its ``settings``), with nothing
    secret in it on any redis-py (7's lists every connection keyword argument, the
    password included)."""
    settings: Settings = pool.settings
    return (
        f"<{type(pool).__module__}.{type(pool).__name__} {settings.key('URL')}={settings.redacted_url} "
        f"{where} max_connections={pool.max_connections}>"
    )


def side_client(
    settings: Settings,
    connection_class: type[Any],
    kwargs: dict[str, Any],
    sentinel: tuple[str, Sentinel] | None = None,
    **options: Any,
) -> Redis:
    """A client on one connection of its own, outside the pools, for the publisher and
    :meth:`~flask_redispool.RedisPool.health`: it never takes or waits for a connection
    that requests need. Named ``<client name>:<host>:<pid>:stats``, which keeps it out of
    the per-process counts. redis-py's pool checks it before each use, so one the server
    closed while idle (its ``timeout``) is reconnected, not failed. Behind Sentinel
    (``sentinel`` is the service name and its :class:`~redis.sentinel.Sentinel`) it
    follows the master like the pools do. ``options`` go over ``kwargs``: the client of
    :meth:`~flask_redispool.RedisPool.blocking` has a longer ``socket_timeout`` and its
    connection is named as the pool's are (``name_suffix=""``)."""
    common: dict[str, Any] = {"connection_class": connection_class, "name_suffix": ":stats", **kwargs, **options}
    if sentinel is None:
        pool: SidePool = SideConnectionPool(settings=settings, **common)
    else:
        pool = SideSentinelPool(*sentinel, is_master=True, settings=settings, **common)
    return Redis(connection_pool=pool)


def connection_options(settings: Settings, url_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The redis-py connection keyword arguments of ``settings``: the URL's, then
    ``OPTIONS``, TLS, the credential provider, timeouts and a retry that never repeats a write.

    :raises ConfigError: a credential provider and credentials in the URL or ``OPTIONS``."""
    kwargs = dict(url_kwargs)
    kwargs.update(settings.options)
    kwargs.update(settings.ssl_options)
    if settings.credential_provider is not None:
        _check_one_source_of_credentials(settings, kwargs)
        kwargs["credential_provider"] = settings.credential_provider
    kwargs.update(
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout,
        health_check_interval=settings.health_check_interval,
        decode_responses=settings.decode_responses,
        retry=OnceRetry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries),
    )
    return check_client_cache(settings, kwargs)


def _check_one_source_of_credentials(settings: Settings, kwargs: dict[str, Any]) -> None:
    """Refuse a user name or password beside ``CREDENTIAL_PROVIDER``: redis-py would refuse
    the pair only at the first connection (a ``DataError``)."""
    given = [name for name in ("username", "password") if kwargs.get(name)]
    if given:
        raise ConfigError(
            f"{settings.key('CREDENTIAL_PROVIDER')} gives the credentials, but {settings.key('URL')} "
            f"({settings.redacted_url}) or {settings.key('OPTIONS')} gives a {' and a '.join(given)} too: "
            f"remove them (redis://host:port/db), or leave {settings.key('CREDENTIAL_PROVIDER')} unset."
        )


def create_pool(settings: Settings) -> CountedConnectionPool:
    """Build the pool of a single server (``redis://``, ``rediss://``, ``unix://``,
    ``fakeredis://``). Does no network I/O.

    :raises ConfigError: the URL or ``OPTIONS`` do not make a valid connection.
    """
    kwargs = connection_options(settings, _url_kwargs(settings))
    policy = ConnectionPolicy(settings)
    connection_class = pool_connection_class(kwargs.pop("connection_class", Connection), policy)
    check_connection_kwargs(settings, connection_class, kwargs)
    return CountedConnectionPool(settings=settings, policy=policy, connection_class=connection_class, **kwargs)


def _url_kwargs(settings: Settings) -> dict[str, Any]:
    url = settings.url
    path = "" if settings.scheme == "unix" else urlsplit(url).path  # a socket's path is no database
    try:
        if not _DB_PATH_RE.fullmatch(path):
            raise ValueError("the path must be a database number, such as /0")
        kwargs = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"{settings.key('URL')} is not a valid Redis URL ({settings.redacted_url}): {exc}") from None
    check_query_options(settings, kwargs)
    if settings.scheme == "fakeredis":
        kwargs = _fake_kwargs(settings, kwargs)
    return kwargs


def parse_addresses(hosts: str, default_port: int, what: str) -> list[tuple[str, int]]:
    """``host[:port],host[:port]…`` of a URL naming several servers (sentinels, cluster nodes).

    :raises ValueError: one is not ``host[:port]``.
    """
    addresses = []
    for host_port in hosts.split(","):
        host, colon, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
        if not host or (colon and not port.isdigit()) or not 0 < int(port or default_port) < 65536:
            raise ValueError(f"each {what} must be host[:port], separated by commas; got {host_port!r}")
        addresses.append((host, int(port or default_port)))
    return addresses


def check_query_options(settings: Settings, parsed: dict[str, Any]) -> None:
    """Refuse options in the query string of a URL (as :func:`~flask_redispool._url.parse_url`
    gave ``parsed``) that a dedicated key or ``OPTIONS`` sets too."""
    url_query_conflicts(settings, {k: v for k, v in parsed.items() if k not in _URL_PARTS})


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
    """Make (but do not connect) one connection now, and encode text as its commands will,
    so a bad option fails at init_app. The message names options, never their values (secrets)."""
    try:
        connection_class(**kwargs)
        # What redis-py does with each str argument of a command (its documented encoding
        # options, and their defaults): an unknown or non-text codec or error handler fails here.
        "\u00e9".encode(kwargs.get("encoding", "utf-8"), kwargs.get("encoding_errors", "strict"))
    except (TypeError, ValueError, LookupError, RedisError) as exc:
        # A TypeError names the unexpected keyword; other errors may echo a value.
        detail = str(exc) if isinstance(exc, TypeError) else f"{type(exc).__name__} for one of {sorted(kwargs)}"
        raise ConfigError(
            f"{settings.key('OPTIONS')} or {settings.key('URL')} holds an option "
            f"that {getattr(connection_class, 'base', connection_class).__name__} does not take: {detail}"
        ) from None
