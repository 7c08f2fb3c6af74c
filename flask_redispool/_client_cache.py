"""``REDIS_CLIENT_CACHE``: redis-py's client-side cache for the app's sync pools, counted.

redis-py 8 keeps replies of reads in a local cache that the server invalidates (Redis's
``CLIENT TRACKING``, RESP3): a read whose reply is cached is answered without a round trip.
redis-py gives a pool one cache (``cache=``) that all its connections share, and answers a
hit only after reading the pending invalidations off the socket of the connection that
filled the entry, even while another thread waits there for its reply (which is then
lost: that command times out). So here each connection of a counted pool gets a cache of
its own (:func:`cached_connection`: redis-py's :class:`~redis.connection.CacheProxyConnection`
around our connection and a :class:`CountedCache`): every entry was filled by the
connection that reads it, which the reading thread holds alone, and no thread ever reads
another's socket. A pool's :class:`PoolCache` makes those caches and counts what happens
to them for ``stats()``, snapshots, ``flask redis-stats`` and Prometheus
(:func:`cache_figures`); redis-py records hits and misses in OpenTelemetry itself (its
``CSC`` metric group). Each cache is redis-py's own (its size, its LRU eviction, its
invalidation), behind its public interface. The ``redis.asyncio`` clients of async views
have no cache: they are unaffected, but for speaking RESP3 too.

What is refused, and when:

- at ``init_app`` (:func:`check_client_cache`): a redis-py older than 8.2 (its cache keeps
  entries filled before a silent reconnect, whose invalidations the server no longer
  sends), RESP2 forced (``protocol=2`` in ``OPTIONS`` or the URL) and ``fakeredis://``
  (no ``CLIENT TRACKING``);
- at each connection's handshake (:meth:`PoolCache.check_server`): a server that is not
  Redis 7.4 or later (Valkey, Redis 7.2 or older): the command raises a :class:`~flask_redispool.ConfigError`
  saying why, and the connection is closed. Nothing is cached, so nothing stale is read.

A connection that closes or reconnects flushes its cache (redis-py does: the server
forgot what it tracked for it); the pool's other connections keep theirs. A forked child
starts with no connections, so no cache, and its own figures.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict

import redis
import redis.cache
from redis.cache import CacheConfig, CacheEntry, CacheEntryStatus, CacheFactory, CacheInterface, CacheKey

from ._errors import ConfigError

if TYPE_CHECKING:
    from collections import OrderedDict

    from redis.cache import CacheConfigurationInterface, EvictionPolicyInterface

    from ._config import Settings

__all__ = [
    "ClientCacheSettings",
    "CountedCache",
    "PoolCache",
    "cache_figures",
    "cached_connection",
    "check_client_cache",
    "parse_client_cache",
    "wrapped_connection",
]

#: The first redis-py whose cache flushes itself on every reconnect (the send path's
#: silent ones too), and that takes a tracking mode and a predicate.
REDIS_PY_NEEDED: Final = "8.2"
#: The first Redis whose client-side caching redis-py accepts.
REDIS_NEEDED: Final = (7, 4)
_ACCEPTS: Final = (
    "True, False, or a dict of the cache's options: 'max_size' (the most replies kept, an int >= 1), "
    "'key_prefixes' (cache only reads of keys that start with one of these str), "
    "'commands' (cache only these read commands, e.g. ['GET', 'HGETALL'])"
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class ClientCacheSettings:
    """``REDIS_CLIENT_CACHE``, validated: what each connection's cache keeps."""

    #: The most replies each connection's cache keeps; the least recently used go first.
    max_size: int = CacheConfig.DEFAULT_MAX_SIZE
    #: Cache only reads whose every key starts with one of these (empty: any key).
    key_prefixes: tuple[str, ...] = ()
    #: Cache only these commands, in upper case (empty: every read redis-py caches).
    commands: tuple[str, ...] = ()

    @property
    def selective(self) -> bool:
        """Whether only some reads are cached: the server then tracks only those (``OPTIN``)."""
        return bool(self.key_prefixes or self.commands)

    def wanted(self, command: str, keys: tuple[Any, ...]) -> bool:
        """Whether a read of ``command`` on ``keys`` (``str`` or ``bytes``) is to be cached."""
        if self.commands and command.upper() not in self.commands:
            return False
        prefixes = self.key_prefixes
        return not prefixes or all(_text(key).startswith(prefixes) for key in keys)


def _text(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def parse_client_cache(value: object) -> ClientCacheSettings | None:
    """The value of ``REDIS_CLIENT_CACHE``: ``None`` when off.

    :raises ValueError: saying what the key takes."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:  # from the environment
        value = value.strip().lower() in _TRUE
    if value is None or value is False:
        return None
    if value is True:
        return ClientCacheSettings()
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise ValueError(_ACCEPTS)
    unknown = sorted(set(value) - {"max_size", "key_prefixes", "commands"})
    if unknown:
        raise ValueError(f"{_ACCEPTS}; {', '.join(map(repr, unknown))} is not one of them")
    max_size = value.get("max_size", CacheConfig.DEFAULT_MAX_SIZE)
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
        raise ValueError(f"{_ACCEPTS}; its 'max_size' is not an int >= 1")
    return ClientCacheSettings(
        max_size=max_size,
        key_prefixes=_strings(value.get("key_prefixes", ()), "key_prefixes"),
        commands=tuple(name.upper() for name in _strings(value.get("commands", ()), "commands")),
    )


def _strings(value: object, option: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{_ACCEPTS}; its {option!r} is not a list of str")
    return tuple(value)


def check_client_cache(settings: Settings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The connection keyword arguments ``kwargs`` (from the URL and ``OPTIONS``) for a pool
    of ``settings``: with ``protocol=3`` when the cache is on.

    :raises ConfigError: the cache is on, but redis-py is older than 8.2, the URL is
        ``fakeredis://``, or RESP2 is forced."""
    if settings.client_cache is None:
        return kwargs
    key = settings.key("CLIENT_CACHE")
    if not hasattr(redis.cache, "TrackingMode"):
        raise ConfigError(
            f"{key} needs redis-py {REDIS_PY_NEEDED} or later, and {redis.__version__} is installed: its "
            "cache keeps replies filled before a reconnect, which the server no longer invalidates. "
            f"Upgrade redis-py, or remove {key}."
        )
    if settings.scheme == "fakeredis":
        raise ConfigError(
            f"{key} needs a Redis server that tracks keys (CLIENT TRACKING), which fakeredis does not: "
            f"test the cache against a real Redis 7.4 or later, or remove {key}."
        )
    protocol = kwargs.get("protocol")
    if protocol is not None and str(protocol) != "3":
        raise ConfigError(
            f"{key} needs RESP3 (the server's invalidations are RESP3 pushes), but {settings.key('OPTIONS')} "
            f"or {settings.key('URL')} sets protocol={protocol}: remove it ({key} turns RESP3 on), "
            f"or remove {key}."
        )
    return {**kwargs, "protocol": 3}


class _Count:
    """A counter that adds one in a C call, atomic under the GIL (:func:`itertools.count`)."""

    __slots__ = ("_count", "add")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.add: Callable[[], int] = self._count.__next__

    @property
    def value(self) -> int:
        return int(repr(self._count)[len("count(") : -1])

    def add_many(self, n: int) -> None:
        for _ in range(n):
            self.add()


class _CountingConfig(CacheConfig):
    """redis-py's cache configuration, which counts the reads that look in the cache: redis-py
    asks :meth:`should_cache` once per read it may answer from the cache, before it looks."""

    def __init__(self, wanted: ClientCacheSettings, lookups: Callable[[], _Count]) -> None:
        selective = wanted.selective
        mode = redis.cache.TrackingMode.OPTIN if selective else redis.cache.TrackingMode.PLAIN
        super().__init__(
            max_size=wanted.max_size, tracking_mode=mode, cache_predicate=wanted.wanted if selective else None
        )
        self._lookups = lookups

    def should_cache(self, command: str, keys: tuple[Any, ...]) -> bool:
        wanted: bool = super().should_cache(command, keys)
        if wanted:
            self._lookups().add()
        return wanted


class CacheFigures(TypedDict):
    """A process's client-side cache figures, in :class:`~flask_redispool._stats.PoolStats`."""

    cache_hits: int
    cache_misses: int
    cache_invalidations: int
    cache_evictions: int
    cache_entries: int


class PoolCache:
    """A pool's client-side caching: it makes a :class:`CountedCache` for each connection
    of the pool (:meth:`connection_cache`), which all count into its counters, and adds up
    their figures. The counters outlive the connections: the totals never go down."""

    def __init__(self, settings: Settings) -> None:
        assert settings.client_cache is not None
        self._settings = settings
        self._start_afresh()
        #: redis-py's cache configuration, one for all the pool's caches (it is read-only).
        self.config = _CountingConfig(settings.client_cache, lambda: self.lookups)
        _CACHES.add(self)

    def _start_afresh(self) -> None:
        """Fresh figures and no caches: at birth, and in a forked child (whose pool makes
        its connections afresh)."""
        self.lookups = _Count()
        self.misses = _Count()
        self.invalidated = _Count()
        self.evicted = _Count()
        #: One per connection the pool made in this process, as the pool keeps its
        #: connections. A list: a snapshot thread copies it while a request thread
        #: appends, each one C call.
        self._caches: list[CountedCache] = []

    def connection_cache(self) -> CountedCache:
        """A new, empty cache for one connection of the pool."""
        cache = CountedCache(self)
        self._caches.append(cache)
        return cache

    def figures(self) -> CacheFigures:
        """What the pool's caches did in this process so far, and how many replies they hold now."""
        lookups, misses = self.lookups.value, self.misses.value
        return CacheFigures(
            cache_hits=max(0, lookups - misses),
            cache_misses=misses,
            cache_invalidations=self.invalidated.value,
            cache_evictions=self.evicted.value,
            cache_entries=sum(cache.size for cache in list(self._caches)),
        )

    def check_server(self, connection: Any) -> None:
        """A connect callback (redis-py calls it after each handshake, with the connection):
        refuse a server whose tracking redis-py's cache does not accept, closing the
        connection, before redis-py's own refusal, which names neither the key nor the server.

        :raises ConfigError: saying why (from the command that connected)."""
        meta = {_text(k): _text(v) for k, v in (connection.handshake_metadata or {}).items()}
        server, version = meta.get("server", "?"), meta.get("version", "?")
        if server == "redis" and _version(version) >= REDIS_NEEDED:
            return
        connection.disconnect()
        key = self._settings.key("CLIENT_CACHE")
        raise ConfigError(
            f"{key} is on, but the server at {connection.host}:{connection.port} is {server} {version}: "
            f"redis-py's client-side cache needs Redis {'.'.join(map(str, REDIS_NEEDED))} or later "
            f"(it refuses Valkey and older Redis, whatever they answer to CLIENT TRACKING). Remove {key} "
            "for this server."
        )


class CountedCache(CacheInterface):
    """One connection's cache: redis-py's (made by its :class:`~redis.cache.CacheFactory`,
    with its LRU eviction), counted into its pool's :class:`PoolCache`. ``hits`` are the
    reads that looked in the cache less those that went to the server (``misses``: each
    stakes a placeholder entry while it waits)."""

    def __init__(self, pool: PoolCache) -> None:
        self._pool = pool
        self._cache = CacheFactory(pool.config).get_cache()

    # CacheInterface: redis-py's cache, counted.
    @property
    def collection(self) -> OrderedDict[Any, Any]:
        return self._cache.collection

    @property
    def config(self) -> CacheConfigurationInterface:
        return self._pool.config

    @property
    def eviction_policy(self) -> EvictionPolicyInterface:
        return self._cache.eviction_policy

    @property
    def size(self) -> int:
        return self._cache.size

    def get(self, key: CacheKey) -> CacheEntry | None:
        return self._cache.get(key)

    def set(self, entry: CacheEntry) -> bool:
        cache = self._cache
        if entry.status is CacheEntryStatus.IN_PROGRESS:  # a read that goes to the server
            self._pool.misses.add()
        before, new = cache.size, entry.cache_key not in cache.collection
        stored = cache.set(entry)
        self._pool.evicted.add_many(before + (1 if stored and new else 0) - cache.size)
        return stored

    def delete_by_cache_keys(self, cache_keys: list[CacheKey]) -> list[bool]:
        return self._cache.delete_by_cache_keys(cache_keys)

    def delete_by_redis_keys(self, redis_keys: list[bytes]) -> list[bool]:
        # Called only for the server's invalidation messages.
        deleted = self._cache.delete_by_redis_keys(redis_keys)
        self._pool.invalidated.add_many(sum(deleted))
        return deleted

    def flush(self) -> int:
        return self._cache.flush()

    def is_cachable(self, key: CacheKey) -> bool:
        return self._cache.is_cachable(key)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def cache_figures(caches: list[PoolCache | None]) -> CacheFigures:
    """The figures of ``caches`` (a process's pools'; ``None`` for a pool without one), added up."""
    total = CacheFigures(cache_hits=0, cache_misses=0, cache_invalidations=0, cache_evictions=0, cache_entries=0)
    for cache in caches:
        if cache is not None:
            for name, value in cache.figures().items():
                total[name] += value  # type: ignore[literal-required]
    return total


def cached_connection(connection: Any, cache: PoolCache) -> Any:
    """``connection`` (new, of ``cache``'s pool) behind redis-py's cache proxy, with a cache
    of its own (:meth:`PoolCache.connection_cache`).

    The proxy's lock serialises reading the pending invalidations of the connection that
    filled an entry: that connection is always the proxy's own, held by one thread at a
    time, so a lock of its own serves, and hits in other threads do not wait on the pool."""
    proxy: Any = _PROXY(connection, cache.connection_cache(), threading.RLock())
    proxy.behind_cache = connection
    return proxy


def wrapped_connection(connection: Any) -> Any:
    """The connection of ours behind the cache proxy (``connection`` itself without one):
    its socket state and address (a Sentinel connection's is set at each connect, on it,
    not on the proxy)."""
    return getattr(connection, "behind_cache", connection)


_PROXY: Final = redis.connection.CacheProxyConnection
#: Every pool cache of ours in this process, for the fork hook below.
_CACHES: weakref.WeakSet[PoolCache] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    for cache in list(_CACHES):
        cache._start_afresh()


os.register_at_fork(after_in_child=_start_afresh_in_child)
