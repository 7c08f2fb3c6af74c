"""Which pools a URL gets: one server's, a Sentinel service's master and replicas, or
one per node of a Redis Cluster.

This is where a new topology plugs in: a function that turns validated settings into
a :class:`~flask_redispool._poolset.PoolSet` of counted pools, without network I/O.
"""

from __future__ import annotations

import functools

from ._asyncio import single_server_async_clients
from ._cluster import cluster_pools
from ._config import Settings
from ._pool import create_pool, side_client
from ._poolset import PoolSet
from ._sentinel import sentinel_pools

__all__ = ["build_pools"]


def build_pools(settings: Settings) -> PoolSet:
    """The pools ``settings.url`` asks for. Does no network I/O.

    :raises ConfigError: the URL or ``OPTIONS`` do not make a valid connection.
    """
    if settings.sentinel:
        return sentinel_pools(settings)
    if settings.cluster:
        return cluster_pools(settings)
    pool = create_pool(settings)
    side = functools.partial(side_client, settings, pool.connection_class, pool.connection_options)
    pools = PoolSet(settings, pool.policy, side)
    pools.add(pool)
    pools.make_async_client = single_server_async_clients(pools)
    return pools
