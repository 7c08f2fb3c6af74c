"""The example app behind a factory that runs one command, a warm-up ``ping()``, as many
do: served with ``gunicorn --preload``, the master runs it once, then forks the workers."""

from __future__ import annotations

from flask import Flask

from example_app import create_app as create_example_app
from example_app import redis_pool


def create_app() -> Flask:
    app = create_example_app()
    with app.app_context():
        redis_pool.client.ping()  # the warm-up: Redis is there before the first request
    return app
