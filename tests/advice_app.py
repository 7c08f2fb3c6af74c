"""The example app with one more view, ``/hold``, that keeps its connection for 50 ms (a
slow command, a long pipeline): served by gunicorn with more threads than connections,
its requests wait for one, and the sizing advisor has a pool it should raise."""

from __future__ import annotations

from flask import Flask

from example_app import create_app as create_example_app
from example_app import redis_pool

#: How long ``/hold`` keeps its connection, in seconds.
HOLD_SECONDS = 0.05


def create_app() -> Flask:
    app = create_example_app()
    app.add_url_rule("/hold", view_func=hold)
    return app


def hold() -> dict[str, bool]:
    redis_pool.client.blpop(["advice:never"], timeout=HOLD_SECONDS)  # the server answers in 50 ms
    return {"held": True}
