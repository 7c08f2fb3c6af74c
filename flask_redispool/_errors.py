"""Exceptions and warnings raised by flask-redispool.

Every message names the config key involved and never contains a password.
"""

from __future__ import annotations

from redis.exceptions import MaxConnectionsError, TimeoutError

__all__ = ["BlockingCommandError", "ConfigError", "ConfigWarning", "PoolExhaustedError"]


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
