"""Where an app keeps what flask-redispool made for it: the hub's record, read by the
CLI and the collectors without importing the extension (which imports them).

Each :class:`~flask_redispool.RedisPool` on an app owns one :class:`AppState`, in
``app.extensions["redispool"][config_prefix]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from flask import Flask
    from quart import Quart
    from redis import Redis

    from ._asyncio import AsyncPools
    from ._config import Settings
    from ._extension import RedisPool
    from ._poolset import PoolSet
    from ._snapshots import AnyClient
    from ._topology import Topology

    #: A Flask app, or a Quart app.
    App: TypeAlias = Flask | Quart

__all__ = ["CLOSED_KEY", "CLOSE_CHECKS_KEY", "EXTENSION_KEY", "LOOPS_KEY", "AppState", "app_states", "before_close"]

#: Where each app keeps its pools: ``app.extensions["redispool"][config_prefix]``.
EXTENSION_KEY: Final = "redispool"
#: Where each app keeps the owner of the event loops its async views run on.
LOOPS_KEY: Final = "redispool.loops"
#: The config prefixes whose pools :meth:`RedisPool.close` has disposed of on an app.
CLOSED_KEY: Final = "redispool.closed"
#: Callables that :meth:`RedisPool.close` calls with the app before it disposes of anything
#: (the pytest plugin's leak watch): a list in ``app.extensions``.
CLOSE_CHECKS_KEY: Final = "redispool.close_checks"


@dataclass(frozen=True)
class AppState:
    """One app's pools for one config prefix, kept in ``app.extensions``.

    It holds the app's :class:`~flask_redispool._topology.Topology`, which holds the rest
    (its pools, their publisher, the async pools); readers ask the topology, never which
    one it is. ``client`` and ``replica_client`` are the topology's, kept here too: every
    request reads one.
    """

    extension: RedisPool
    settings: Settings
    topology: Topology  # one server, a Sentinel service, a Redis Cluster...
    client: Redis  # prepared once, shared by every context
    replica_client: Redis  # on the replicas' pool, or the same as client

    @property
    def pools(self) -> PoolSet:
        """The counted pools, and what spans them (the publisher, the async pools)."""
        return self.topology.pools

    @property
    def async_pools(self) -> AsyncPools:
        """One ``redis.asyncio`` pool per event loop, made on first use."""
        return self.topology.pools.async_pools

    def reader(self) -> AnyClient:
        """The pooled client that reads snapshots and ``CLIENT LIST`` for reports and
        scrapes (behind ``redis+cluster://``, the cluster client, made now if need be,
        which asks the nodes for the slots)."""
        return self.topology.reader()


def app_states(app: App) -> list[AppState]:
    """Every :class:`RedisPool` registered on ``app``, in registration order."""
    return list(app.extensions.get(EXTENSION_KEY, {}).values())


def before_close(app: App) -> None:
    """Run the checks registered under :data:`CLOSE_CHECKS_KEY` on ``app``, which still has
    every pool and connection it had."""
    checks: list[Callable[[App], None]] = app.extensions.get(CLOSE_CHECKS_KEY, [])
    for check in list(checks):
        check(app)
