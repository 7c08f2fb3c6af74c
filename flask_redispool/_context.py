"""The current app and its context's ``g``, Flask's or Quart's, through their public proxies.

``redis_pool.client`` runs in every request, so it asks for the app through the
``current_app`` proxy's ``_get_current_object`` (Werkzeug's documented way to reach the
object behind a proxy): one context-variable read and one attribute read, no proxy
attribute lookup. Quart is looked up only once a Quart app is registered, so it stays
optional: from then on :func:`app_here` asks Flask's ``has_app_context()`` first instead
of letting Flask's proxy raise outside a Flask context.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from flask import current_app, g, has_app_context

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

__all__ = ["app_here", "flask_g", "g_here", "watch_quart"]

#: The current Flask app; ``RuntimeError`` outside a Flask app context.
flask_app: Callable[[], Any] = cast("LocalProxy[Any]", current_app)._get_current_object
#: The current Flask app context's ``g``; ``RuntimeError`` outside one.
flask_g: Callable[[], Any] = cast("LocalProxy[Any]", g)._get_current_object

_quart: list[ModuleType] = []

#: The current app, Flask's or Quart's; ``RuntimeError`` outside an app context. Call it
#: as ``_context.app_here()``: :func:`watch_quart` replaces it.
app_here: Callable[[], Any] = flask_app


def watch_quart() -> None:
    """Look for Quart's app context too, from the first Quart app on."""
    global app_here
    if _quart:
        return
    import quart

    _quart.append(quart)
    quart_app = cast("LocalProxy[Any]", quart.current_app)._get_current_object

    def flask_or_quart_app() -> Any:
        return flask_app() if has_app_context() else quart_app()

    app_here = flask_or_quart_app


def g_here() -> Any:
    """The current app context's ``g``, Flask's or Quart's, or ``None`` outside one."""
    if has_app_context():
        return flask_g()
    if _quart and _quart[0].has_app_context():
        return _quart[0].g._get_current_object()
    return None
