"""What a URL scheme stands for: one server, a Sentinel service, a Redis Cluster.

A **topology** is the one object that knows how the servers behind a URL are reached
(:class:`Topology`); everything else (the hub, the CLI, the collectors, the report, the
health check) asks it instead of asking which one it is. Each lives in a module of its
own (:mod:`~flask_redispool._single`, :mod:`~flask_redispool._sentinel`,
:mod:`~flask_redispool._cluster`), and :data:`TOPOLOGIES`, the registry, maps each URL
scheme to the class that serves it, as Flask-Caching's ``CACHE_TYPE`` picks a backend.
The URL check reads the registry (the schemes a config error lists), and
:func:`topology_class` picks from it. A new scheme (``rediss+sentinel://``, say) is a line
here and what its module does with it; a new topology, a module and a line here.

The registry names each class by its import path, resolved at ``init_app`` (as
SQLAlchemy's dialect registry does): so this module stays a leaf that the config check
can import, below the topologies, which import the config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from ._errors import ConfigError

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

    from ._asyncio import AsyncLoopClient, LoopOwner
    from ._config import Settings
    from ._pool import CountedPool
    from ._poolset import PoolSet
    from ._snapshots import AnyClient
    from ._stats import PoolCounters

__all__ = ["TLS_SCHEMES", "TLS_TWINS", "TOPOLOGIES", "SideConnection", "Topology", "open_topology", "topology_class"]


class SideConnection(Protocol):
    """The one connection outside the pools, for the publisher and the health check. The
    publisher keeps it for the life of its thread, so it refers to nothing of the pools
    (which the publisher holds weakly)."""

    def open(self, **options: Any) -> AnyClient:
        """A client of its own connection, made now (connecting at its first command);
        ``options`` are connection keyword arguments over the pools' (a longer
        ``socket_timeout``)."""

    def close(self, client: AnyClient) -> None:
        """Close what :meth:`open` made."""


class Topology(Protocol):
    """The servers behind one app's URL, and every way the package reaches them.

    Made by ``init_app`` from validated settings, without network I/O:
    ``topology_class(settings)(settings, owner=..., held_key=..., loops=...)``. It builds
    its :class:`~flask_redispool._poolset.PoolSet` whole, and the clients the accessors
    hand out.
    """

    #: Config keys only this topology reads (``SENTINEL_PASSWORD``...): set behind another
    #: scheme, they are refused, naming :attr:`serves_what` and :attr:`url_form`.
    own_keys: ClassVar[tuple[str, ...]]
    #: What it serves, for that message: ``"a Sentinel service"``.
    serves_what: ClassVar[str]
    #: The form of its URLs, for that message: ``"redis+sentinel://host:port/service"``.
    url_form: ClassVar[str]
    #: The async accessors that serve it, the first one named when another is used.
    async_accessors: ClassVar[tuple[str, ...]]

    #: The counted pools, their publisher and the async pools.
    pools: PoolSet

    @property
    def side(self) -> SideConnection:
        """The connection outside the pools that the publisher and the health check use."""

    #: What :attr:`RedisPool.client <flask_redispool.RedisPool.client>` is: a prepared
    #: client, or one whose every use explains what to use instead.
    client: Redis
    #: What :attr:`RedisPool.replica_client <flask_redispool.RedisPool.replica_client>` is.
    replica_client: Redis

    def __init__(self, settings: Settings, *, owner: str, held_key: str, loops: LoopOwner) -> None:
        """:param owner: the ``RedisPool``'s repr, for error messages.
        :param held_key: where the app's contexts keep what holds a connection, in ``g``.
        :param loops: who runs the app's async views (their loops' pools close with them).

        :raises ConfigError: the URL or ``OPTIONS`` do not make a valid connection."""

    def cluster_client(self) -> RedisCluster:
        """:attr:`RedisPool.cluster_client <flask_redispool.RedisPool.cluster_client>`.

        :raises RuntimeError: not a Redis Cluster, saying what to use."""

    def pool(self) -> CountedPool:
        """The pool of :meth:`RedisPool.get_pool <flask_redispool.RedisPool.get_pool>`.

        :raises RuntimeError: no one pool serves the app (a cluster's are per node)."""

    def async_client(self, counters: PoolCounters) -> AsyncLoopClient:
        """One event loop's client, on pools of its own, counting into ``counters``."""

    def reader(self) -> AnyClient:
        """The pooled client that reads snapshots and ``CLIENT LIST`` for reports and scrapes."""

    def connect(self, client: AnyClient) -> None:
        """Connect ``client`` (a :meth:`reader`) now, so that a refused connection fails first."""

    def client_lists(self, client: AnyClient) -> list[dict[str, Any]]:
        """``CLIENT LIST`` of every server the pools use, read through ``client`` (a
        :meth:`reader`) and the topology's own view; a server gone meanwhile is left out."""

    def server_info(self, client: AnyClient, section: str) -> dict[str, dict[str, Any]]:
        """``INFO section`` of the servers :meth:`client_lists` lists, by address (``host:port``)."""

    def close(self) -> None:
        """Close what the topology opened besides its pools (the pools close themselves)."""


#: The registry: each URL scheme ``<PREFIX>_URL`` accepts (in the order a config error lists
#: them), and the import path of the :class:`Topology` that serves it.
TOPOLOGIES: Final[dict[str, str]] = {
    "redis": "flask_redispool._single:SingleServer",
    "rediss": "flask_redispool._single:SingleServer",
    "unix": "flask_redispool._single:SingleServer",
    "fakeredis": "flask_redispool._single:SingleServer",
    "redis+sentinel": "flask_redispool._sentinel:SentinelService",
    "rediss+sentinel": "flask_redispool._sentinel:SentinelService",
    "redis+cluster": "flask_redispool._cluster:Cluster",
    "rediss+cluster": "flask_redispool._cluster:Cluster",
}
#: Each plain scheme and its TLS twin, whose connections to the data nodes use TLS.
TLS_TWINS: Final = {"redis": "rediss", "redis+sentinel": "rediss+sentinel", "redis+cluster": "rediss+cluster"}
#: The schemes that use TLS (and take the ``SSL_*`` keys).
TLS_SCHEMES: Final = tuple(TLS_TWINS.values())


def topology_class(settings: Settings, scheme: str | None = None) -> type[Topology]:
    """The topology of ``settings.url`` (whose scheme the config check found registered),
    or of ``scheme``."""
    module, _, name = TOPOLOGIES[scheme or settings.scheme].partition(":")
    cls: type[Topology] = getattr(importlib.import_module(module), name)
    return cls


def open_topology(settings: Settings, *, owner: str, held_key: str, loops: LoopOwner) -> Topology:
    """The topology of ``settings.url``, made now (no network I/O); see :class:`Topology`.

    :raises ConfigError: a key that only another topology reads is set, or the URL or
        ``OPTIONS`` do not make a valid connection.
    """
    chosen = topology_class(settings)
    for scheme in TOPOLOGIES:
        other = topology_class(settings, scheme)
        given = [settings.key(name) for name in other.own_keys if getattr(settings, name.lower()) is not None]
        if given and other is not chosen:
            raise ConfigError(
                f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to {other.serves_what}, "
                f"but {settings.key('URL')} is not {scheme}:// ({settings.redacted_url}): use {other.url_form} "
                "or remove them."
            )
    return chosen(settings, owner=owner, held_key=held_key, loops=loops)
