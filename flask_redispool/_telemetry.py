"""OpenTelemetry: what redis-py cannot see of our pools, recorded through redis-py's own
recorder, under its names.

redis-py reports its pools to OpenTelemetry once a program has turned its observability
on (``redis.observability.get_observability_instance().init(OTelConfig())``), and ours
are redis-py pools: connection counts by state (redis-py 8) and creation times come from
redis-py itself. What it cannot see is the wait: every pool here, sync and async, waits
for a free connection itself (:mod:`~flask_redispool._wait`), in front of redis-py's
non-blocking pool, so :class:`PoolTelemetry`, a listener of the pool's events
(:mod:`~flask_redispool._events`), records each checkout's
``db.client.connection.wait_time`` (as redis-py's own blocking pool does) and each
``db.client.connection.timeouts``.

One counter for one thing: nothing here is recorded by redis-py as well. Nothing is
recorded when observability is off: the listener listens to checkouts only while it is
on (asked when the pool is made and when it makes a connection), so a command pays
nothing for it.

Each figure carries its pool's name, ``db.client.connection.pool.name``, which redis-py
makes from the ``host`` and ``port`` of the pool's ``connection_kwargs`` (``host:port_id``).
A Sentinel pool has no address of its own, so it is named after its service and role
(:func:`name_sentinel_pool`).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from redis.observability.attributes import get_pool_name
from redis.observability.providers import get_observability_instance
from redis.observability.recorder import record_connection_timeout, record_connection_wait_time

if TYPE_CHECKING:
    from ._events import PoolEvents

__all__ = ["PoolTelemetry", "name_sentinel_pool", "observed"]


def observed() -> bool:
    """Whether redis-py's OpenTelemetry metrics are on in this process."""
    return get_observability_instance().is_enabled()


class PoolTelemetry:
    """Records one pool's checkout times and timeouts, under the pool's name, while
    redis-py's observability is on (see the module). Holds the pool weakly."""

    def __init__(self, pool: Any, events: PoolEvents) -> None:
        self._pool = weakref.ref(pool)
        self._events = events
        self._on = False
        events.listen(connect=self.follow)
        self.follow()

    def follow(self) -> None:
        """Listen to the checkouts and timeouts while observability is on, not otherwise."""
        on = observed()
        if on != self._on:
            self._on = on
            if on:
                self._events.listen(self)
            else:
                self._events.forget(self)

    def checkout_time(self, seconds: float) -> None:
        """``db.client.connection.wait_time``: how long a checkout took."""
        pool = self._pool()
        if pool is not None:
            record_connection_wait_time(pool_name=get_pool_name(pool), duration_seconds=seconds)

    def timeout(self) -> None:
        """``db.client.connection.timeouts``: a checkout found no free connection in time."""
        pool = self._pool()
        if pool is not None:
            record_connection_timeout(pool_name=get_pool_name(pool))


def name_sentinel_pool(pool: Any, role: str) -> None:
    """Name a Sentinel service's pool ``<service>/<role>`` in OpenTelemetry
    (``mymaster/master:6379_<id>``, ``mymaster/replica:6379_<id>``; redis-py adds the port
    and the pool's id) rather than redis-py's ``unknown:6379_<id>``.

    redis-py names a pool by the ``host`` of its ``connection_kwargs``, which a Sentinel
    pool lacks: its connections ask the sentinels where to connect, and take that address
    when they connect. The host set here is their name until then only. Set once, before
    the pool makes a connection, so every figure of the pool carries the same name.
    """
    pool.connection_kwargs["host"] = f"{pool.service_name}/{role}"
