"""flask-redispool: one bounded, observable Redis connection pool per Flask app.

.. code-block:: python

    from flask_redispool import RedisPool

    redis_pool = RedisPool(app)            # or redis_pool.init_app(app) in a factory
    redis_pool.client.incr("hits")         # in a view

The public API is what this module exports, and the submodules
:mod:`flask_redispool.testing` and :mod:`flask_redispool.prometheus`; modules whose name
starts with ``_`` are internal.
"""

from __future__ import annotations

from ._advice import PoolAdvice
from ._config import CONFIG_KEYS, ConfigKey, Settings
from ._errors import (
    BlockingCommandError,
    CircuitOpenError,
    ConfigError,
    ConfigWarning,
    MayHaveRunConnectionError,
    MayHaveRunError,
    MayHaveRunTimeoutError,
    PoolExhaustedError,
    WrongRoleError,
)
from ._extension import RedisPool
from ._health import Health
from ._snapshots import PublishedStats
from ._stats import PoolReport, PoolStats, ProcessRow, Totals

__version__ = "0.1.0"

__all__ = [
    "CONFIG_KEYS",
    "BlockingCommandError",
    "CircuitOpenError",
    "ConfigError",
    "ConfigKey",
    "ConfigWarning",
    "Health",
    "MayHaveRunConnectionError",
    "MayHaveRunError",
    "MayHaveRunTimeoutError",
    "PoolAdvice",
    "PoolExhaustedError",
    "PoolReport",
    "PoolStats",
    "ProcessRow",
    "PublishedStats",
    "RedisPool",
    "Settings",
    "Totals",
    "WrongRoleError",
    "__version__",
]
