"""What happens to a pool, told to whoever listens: one interface for every pool kind.

A pool (sync, ``redis.asyncio``, or an async cluster client's nodes taken together)
reports its events through its :class:`PoolEvents`, as SQLAlchemy's pools do; what
counts or records them is a listener, not code wired into each pool:

- ``connect()``: a connection was made;
- ``first_connect()``: the pool made this process's first connection (a forked child
  starts over);
- ``checkout()``: a connection was lent out;
- ``checkout_time(seconds)``: the same, with how long the checkout took (wait included);
  a pool times its checkouts only while somebody listens to it;
- ``wait()``: a checkout found the pool full and began to wait;
- ``timeout()``: a checkout ended without a connection
  (:class:`~flask_redispool.PoolExhaustedError`);
- ``release()``: a connection came back.

A listener is any object with methods of those names (it need not have them all), or
one callable per event (:meth:`PoolEvents.listen`).
:class:`~flask_redispool._stats.PoolCounters` counts them for
:meth:`~flask_redispool.RedisPool.stats`; :class:`~flask_redispool._telemetry.PoolTelemetry`
records them in OpenTelemetry; the :class:`~flask_redispool._poolset.PoolSet` starts its
publisher at ``first_connect``.

Every command passes a checkout, so each event is a tuple of bound callables, read and
called in a loop: an empty tuple for an event nobody listens to, and a counter's checkout
is a C call (an :func:`itertools.count`'s ``__next__``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["EVENTS", "PoolEvents"]

#: The events a pool reports, in the order of a connection's life.
EVENTS: Final = ("connect", "first_connect", "checkout", "checkout_time", "wait", "timeout", "release")


class PoolEvents:
    """The listeners of one pool, as a tuple of callables per event (see the module)."""

    __slots__ = (*EVENTS, "_listeners")

    connect: tuple[Callable[[], object], ...]
    first_connect: tuple[Callable[[], object], ...]
    checkout: tuple[Callable[[], object], ...]
    checkout_time: tuple[Callable[[float], object], ...]
    wait: tuple[Callable[[], object], ...]
    timeout: tuple[Callable[[], object], ...]
    release: tuple[Callable[[], object], ...]

    def __init__(self, *listeners: object) -> None:
        self._listeners: list[tuple[object, dict[str, Callable[..., object]]]] = []
        for listener in listeners:
            self.listen(listener)
        self._gather()

    def listen(self, listener: object = None, /, **handlers: Callable[..., object]) -> None:
        """Call ``listener``'s methods named after events, and each of ``handlers``
        (``first_connect=pool_set.connected``), when those events happen.

        :raises ValueError: a handler names no event.
        """
        unknown = set(handlers) - set(EVENTS)
        if unknown:
            raise ValueError(f"no such pool event: {', '.join(sorted(unknown))}; the events are {', '.join(EVENTS)}")
        found = {name: handler for name in EVENTS if (handler := getattr(listener, name, None)) is not None}
        self._listeners.append((listener if listener is not None else handlers, {**found, **handlers}))
        self._gather()

    def forget(self, listener: object) -> None:
        """Stop calling ``listener`` (as given to :meth:`listen`)."""
        self._listeners = [(known, calls) for known, calls in self._listeners if known is not listener]
        self._gather()

    def replace(self, old: object, new: object) -> None:
        """Call ``new`` instead of ``old`` (a forked child's fresh counters)."""
        self.forget(old)
        self.listen(new)

    def checked_out(self, start: float) -> None:
        """A checkout begun at ``start`` (:func:`time.monotonic`, or 0.0 when nobody times
        checkouts) got a connection: tell the ``checkout`` and ``checkout_time`` listeners."""
        for checkout in self.checkout:
            checkout()
        if start:
            seconds = time.monotonic() - start
            for timed in self.checkout_time:
                timed(seconds)

    def _gather(self) -> None:
        for name in EVENTS:
            calls: tuple[Any, ...] = tuple(calls[name] for _, calls in self._listeners if name in calls)
            setattr(self, name, calls)
