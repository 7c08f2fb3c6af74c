"""OpenTelemetry: what redis-py cannot see of our pools, recorded through redis-py's own
recorder, under its names.

redis-py reports its pools to OpenTelemetry once a program has turned its observability
on (``redis.observability.get_observability_instance().init(OTelConfig())``), and ours
are redis-py pools: connection counts by state (redis-py 8) and creation times come from
redis-py itself. What it cannot see is the wait: a sync pool here waits for a free
connection itself, in front of redis-py's non-blocking pool, so it records each
checkout's ``db.client.connection.wait_time`` (as redis-py's own blocking pool does) and
each ``db.client.connection.timeouts``. The ``redis.asyncio`` pools are redis-py's
blocking pool and record their own waits; their timeouts are recorded here.

One counter for one thing: nothing here is recorded by redis-py as well. Nothing is
recorded when observability is off; a pool asks whether it is on when it is made and
when it makes a connection, so a command pays one attribute check.

Each figure carries its pool's name, ``db.client.connection.pool.name``, which redis-py
makes from the ``host`` and ``port`` of the pool's ``connection_kwargs`` (``host:port_id``).
A Sentinel pool has no address of its own, so it is named after its service and role
(:func:`name_sentinel_pool`).
"""

from __future__ import annotations

from typing import Any, Final

import redis
from redis.observability.attributes import get_pool_name
from redis.observability.providers import get_observability_instance
from redis.observability.recorder import record_connection_timeout, record_connection_wait_time

__all__ = [
    "ASYNC_POOLS_RECORD_TIMEOUTS",
    "name_sentinel_pool",
    "observed",
    "record_async_timeout",
    "record_timeout",
    "record_wait",
]

#: Whether ``redis.asyncio``'s blocking pool records its own timeouts (redis-py 8.2 and
#: later): then an async pool's timeout is recorded there, not here as well.
ASYNC_POOLS_RECORD_TIMEOUTS: Final = tuple(int(part) for part in redis.__version__.split(".")[:2]) >= (8, 2)


def observed() -> bool:
    """Whether redis-py's OpenTelemetry metrics are on in this process."""
    return get_observability_instance().is_enabled()


def record_wait(pool: Any, seconds: float) -> None:
    """``db.client.connection.wait_time``: how long a checkout of ``pool`` took."""
    record_connection_wait_time(pool_name=get_pool_name(pool), duration_seconds=seconds)


def record_timeout(pool: Any) -> None:
    """``db.client.connection.timeouts``: a checkout of ``pool`` found no free connection in time."""
    record_connection_timeout(pool_name=get_pool_name(pool))


def record_async_timeout(pool: Any) -> None:
    """:func:`record_timeout` for a ``redis.asyncio`` pool, where redis-py does not record it itself."""
    if not ASYNC_POOLS_RECORD_TIMEOUTS:
        record_timeout(pool)


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
