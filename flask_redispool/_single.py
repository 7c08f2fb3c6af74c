"""One Redis server behind the pool: ``redis://``, ``rediss://``, ``unix://`` and
``fakeredis://`` URLs.

One counted pool (:func:`~flask_redispool._pool.create_pool`), which ``client`` and
``replica_client`` share; one connection outside it for the publisher and health checks
(:func:`~flask_redispool._pool.side_client`); and per event loop, a ``redis.asyncio``
client on a counted pool of the loop's own, with the same settings.

:class:`SingleServer` is also the shape of a topology whose clients are
:class:`redis.Redis` on counted pools: the Sentinel one extends it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from redis import Redis
from redis.exceptions import ConnectionError, TimeoutError

from ._asyncio import AsyncContextClient, CountedAsyncPool, async_connection_kwargs
from ._client import ContextClient
from ._pool import address_of, check_connection_kwargs, create_pool, side_client
from ._poolset import PoolSet

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

    from ._asyncio import AsyncLoopClient, LoopOwner
    from ._config import Settings
    from ._connection import ConnectionPolicy
    from ._pool import CountedPool
    from ._snapshots import AnyClient
    from ._stats import PoolCounters

__all__ = ["OneConnection", "SingleServer"]

T = TypeVar("T")


class OneConnection:
    """A :class:`~flask_redispool._topology.SideConnection` on a client of one server with
    a pool of its own (``make`` makes it).

    :param make: makes the client; refers to nothing of the counted pools."""

    def __init__(self, make: Callable[..., Redis]) -> None:
        self._make = make

    def open(self, **options: Any) -> Redis:
        return self._make(**options)

    def close(self, client: AnyClient) -> None:
        cast(Redis, client).connection_pool.disconnect()


class SingleServer:
    """The :class:`~flask_redispool._topology.Topology` of one server."""

    own_keys: ClassVar[tuple[str, ...]] = ()
    serves_what: ClassVar[str] = "one server"
    url_form: ClassVar[str] = "redis://host:port/db"
    async_accessors: ClassVar[tuple[str, ...]] = ("async_client", "async_replica_client")

    def __init__(self, settings: Settings, *, owner: str, held_key: str, loops: LoopOwner) -> None:
        self.settings = settings
        self._owner = owner
        policy, pools, self.side = self._make_pools(settings)
        self.pools = PoolSet(settings, policy, pools, self, loops, held_key)
        primary, replica = self.pools.primary, self.pools.replica
        self.client: Redis = _context_client(primary, held_key)
        self.replica_client: Redis = self.client if replica is primary else _context_client(replica, held_key)
        self._async_kwargs = self._checked_async_kwargs()

    def _make_pools(self, settings: Settings) -> tuple[ConnectionPolicy, Sequence[CountedPool], OneConnection]:
        """The pools' shared policy, the pools (the first serves ``client``, the last
        ``replica_client``) and the side connection. No network I/O.

        :raises ConfigError: the URL or ``OPTIONS`` do not make a valid connection."""
        pool = create_pool(settings)
        side = functools.partial(side_client, settings, pool.connection_class, pool.connection_options)
        return pool.policy, (pool,), OneConnection(side)

    def _checked_async_kwargs(self) -> dict[str, Any]:
        """The async pools' connection keyword arguments, checked now (a bad option fails
        at ``init_app``)."""
        kwargs = async_connection_kwargs(self.pools)
        options = {name: value for name, value in kwargs.items() if name != "connection_class"}
        check_connection_kwargs(self.settings, kwargs["connection_class"], options)
        return kwargs

    def async_client(self, counters: PoolCounters) -> AsyncLoopClient:
        """One loop's client, on a counted ``redis.asyncio`` pool of its own."""
        return AsyncContextClient(connection_pool=CountedAsyncPool(self.pools, counters, **self._async_kwargs))

    def cluster_client(self) -> RedisCluster:
        settings = self.settings
        raise RuntimeError(
            f"{self._owner}.cluster_client is for Redis Cluster URLs (redis+cluster://), but "
            f"{settings.key('URL')} is {settings.redacted_url}: use redis_pool.client."
        )

    def pool(self) -> CountedPool:
        return self.pools.primary

    def reader(self) -> AnyClient:
        return self.client

    def connect(self, client: AnyClient) -> None:
        """Check out (and so connect and set up) one connection of ``client`` and give it back."""
        pool = cast(Redis, client).connection_pool
        pool.release(pool.get_connection())

    def client_lists(self, client: AnyClient) -> list[dict[str, Any]]:
        """``CLIENT LIST`` of ``client``'s server and of every other one the pools use now
        (:meth:`nodes`); one gone since it was listed is left out."""
        return [entry for entries in self._ask_each(client, Redis.client_list).values() for entry in entries]

    def server_info(self, client: AnyClient, section: str) -> dict[str, dict[str, Any]]:
        """``INFO section`` of the servers :meth:`client_lists` lists, by address."""
        return self._ask_each(client, lambda server: server.info(section))

    def _ask_each(self, client: AnyClient, ask: Callable[[Redis], T]) -> dict[str, T]:
        """``ask`` of ``client``'s server and of every other one the pools use now, by address."""
        answers = {_address(cast(Redis, client)): ask(cast(Redis, client))}
        for node in self.nodes():
            try:
                answers[_address(node)] = ask(node)
            except (ConnectionError, TimeoutError):
                continue
            finally:
                node.close()
        return answers

    def nodes(self) -> list[Redis]:
        """Clients of the servers besides ``client``'s that the pools use now; the caller
        closes them. None for one server."""
        return []

    def close(self) -> None:
        """Nothing is open besides the pools."""


def _address(client: Redis) -> str:
    """Where ``client`` connects: its counted pool's address (a Sentinel master's once known)."""
    pool = client.connection_pool
    return getattr(pool, "address", None) or address_of(pool.connection_kwargs)


def _context_client(pool: CountedPool, held_key: str) -> ContextClient:
    client = ContextClient(connection_pool=pool)
    client.held_key = held_key
    return client
