"""The pools of one app and prefix, and what they share: the hub's part that holds connections.

A single server has one pool; a Sentinel service has two, its master's and its
replicas'. A :class:`PoolSet` owns them and everything that spans them:

- one :class:`~flask_redispool._snapshots.StatsPublisher` per process, started by the
  process's first connection in any of its pools, publishing one snapshot that adds
  the pools up and lists each (:meth:`PoolSet.snapshot`);
- forks: a child gets a publisher of its own, and a parent that forks with nothing in
  use closes its idle connections and withdraws its snapshot until it uses a pool again
  (a gunicorn master that preloads the app serves nothing);
- the connection outside the pools that the publisher and health checks use;
- the circuit breaker's probe, a PING on a connection of its own (made like the side
  connection), and its end when the set closes;
- closing: the publisher, every pool, and what the topology opened besides (the
  connections to the sentinels).

The pools know nothing of it: it listens to their ``first_connect`` event
(:mod:`~flask_redispool._events`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._asyncio import AsyncPools
from ._breaker import ping_through
from ._client_cache import cache_figures
from ._snapshots import StatsPublisher
from ._stats import HOST, PoolFigures, PoolStats
from ._wait import wake_closed

if TYPE_CHECKING:
    from ._asyncio import LoopOwner
    from ._config import Settings
    from ._connection import ConnectionPolicy
    from ._pool import CountedPool
    from ._topology import Topology

__all__ = ["PoolSet"]

# Every live set, so that a forked child can give each a publisher of its own.
_SETS: weakref.WeakSet[PoolSet] = weakref.WeakSet()


class PoolSet:
    """The counted pools of one app and prefix; :attr:`primary` serves ``client``.

    Made by the app's :class:`~flask_redispool._topology.Topology`, complete: nothing is
    set on it afterwards. The topology adds the pools that its clients make as they go
    (a cluster's, one per node).

    :param settings: the validated settings every pool was built from.
    :param policy: what the pools' connections share (names, refusals, error notes).
    :param pools: the pools made with the topology (the first is :attr:`primary`).
    :param topology: its side connection (the publisher's), its async clients, and what
        it opened besides the pools, closed with the set.
    :param loops: who runs the app's async views: their loops' pools close with them.
    :param held_key: where the app's contexts keep what holds a connection, in ``g``.
    """

    def __init__(
        self,
        settings: Settings,
        policy: ConnectionPolicy,
        pools: Sequence[CountedPool],
        topology: Topology,
        loops: LoopOwner,
        held_key: str,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._owned: tuple[CountedPool, ...] = ()
        self._weak: list[weakref.ref[CountedPool]] = []
        #: The topology that made the set (a Redis Cluster's, a Sentinel service's...).
        self.topology = topology
        self._side = topology.side
        #: This process's publisher (a forked child gets its own).
        self.publisher = self._new_publisher()
        #: The same app's ``redis.asyncio`` pools, one per event loop, counted in snapshots.
        self.async_pools = AsyncPools(self, loops, held_key)
        for pool in pools:
            self.add(pool)
        name = self.pools[0].telemetry_name() if self.pools else settings.redacted_url
        policy.breakers.probe_with(ping_through(self._side), name)  # the side connection: no pool's
        _SETS.add(self)

    def add(self, pool: CountedPool, *, weakly: bool = False) -> None:
        """Own ``pool`` too (the first one added is :attr:`primary`); ``weakly``: count it in
        only while its client keeps it (a cluster client drops the pool of a node that left)."""
        pool.events.listen(first_connect=self.connected)
        if weakly:
            self._weak = [ref for ref in self._weak if ref() is not None] + [weakref.ref(pool)]
        else:
            self._owned += (pool,)

    @property
    def pools(self) -> tuple[CountedPool, ...]:
        """The pools in use, in the order they were made."""
        return self._owned + tuple(pool for ref in self._weak if (pool := ref()) is not None)

    @property
    def primary(self) -> CountedPool:
        """The pool :attr:`RedisPool.client <flask_redispool.RedisPool.client>` uses."""
        return self.pools[0]

    @property
    def replica(self) -> CountedPool:
        """The pool that reads from replicas, or :attr:`primary` where there are none."""
        return self.pools[-1]

    def _new_publisher(self) -> StatsPublisher:
        return StatsPublisher(self.settings, weakref.WeakMethod(self.snapshot), self._side)

    def connected(self) -> None:
        """A pool made this process's first connection: start publishing."""
        publisher = self.publisher
        if not publisher.started:
            publisher.start()

    def _forked(self) -> None:
        self.publisher = self._new_publisher()

    def _forking(self) -> None:
        """This process is about to fork. One with no connection in use, such as a gunicorn
        master that preloaded the app and ran a warm-up command, serves nothing: it closes
        its idle connections, so that no child inherits them and the server sees none of
        its own, and withdraws its snapshot until it checks a connection out again. One
        that is serving (a connection in use, an event loop's pool) keeps everything."""
        if self.in_use() or self.async_pools.pool_count():
            return
        for pool in self.pools:
            pool.disconnect(inuse_connections=False)
        self.publisher.withdraw()

    @property
    def max_connections(self) -> int:
        """The most connections the sync pools may hold at once, together."""
        return sum(pool.max_connections for pool in self.pools)

    def in_use(self) -> int:
        """Connections checked out of the sync pools now."""
        return sum(pool.connection_counts()[0] for pool in self.pools)

    @property
    def timeouts(self) -> int:
        """Checkouts of the sync pools that ended in :class:`~flask_redispool.PoolExhaustedError`."""
        return sum(pool.counters.timeouts for pool in self.pools)

    def snapshot(self) -> PoolStats:
        """This process's view of every pool, added up and one by one; no network I/O."""
        settings, async_pools = self.settings, self.async_pools
        pools = [pool.figures() for pool in self.pools]
        created = _sum(pools, "created")
        return PoolStats(
            prefix=settings.prefix,
            url=settings.redacted_url,
            max_connections=_sum(pools, "max_connections"),
            blocking=settings.pool_blocking,
            pool_timeout=settings.pool_timeout,
            socket_timeout=settings.socket_timeout,
            retries=settings.retries,
            worst_case_seconds=settings.worst_case_seconds,
            created=created,
            in_use=_sum(pools, "in_use"),
            idle=_sum(pools, "idle"),
            peak_in_use=created,
            checkouts=_sum(pools, "checkouts"),
            waits=_sum(pools, "waits"),
            timeouts=_sum(pools, "timeouts"),
            pid=os.getpid(),
            host=HOST,
            client_name=settings.client_name,
            naming_refused=self.policy.naming_refused,
            async_pools=async_pools.pool_count(),
            async_in_use=async_pools.in_use(),
            async_checkouts=async_pools.counters.checkouts,
            async_waits=async_pools.counters.waits,
            async_timeouts=async_pools.counters.timeouts,
            **self.policy.breakers.figures(),
            **cache_figures([pool.client_cache for pool in self.pools]),
            pools=pools,
        )

    def disconnect(self) -> None:
        """Close every pool's connections (no network I/O beyond closing sockets)."""
        for pool in self.pools:
            pool.disconnect()

    def close(self, message: str) -> None:
        """Stop publishing (the snapshot deleted, the thread joined), then close every pool
        for good, and what the topology opened besides.

        From now on no connection of the pools (sync, async, the publisher's) connects
        again: whoever still holds a client of theirs gets a :class:`RuntimeError` with
        ``message``. Idle connections close now; one in use in another thread closes when
        it comes back, after its command ended undisturbed.
        """
        self.publisher.stop()
        self.policy.closed = message
        self.policy.breakers.close()  # after: a probe in flight connects no more
        wake_closed(self.policy)  # async waiters, on their loops
        self.publisher.close()  # a health check may have opened its connection again meanwhile
        for pool in self.pools:
            pool.close_for_good()
        self._close_topology()

    def orphan(self) -> None:
        """The app was collected without ``close()``: end the publisher's thread and close
        the sockets, without network I/O (this runs inside the garbage collector)."""
        self.publisher.orphan()
        self.policy.breakers.orphan()
        self.disconnect()
        self._close_topology()

    def _close_topology(self) -> None:
        self.topology.close()


def _sum(pools: list[PoolFigures], name: str) -> int:
    return sum(int(pool[name]) for pool in pools)  # type: ignore[literal-required,misc]


def _before_fork() -> None:
    for pool_set in list(_SETS):
        pool_set._forking()


def _after_fork_in_child() -> None:
    for pool_set in list(_SETS):
        pool_set._forked()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
