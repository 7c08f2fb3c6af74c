"""A health check of one pool's server that never raises: for ``/healthz`` endpoints,
container probes and ``flask redis-ping``.

It asks the server on the connection the pool's publisher keeps outside the pool, so a
worker whose pool is merely busy (every connection checked out) still answers at once
and reports ``ok`` with ``saturated`` set, instead of waiting ``POOL_TIMEOUT`` and
telling an orchestrator to restart a healthy process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict

from redis.exceptions import AuthenticationError, ResponseError

if TYPE_CHECKING:
    from ._config import Settings
    from ._poolset import PoolSet
    from ._snapshots import AnyClient

__all__ = ["Health", "check_health", "closed_health", "describe_failure", "failure_message", "probe"]


class Health(TypedDict):
    """What :meth:`RedisPool.health() <flask_redispool.RedisPool.health>` returns."""

    ok: bool  #: the server answered PING
    latency_ms: float | None
    server: str | None  #: ``"redis"`` or ``"valkey"``, as the server names itself
    server_version: str | None  #: of that server: Valkey's own, not the Redis one it emulates
    error: str | None
    in_use: int
    max_connections: int
    saturated: bool  #: every pooled connection is checked out now: busy, not down
    timeouts: int  #: checkouts that ended in PoolExhaustedError so far
    #: ``"closed"``, ``"open"`` (not ``ok``: commands fail at once), ``"half-open"`` (a
    #: probe runs) or ``"off"`` (``CIRCUIT_BREAKER = False``, or the pool is closed)
    circuit_breaker: str


def check_health(pools: PoolSet) -> Health:
    """PING the server and report; any failure becomes ``ok=False`` with an ``error``.
    A topology with a ``check()`` (a Sentinel service: are the sentinels answering?) is
    asked first.

    Takes at most the pool's worst case (``Settings.worst_case_seconds``) when Redis does
    not answer, about a millisecond when it refuses connections or the circuit breaker
    is open (then ``ok`` is false and ``error`` says when it tries again); never waits
    for a pooled connection. Behind Sentinel, asking the sentinels comes on top: up to
    twice that, three times when the side connection is made anew.
    """
    return probe(pools)[0]


def closed_health(message: str) -> Health:
    """The report of a pool that :meth:`RedisPool.close() <flask_redispool.RedisPool.close>`
    closed: not ``ok``, ``message`` as a ``RuntimeError``, nothing held."""
    return Health(
        ok=False,
        latency_ms=None,
        server=None,
        server_version=None,
        error=describe_failure(RuntimeError(message)),
        in_use=0,
        max_connections=0,
        saturated=False,
        timeouts=0,
        circuit_breaker="off",
    )


def probe(pools: PoolSet) -> tuple[Health, Exception | None]:
    """:func:`check_health`, and the exception behind a failure (for the CLI's wording)."""
    server = version = error = None
    latency_ms = None
    failure: Exception | None = None
    try:
        check = getattr(pools.topology, "check", None)  # a Sentinel service asks its sentinels first
        if check is not None:
            check()
        client = pools.publisher.side
        started = time.perf_counter()
        client.ping()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        server, version = _server_version(client)
    except Exception as exc:  # documented never to raise, whatever the cause
        pools.policy.explain(exc)
        error, failure = describe_failure(exc), exc
    in_use, max_connections = pools.in_use(), pools.max_connections
    health = Health(
        ok=error is None,
        latency_ms=latency_ms,
        server=server,
        server_version=version,
        error=error,
        in_use=in_use,
        max_connections=max_connections,
        saturated=in_use >= max_connections,
        timeouts=pools.timeouts,
        circuit_breaker=pools.policy.breakers.state,
    )
    return health, failure


def describe_failure(exc: BaseException) -> str:
    """``"<type>: <message>"``, followed by any note flask-redispool added."""
    notes = getattr(exc, "__notes__", None) or []
    return " ".join([f"{type(exc).__name__}: {exc}", *notes])


def failure_message(settings: Settings, exc: BaseException) -> str:
    """One sentence for a failed command, the same in every CLI command: "unreachable"
    only for network failures, "refused" when the server answered with a refusal
    (credentials, an ACL, a database number)."""
    refused = isinstance(exc, AuthenticationError | ResponseError)
    verdict = "refused the connection" if refused else "is unreachable"
    return f"Redis for {settings.key('URL')} ({settings.redacted_url}) {verdict}: {describe_failure(exc)}"


def _server_version(client: AnyClient) -> tuple[str, str]:
    """The server's name and version: ``("redis", "7.0.15")``, ``("valkey", "9.1.2")``
    (Valkey's ``redis_version`` is the Redis it is compatible with, 7.2.4 on every Valkey)."""
    try:
        info = client.info("server")
    except ResponseError:  # INFO not allowed for this ACL user: the server still answered
        return "redis", "? (INFO not permitted)"
    if "valkey_version" in info:
        return "valkey", str(info["valkey_version"])
    return "redis", str(info.get("redis_version", "?"))
