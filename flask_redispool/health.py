"""A health check of one pool's server that never raises: for ``/healthz`` endpoints,
container probes and ``flask redis-ping``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict

from redis.exceptions import RedisError, ResponseError

if TYPE_CHECKING:
    from redis import Redis

    from .pool import CountedConnectionPool

__all__ = ["Health", "check_health"]


class Health(TypedDict):
    """What :meth:`RedisPool.health() <flask_redispool.RedisPool.health>` returns."""

    ok: bool
    latency_ms: float | None
    server_version: str | None
    error: str | None
    in_use: int
    max_connections: int


def check_health(client: Redis, pool: CountedConnectionPool) -> Health:
    """PING the server through ``pool`` and report; a Redis error becomes ``ok=False``.

    Takes at most the pool's worst case (``Settings.worst_case_seconds``) when Redis does
    not answer, about a millisecond when it refuses connections.
    """
    version = error = None
    latency_ms = None
    try:
        started = time.perf_counter()
        client.ping()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        version = _server_version(client)
    except RedisError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Health(
        ok=error is None,
        latency_ms=latency_ms,
        server_version=version,
        error=error,
        in_use=pool.connection_counts()[0],
        max_connections=pool.max_connections,
    )


def _server_version(client: Redis) -> str:
    try:
        return str(client.info("server").get("redis_version", "?"))
    except ResponseError:  # INFO not allowed for this ACL user: the server still answered
        return "? (INFO not permitted)"
