"""flask-redispool: one bounded, observable Redis connection pool per Flask app.

.. code-block:: python

    from flask_redispool import RedisPool

    redis_pool = RedisPool(app)            # or redis_pool.init_app(app) in a factory
    redis_pool.client.incr("hits")         # in a view
"""

from __future__ import annotations

from .config import CONFIG_KEYS, ConfigKey, Settings
from .errors import BlockingCommandError, ConfigError, ConfigWarning, PoolExhaustedError
from .extension import RedisPool
from .health import Health
from .stats import PoolReport, PoolStats

__version__ = "0.1.0"

__all__ = [
    "CONFIG_KEYS",
    "BlockingCommandError",
    "ConfigError",
    "ConfigKey",
    "ConfigWarning",
    "Health",
    "PoolExhaustedError",
    "PoolReport",
    "PoolStats",
    "RedisPool",
    "Settings",
    "__version__",
]
