"""The current app context, Flask's or Quart's, found in one context-variable read.

``redis_pool.client`` runs in every request, so it reads Flask's context variable
directly: ``flask.globals._cv_app`` is private, but the public way
(``flask.globals.app_ctx``, a werkzeug proxy) costs about a microsecond more per call.
``tests/test_context.py`` pins the private name, and :func:`_public_flask_context` is
the fallback used when a Flask release no longer has it. Quart's variable is looked up
only once a Quart app is registered, so Quart stays optional.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["FLASK_CONTEXT", "current_context", "watch_quart"]


def _public_flask_context() -> Any:
    from flask import has_app_context
    from flask.globals import app_ctx

    return app_ctx._get_current_object() if has_app_context() else None  # type: ignore[attr-defined]  # werkzeug's documented unwrap


class _PublicFlaskContext:
    """Stands in for Flask's context variable where a Flask release has none."""

    def get(self, default: Any = None) -> Any:
        ctx = _public_flask_context()
        return default if ctx is None else ctx


try:
    from flask.globals import _cv_app as _flask_cv_app
except ImportError:  # pragma: no cover - a Flask without it: the public way
    FLASK_CONTEXT: Any = _PublicFlaskContext()
else:
    #: ``FLASK_CONTEXT.get(None)``: the current Flask app context, or ``None``.
    FLASK_CONTEXT = _flask_cv_app


_quart: list[ContextVar[Any]] = []


def watch_quart() -> None:
    """Look up Quart's app context too, from the first Quart app on."""
    if not _quart:
        from quart.globals import _cv_app  # private like Flask's; pinned by tests/test_context.py

        _quart.append(_cv_app)


def current_context() -> Any:
    """The current Flask or Quart app context, or ``None`` outside one."""
    ctx = FLASK_CONTEXT.get(None)
    if ctx is None and _quart:
        ctx = _quart[0].get(None)
    return ctx
