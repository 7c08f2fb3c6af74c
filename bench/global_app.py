"""The baseline for the load benchmark: the example app's /hits on a module-global
client, the way many apps hand-roll it (redis-py's defaults: pool of 100, 5 s timeouts)."""

from __future__ import annotations

import os

from flask import Flask
from redis import Redis

client = Redis.from_url(os.environ["REDIS_URL"])


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/hits")
    def hits() -> dict[str, int]:
        return {"hits": int(client.incr("example:hits"))}

    return app
