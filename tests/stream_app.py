"""A small app with a server-sent events stream fed by Redis pubsub, for the test that
serves it with gunicorn and hangs up mid-stream (``tests.stream_app:create_app()``).

``REDIS_URL`` comes from the environment, other keys from ``FLASK_*`` variables.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, stream_with_context

from flask_redispool import RedisPool

redis_pool = RedisPool()
#: How often the stream writes when no message comes: a write to a client that has gone
#: is how a WSGI server learns that it has.
KEEP_ALIVE_SECONDS = 0.2


def create_app() -> Flask:
    app = Flask("stream_app")
    app.config.from_prefixed_env()
    app.config["REDIS_URL"] = os.environ["REDIS_URL"]
    redis_pool.init_app(app)

    @app.get("/hits")
    def hits() -> dict[str, int]:
        return {"hits": redis_pool.client.incr("stream_app:hits")}

    @app.get("/pool")
    def pool() -> dict[str, int]:
        stats = redis_pool.stats()
        return {"pid": stats["pid"], "in_use": stats["in_use"], "idle": stats["idle"]}

    @app.get("/events")
    def events() -> Response:
        pubsub = redis_pool.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("news")

        def stream() -> Iterator[str]:
            yield ": subscribed\n\n"
            ends = time.monotonic() + 60  # a test that forgets to hang up still ends
            while time.monotonic() < ends:
                message = pubsub.get_message(timeout=KEEP_ALIVE_SECONDS)
                yield ": keep-alive\n\n" if message is None else f"data: {message['data'].decode()}\n\n"

        return Response(stream_with_context(stream()), mimetype="text/event-stream")

    return app
