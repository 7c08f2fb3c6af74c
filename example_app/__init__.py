"""Example app for flask-redispool: a hit counter and a page that shows the pool.

Run it with ``make demo`` (starts an embedded redis-server when ``REDIS_URL`` is
unset), ``flask --app example_app run``, or ``gunicorn 'example_app:create_app()'``.
Settings come from ``REDIS_URL`` and ``FLASK_REDIS_*`` environment variables, e.g.
``FLASK_REDIS_MAX_CONNECTIONS=20``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Flask, render_template

from flask_redispool import Health, PoolStats, RedisPool

#: Where ``make demo`` starts its redis-server, and so where the app looks by default.
DEMO_REDIS_PORT = int(os.environ.get("DEMO_REDIS_PORT", "6399"))

redis_pool = RedisPool()
bp = Blueprint("example", __name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory: ``flask --app example_app`` and gunicorn both call it."""
    app = Flask(__name__)
    app.config["REDIS_URL"] = os.environ.get("REDIS_URL", f"redis://127.0.0.1:{DEMO_REDIS_PORT}/0")
    app.config.from_prefixed_env()
    app.config.update(config or {})
    redis_pool.init_app(app)
    app.register_blueprint(bp)
    return app


@bp.get("/")
def index() -> str:
    hits = redis_pool.client.incr("example:hits")
    return render_template("index.html", hits=hits, stats=redis_pool.stats())


@bp.get("/hits")
def hits() -> dict[str, int]:
    return {"hits": redis_pool.client.incr("example:hits"), "pid": os.getpid()}


@bp.get("/stats")
def stats() -> PoolStats:
    return redis_pool.stats()


@bp.get("/healthz")
def healthz() -> tuple[Health, int]:
    health = redis_pool.health()
    return health, 200 if health["ok"] else 503
