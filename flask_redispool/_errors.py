"""Exceptions and warnings raised by flask-redispool.

Every message names the config key involved and never contains a password.
"""

from __future__ import annotations

from typing import Final

from redis.exceptions import ConnectionError, MaxConnectionsError, RedisClusterException, RedisError, TimeoutError

__all__ = [
    "REDIS_ERRORS",
    "UNAVAILABLE",
    "BlockingCommandError",
    "CircuitOpenError",
    "ConfigError",
    "ConfigWarning",
    "MayHaveRunConnectionError",
    "MayHaveRunError",
    "MayHaveRunTimeoutError",
    "PoolExhaustedError",
    "WrongRoleError",
]

#: What redis-py raises when Redis cannot serve a command: its ``RedisError``\ s, and the
#: cluster client's ``RedisClusterException`` (no node told the slots), which is not one.
REDIS_ERRORS: Final = (RedisError, RedisClusterException)


class ConfigError(ValueError):
    """A ``<PREFIX>_*`` config value is missing, of the wrong type or out of range.

    Raised by :meth:`~flask_redispool.RedisPool.init_app`, never later at the first
    request. The message names the key, what was expected and what was found.
    """


class ConfigWarning(UserWarning):
    """A config key carries the extension's prefix but is not one of its keys.

    Usually a typo (``REDIS_MAX_CONECTIONS``); the message suggests the close match.
    """


class PoolExhaustedError(MaxConnectionsError):
    """No connection became free in time: every one of ``<PREFIX>_MAX_CONNECTIONS`` is in use.

    A subclass of :class:`redis.exceptions.MaxConnectionsError` (and so of
    :class:`redis.exceptions.ConnectionError`), so handlers written for redis-py keep
    catching it. The message names the config keys to change.
    """


class BlockingCommandError(TimeoutError):
    """A blocking command (``BLPOP``, ``XREAD … BLOCK``, ``WAIT``, …) would wait on the server
    longer than ``<PREFIX>_SOCKET_TIMEOUT`` allows, so it was not sent.

    A subclass of :class:`redis.exceptions.TimeoutError`, which the command would
    otherwise have raised after the socket timeout. Run it inside
    :meth:`RedisPool.blocking() <flask_redispool.RedisPool.blocking>`.
    """


class CircuitOpenError(ConnectionError):
    """Redis was out of reach for several commands in a row, so the pool's circuit
    breaker is open: the command was not sent, and failed at once instead of waiting out
    its timeouts. The message names the URL and when the breaker tries the server again
    (``<PREFIX>_CIRCUIT_BREAKER_COOLDOWN``).

    A subclass of :class:`redis.exceptions.ConnectionError`, so handlers written for
    redis-py keep catching it (and so does :attr:`RedisPool.Unavailable
    <flask_redispool.RedisPool.Unavailable>`). ``<PREFIX>_CIRCUIT_BREAKER = False`` turns
    the breaker off.
    """


class WrongRoleError(ConnectionError):
    """Behind Sentinel, a new connection reached a server whose role is not the one its
    pool serves now: a replica (or a master being demoted) where the master was asked
    for, or the promoted master where a replica was. A failover is under way; the
    connection was closed before it was lent, and the next connection asks the sentinels
    again.

    A subclass of :class:`redis.exceptions.ConnectionError` (so :attr:`RedisPool.Unavailable
    <flask_redispool.RedisPool.Unavailable>` catches it) that the circuit breaker does not
    count: the server answered.
    """


#: What a view catches to serve without Redis (:attr:`RedisPool.Unavailable
#: <flask_redispool.RedisPool.Unavailable>`): the server is down, hung, unreachable, or
#: refused the connection, the pool is full, or the circuit breaker is open. Not a
#: command's own error (``WRONGTYPE``), which a fallback would hide.
UNAVAILABLE: Final = (ConnectionError, TimeoutError, RedisClusterException)


class MayHaveRunError(RedisError):
    """The connection failed after a command that is not safe to run twice had been sent:
    it may have run on the server, so it was not retried.

    Raised as :class:`MayHaveRunConnectionError` or :class:`MayHaveRunTimeoutError`,
    subclasses of redis-py's :class:`~redis.exceptions.ConnectionError` and
    :class:`~redis.exceptions.TimeoutError`, so handlers written for redis-py keep
    catching them. Catch this class to check, before running the command again,
    whether it took effect:

    .. code-block:: python

        try:
            redis_pool.client.incr("orders")
        except MayHaveRunError:
            ...  # read the counter back before deciding to try again
    """


class MayHaveRunConnectionError(MayHaveRunError, ConnectionError):
    """The connection was lost after an unsafe command was sent (see :class:`MayHaveRunError`)."""


class MayHaveRunTimeoutError(MayHaveRunError, TimeoutError):
    """No reply came in time after an unsafe command was sent (see :class:`MayHaveRunError`)."""


# Users import these from ``flask_redispool``: tracebacks and the docs name them so.
for _public in (globals()[name] for name in __all__):
    if isinstance(_public, type):
        _public.__module__ = "flask_redispool"
