"""The bounded, first-come-first-served wait for a free connection, written once.

Every pool kind waits through it: the sync pools (:class:`FairWait`), and the
``redis.asyncio`` pools and async cluster clients of one event loop
(:class:`AsyncFairWait`). It is the slow path only: a pool lends a free connection
without it, and queues a checkout here when it found none (or others wait already).

- ``POOL_BLOCKING`` false: no wait, :class:`~flask_redispool.PoolExhaustedError` at once;
- otherwise the checkout queues for ``POOL_TIMEOUT`` seconds at most. Only the first in
  line tries to take a connection when one comes back (:meth:`wake_first`), so a thread
  that releases and checks out again at once cannot starve the others; after each try
  the next in line is woken to try too, and whoever leaves the line wakes the next;
- the pool's close wakes every waiter, which raises the "closed" :class:`RuntimeError`;
- the pool's events tell its listeners of each wait and timeout
  (:mod:`~flask_redispool._events`).

The two classes share all of that, and differ only in how a waiter sleeps: on a
:class:`threading.Event`, or on an :class:`asyncio.Event` of the pool's one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ._errors import PoolExhaustedError

if TYPE_CHECKING:
    from ._config import Settings
    from ._connection import ConnectionPolicy
    from ._events import PoolEvents

__all__ = ["AsyncFairWait", "FairWait", "exhausted_error", "wake_closed"]

T = TypeVar("T")
W = TypeVar("W", threading.Event, asyncio.Event)


def exhausted_error(
    settings: Settings, max_connections: int, in_use: int, why: str | None = None
) -> PoolExhaustedError:
    """What a checkout raises when it got no connection: which keys to raise. ``why`` it
    did not wait, when that is not ``POOL_BLOCKING``."""
    if why is not None:
        how = why
    elif settings.pool_blocking:
        how = f"none was freed within {settings.key('POOL_TIMEOUT')}={settings.pool_timeout:g} s"
    else:
        how = f"{settings.key('POOL_BLOCKING')} is false, so no wait"
    return PoolExhaustedError(
        f"No free Redis connection: {in_use} in use of the {max_connections} allowed by "
        f"{settings.key('MAX_CONNECTIONS')}, and {how}. Raise "
        f"{settings.key('MAX_CONNECTIONS')}, or run 'flask redis-stats' to see who holds them."
    )


class _Line(Generic[W]):
    """The line of waiting checkouts of one pool, oldest first, and what ends a wait."""

    def __init__(
        self,
        settings: Settings,
        policy: ConnectionPolicy,
        events: PoolEvents,
        max_connections: int,
        in_use: Callable[[], int],
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._events = events
        self._max_connections = max_connections
        self._in_use = in_use
        #: The waiting checkouts, oldest first: a pool's checkout queues behind them.
        self.waiters: deque[W] = deque()
        self._lock: contextlib.AbstractContextManager[object] = self._new_lock()

    @staticmethod
    def _new_lock() -> contextlib.AbstractContextManager[object]:
        """What guards the line: nothing where one event loop alone touches it."""
        return contextlib.nullcontext()

    def wake_first(self) -> None:
        """A connection came back: the first in line tries to take it."""
        with self._lock:
            if self.waiters:
                self.waiters[0].set()

    def wake_all(self) -> None:
        """The pool closed: every waiter raises."""
        with self._lock:
            for waiter in self.waiters:
                waiter.set()

    def _begin(self, waiter: W) -> float:
        """Queue ``waiter`` up, or raise at once; the deadline."""
        self._policy.check_open()
        settings = self._settings
        if not settings.pool_blocking:
            raise self.exhausted()
        for waited in self._events.wait:
            waited()
        with self._lock:
            self.waiters.append(waiter)
            try:  # closed since the check above: its wake-up may have found nobody in line
                self._policy.check_open()
            except RuntimeError:
                self.waiters.remove(waiter)
                raise
            if self.waiters[0] is waiter:  # first in line: a release may have come already
                waiter.set()
        return time.monotonic() + settings.pool_timeout

    def _wake_next(self, waiter: W) -> None:
        """``waiter`` tried and found nothing free (it waits again): the next in line
        tries too (a cluster client's next may wait for another node)."""
        with self._lock:
            waiters = self.waiters
            for index, queued in enumerate(waiters):
                if queued is waiter:
                    if index + 1 < len(waiters):
                        waiters[index + 1].set()
                    break

    def _end(self, waiter: W) -> None:
        with self._lock:
            self.waiters.remove(waiter)
        self.wake_first()  # the next in line looks for a free connection too

    def exhausted(self, why: str | None = None) -> PoolExhaustedError:
        """The error of a checkout that got no connection, counted as one timeout;
        ``why`` it did not wait, for one that could not (see :func:`exhausted_error`)."""
        for timed_out in self._events.timeout:
            timed_out()
        return exhausted_error(self._settings, self._max_connections, self._in_use(), why)


class FairWait(_Line[threading.Event]):
    """The wait of a sync pool: its threads sleep on :class:`threading.Event`\\ s."""

    @staticmethod
    def _new_lock() -> contextlib.AbstractContextManager[object]:
        # Reentrant: a release may run inside the garbage collector (a dropped pubsub or
        # monitor), also while this thread holds it.
        return threading.RLock()

    def take(self, try_take: Callable[[], T | None]) -> T:
        """Wait in line until ``try_take()`` gives something (``None``: nothing free yet).

        :raises PoolExhaustedError: nothing within ``POOL_TIMEOUT``, or no wait allowed.
        :raises RuntimeError: the pool was closed.
        """
        waiter = threading.Event()
        deadline = self._begin(waiter)
        try:
            while waiter.wait(max(0.0, deadline - time.monotonic())):
                waiter.clear()  # before the try: a release during it wakes this waiter again
                self._policy.check_open()
                taken = try_take()
                if taken is not None:
                    return taken
                self._wake_next(waiter)
            raise self.exhausted()
        finally:
            self._end(waiter)


class AsyncFairWait(_Line[asyncio.Event]):
    """The wait of one event loop's pool or cluster client: its tasks sleep on
    :class:`asyncio.Event`\\ s of that loop, which alone touches the line."""

    _loop: asyncio.AbstractEventLoop | None = None
    #: Seconds after which the first in line tries again without a wake-up, or ``None``:
    #: for an owner that cannot see every connection come back (an async cluster client's
    #: nodes lend some outside its commands).
    recheck: float | None = None

    async def take(self, try_take: Callable[[], Awaitable[T | None]]) -> T:
        """:meth:`FairWait.take`, awaiting ``try_take()``."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            _ASYNC_LINES.add(self)
        waiter = asyncio.Event()
        deadline = self._begin(waiter)
        try:
            while True:
                await self._sleep(waiter, deadline)
                waiter.clear()
                self._policy.check_open()
                taken = await try_take()
                if taken is not None:
                    return taken
                self._wake_next(waiter)
        finally:
            self._end(waiter)

    async def _sleep(self, waiter: asyncio.Event, deadline: float) -> None:
        """Until ``waiter`` is woken, or, first in line, :attr:`recheck` seconds have passed.

        :raises PoolExhaustedError: ``deadline`` passed.
        """
        while True:
            left = deadline - time.monotonic()
            recheck = self.recheck
            try:
                await asyncio.wait_for(waiter.wait(), max(0.0, left if recheck is None else min(left, recheck)))
                return
            except asyncio.TimeoutError:
                if time.monotonic() >= deadline:
                    raise self.exhausted() from None
                if self.waiters[0] is waiter:
                    return


#: The async lines that have had a waiter, for :func:`wake_closed`.
_ASYNC_LINES: weakref.WeakSet[AsyncFairWait] = weakref.WeakSet()


def wake_closed(policy: ConnectionPolicy) -> None:
    """The pools sharing ``policy`` closed (:meth:`RedisPool.close()
    <flask_redispool.RedisPool.close>`, from any thread): every async waiter of theirs
    wakes on its own loop and raises the "closed" error. (A sync pool wakes its own.)"""
    for line in list(_ASYNC_LINES):
        loop = line._loop
        if line._policy is policy and line.waiters and loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits there
                loop.call_soon_threadsafe(line.wake_all)
