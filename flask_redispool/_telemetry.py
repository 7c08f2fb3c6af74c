"""OpenTelemetry: what redis-py cannot see of our pools, recorded through OpenTelemetry's
public API, under the names redis-py uses for its own pools.

Every pool here, sync and async, waits for a free connection itself
(:mod:`~flask_redispool._wait`), in front of redis-py's non-blocking pool, which times no
checkout and counts no timeout. So :class:`PoolTelemetry`, a listener of the pool's
events (:mod:`~flask_redispool._events`), records each checkout's
``db.client.connection.wait_time`` (as redis-py's own blocking pool does) and each
``db.client.connection.timeouts``: the same instruments (names, units, buckets) and
attributes as redis-py's, on a meter of ours (``flask_redispool``). Connection counts and
creation times are redis-py's to record, when a program turns its observability on:
nothing here is recorded by redis-py as well.

Recording is on while the process's meter provider is the OpenTelemetry SDK's (a program
that exports metrics sets one). Without it OpenTelemetry's API records nothing, so the
listener listens to checkouts only while it is on (asked when the pool is made and when it
makes a connection): with it off, a command pays nothing for it.

Each figure carries its pool's name, ``db.client.connection.pool.name``, which the pool
gives: where it connects (``host:port``), or for a Sentinel service's pools, which connect
wherever the sentinels say, the service and role (``mymaster/master``). redis-py's own
figures of a Sentinel pool carry the same name through :func:`name_sentinel_pool`.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Final

import redis

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, UpDownCounter

    from ._events import PoolEvents

__all__ = ["POOL_NAME", "PoolTelemetry", "name_sentinel_pool", "observed", "record_circuit"]

#: The attribute that names a pool, as redis-py's metrics name it.
POOL_NAME: Final = "db.client.connection.pool.name"
#: Where a checkout's wait time falls, in seconds: redis-py's default buckets.
WAIT_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)


def observed() -> bool:
    """Whether this process exports metrics: its meter provider is the OpenTelemetry SDK's.
    (When the SDK's module is not even imported, it cannot be.)"""
    sdk = sys.modules.get("opentelemetry.sdk.metrics")
    if sdk is None:
        return False
    from opentelemetry import metrics

    return isinstance(metrics.get_meter_provider(), sdk.MeterProvider)


@functools.cache
def instruments() -> tuple[Histogram, Counter]:
    """This process's two instruments, made once, the first time a pool records: the same
    names, units and descriptions as redis-py's."""
    from opentelemetry import metrics

    meter = metrics.get_meter("flask_redispool")
    wait_time = meter.create_histogram(
        name="db.client.connection.wait_time",
        unit="s",
        description="Time to obtain an open connection from the pool",
        explicit_bucket_boundaries_advisory=list(WAIT_BUCKETS),
    )
    timeouts = meter.create_counter(
        name="db.client.connection.timeouts",
        unit="{timeout}",
        description="The number of connection timeouts that have occurred trying to obtain a connection from the pool.",
    )
    return wait_time, timeouts


class PoolTelemetry:
    """Records one pool's checkout times and timeouts under the pool's ``name``, while the
    process exports metrics (see the module)."""

    def __init__(self, events: PoolEvents, name: str) -> None:
        self._events = events
        #: What each figure carries: redis-py's attributes for a pool.
        self.attributes: dict[str, Any] = {
            "db.system": "redis",
            "redis.client.library": f"redis-py:v{redis.__version__}",
            POOL_NAME: name,
        }
        self._on = False
        events.listen(connect=self.follow)
        self.follow()

    def follow(self) -> None:
        """Listen to the checkouts and timeouts while the process exports metrics, not otherwise."""
        on = observed()
        if on != self._on:
            self._on = on
            if on:
                self._events.listen(self)
            else:
                self._events.forget(self)

    def checkout_time(self, seconds: float) -> None:
        """``db.client.connection.wait_time``: how long a checkout took."""
        instruments()[0].record(seconds, attributes=self.attributes)

    def timeout(self) -> None:
        """``db.client.connection.timeouts``: a checkout found no free connection in time."""
        instruments()[1].add(1, attributes=self.attributes)


@functools.cache
def _circuit_instruments() -> tuple[UpDownCounter, Counter]:
    """The circuit breaker's two instruments (:mod:`~flask_redispool._breaker`), made once."""
    from opentelemetry import metrics

    meter = metrics.get_meter("flask_redispool")
    open_now = meter.create_up_down_counter(
        name="flask_redispool.circuit_breaker.open",
        unit="{breaker}",
        description="Circuit breakers open now: their pool fails commands at once until Redis answers a probe.",
    )
    opened = meter.create_counter(
        name="flask_redispool.circuit_breaker.opened",
        unit="{open}",
        description="Times a circuit breaker opened after repeated connection failures.",
    )
    return open_now, opened


def record_circuit(name: str, *, opened: bool) -> bool:
    """Record that the circuit breaker of the pools named ``name`` (their primary pool's
    ``db.client.connection.pool.name``) opened or closed, while the process exports
    metrics; whether it did."""
    if not observed():
        return False
    open_now, opened_count = _circuit_instruments()
    attributes = {"db.system": "redis", POOL_NAME: name}
    open_now.add(1 if opened else -1, attributes=attributes)
    if opened:
        opened_count.add(1, attributes=attributes)
    return True


def name_sentinel_pool(pool: Any, name: str) -> None:
    """Have redis-py name a Sentinel service's pool ``name`` in its own figures
    (``mymaster/master:6379_<id>``; redis-py adds a port and the pool's id) rather than
    ``unknown:6379_<id>``.

    redis-py names a pool by the ``host`` of its ``connection_kwargs``, which a Sentinel
    pool lacks: its connections ask the sentinels where to connect, and take that address
    when they connect. The host set here is their name until then only. Set once, before
    the pool makes a connection, so every figure of the pool carries the same name.
    """
    pool.connection_kwargs["host"] = name
