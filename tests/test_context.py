"""The private context variables flask-redispool reads for speed, pinned: if a Flask or
Quart release renames them, this fails, and ``_context`` falls back to the public way."""

from __future__ import annotations

import flask
import quart
from flask import Flask

from flask_redispool import _context


def test_flask_context_variable_is_the_one_flask_uses() -> None:
    from flask.globals import _cv_app

    app = Flask("pinned")
    assert _context.current_context() is None
    with app.app_context() as ctx:
        assert _cv_app.get(None) is ctx
        assert _context.current_context() is ctx
        assert _context._public_flask_context() is ctx  # the fallback finds the same
        assert flask.current_app._get_current_object() is app  # type: ignore[attr-defined]
    assert _context._public_flask_context() is None


async def _in_quart(app: quart.Quart) -> object:
    async with app.app_context() as ctx:
        return ctx is _context.current_context()


def test_quart_context_variable_is_found_once_watched() -> None:
    import asyncio

    from quart.globals import _cv_app  # what watch_quart() reads

    _context.watch_quart()
    app = quart.Quart("pinned")
    assert asyncio.run(_in_quart(app)) is True
    assert _cv_app.get(None) is None
