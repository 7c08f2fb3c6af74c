"""A small app on a Redis Cluster, for the tests that serve it with gunicorn
(``tests.cluster_app:create_app()``) and ask it with ``flask redis-stats``.

``REDIS_URL`` comes from the environment, other keys from ``FLASK_*`` variables.
"""

from __future__ import annotations

import itertools
import os

from flask import Flask

from flask_redispool import RedisPool

redis_pool = RedisPool()
# Each request increments the next of 30 counters, which live on every master.
_NEXT = itertools.count()


def create_app() -> Flask:
    app = Flask("cluster_app")
    app.config.from_prefixed_env()
    app.config["REDIS_URL"] = os.environ["REDIS_URL"]
    redis_pool.init_app(app)

    @app.get("/hits")
    def hits() -> dict[str, int]:
        return {"hits": redis_pool.cluster_client.incr(f"hits:{next(_NEXT) % 30}")}

    return app
