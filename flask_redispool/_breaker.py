"""The circuit breaker: fail at once while Redis is down, and find out by itself when it is back.

While Redis is unreachable or hung, every command waits out its timeouts (up to
``Settings.worst_case_seconds``), and request threads pile up behind a dead dependency.
One :class:`CircuitBreaker` per app and prefix, shared by every connection of its pools
(sync and ``redis.asyncio``, one server or a Sentinel service), or one per node of a
Redis Cluster, so that a dead node fails at once while the others serve (the
:class:`Breakers` of their :class:`~flask_redispool._connection.ConnectionPolicy`),
counts connection-level failures:

- **closed** (the normal state): commands go through. Each connection-level failure
  (connect refused or timed out, connection reset, no reply in time) lengthens a
  streak, and any reply read from the server ends it. A streak of
  ``CIRCUIT_BREAKER_FAILURES`` opens the breaker. A command error (``WRONGTYPE``, a
  refused password, a full pool) is no sign of a server down and counts for nothing.
- **open**: every command, checkout and connect of the pools raises
  :class:`~flask_redispool.CircuitOpenError` at once, before anything is sent (so no
  write runs twice). After ``CIRCUIT_BREAKER_COOLDOWN`` seconds, one probe tries.
- **half-open**: the probe runs, off the request path, in a thread of the breaker's own:
  a PING on a connection of its own outside the pools (the topology's side connection,
  which finds a Sentinel master as the pools do; a cluster node's, to that node alone, or
  none once the node left the cluster). Requests still fail at once. It answers: closed.
  It does not: open for another cooldown. A reply read while open (a command in flight
  when it opened) makes the probe try at once: a hung server that resumes is served
  again within milliseconds, while a reply that was on its way before a crash closes
  nothing.

The hot path pays two attribute checks per command (:attr:`CircuitBreaker.refusing`
before a send, :attr:`CircuitBreaker.failing` after a reply); the rest runs on failures
only. ``CIRCUIT_BREAKER = False`` turns it off: it then never leaves ``closed``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypedDict

from redis.exceptions import AuthenticationError, ConnectionError, MaxConnectionsError, ReadOnlyError, TimeoutError

from ._errors import BlockingCommandError, CircuitOpenError, WrongRoleError
from ._telemetry import record_circuit

if TYPE_CHECKING:
    from ._config import Settings
    from ._topology import SideConnection

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OFF",
    "OPEN",
    "Breakers",
    "CircuitBreaker",
    "CircuitFigures",
    "NodeLeft",
    "is_outage",
    "ping_through",
]

logger = logging.getLogger("flask_redispool")

#: The states, as ``stats()``, ``health()`` and the report show them.
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"
OFF: Final = "off"

# Errors that are ConnectionError or TimeoutError subclasses, yet no sign of a server down.
_NOT_OUTAGES: Final = (AuthenticationError, MaxConnectionsError, BlockingCommandError, CircuitOpenError, WrongRoleError)


class CircuitFigures(TypedDict):
    """The breaker's fields of :class:`~flask_redispool.PoolStats` (see there)."""

    circuit_breaker: str
    circuit_open: int
    circuit_opened: int
    circuit_failures: int
    circuit_retry_in: float


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the server could not be reached or did not answer: a
    connection error or timeout, not a refusal (credentials, a full pool, a blocking
    command refused before sending), and not a demoted master's ``READONLY`` nor a server
    of the wrong role behind Sentinel (a failover, which the Sentinel connections follow)."""
    return (
        isinstance(error, ConnectionError | TimeoutError)
        and not isinstance(error, _NOT_OUTAGES)
        and not isinstance(error.__context__, ReadOnlyError)
    )


class NodeLeft(Exception):
    """Raised by a cluster node's probe: the cluster lists the node no more, so there is
    nothing to try, and its breaker closes (a command that goes there again counts anew)."""


class CircuitBreaker:
    """The breaker of one app and prefix's pools, or of one node of their cluster (see the
    module).

    :param settings: its ``CIRCUIT_BREAKER*`` keys, and the URL its errors name.
    :param node: the cluster node it covers (``host:port``), named in its errors and logs.
    :param enabled: whether it counts at all (default: the ``CIRCUIT_BREAKER`` key).
    """

    def __init__(self, settings: Settings, *, node: str | None = None, enabled: bool | None = None) -> None:
        self.settings = settings
        self.node = node
        #: On unless the key says otherwise.
        self.enabled = settings.circuit_breaker if enabled is None else enabled
        #: Whether commands are refused now (open or half-open): checked before every send.
        self.refusing = False
        #: Whether a streak of failures runs, or the breaker is open: checked after every
        #: reply, which then ends the streak.
        self.failing = False
        #: Connection-level failures since the last reply from the server.
        self.failures = 0
        #: Times the breaker opened.
        self.opened = 0
        self.state = CLOSED if self.enabled else OFF
        #: The failures in a row that open it: ``CIRCUIT_BREAKER_FAILURES``, and always
        #: more than one command's tries (``RETRIES + 1``, one failure each), so that one
        #: command retrying through a pause never opens it alone.
        self.threshold = max(settings.circuit_breaker_failures, settings.retries + 2)
        #: When the probe tries next (:func:`time.monotonic`), while open.
        self.next_try = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: Set to end the probe's wait early: a reply while open, or the pools closing.
        self._wake = threading.Event()
        self._prober: threading.Thread | None = None
        self._probe: Callable[[], object] | None = None
        self._telemetry_name = ""
        self._recorded = False  # whether OpenTelemetry recorded the last opening
        self._left = False  # whether the probe found its node gone from the cluster
        #: The refusal's words, before and after when it tries again: made once, as
        #: commands meet it by the thousand.
        self._message = (
            f"Redis at {self.where()} is out of reach: "
            f"{self.threshold} connection failures in a row opened the circuit breaker, so commands "
            "fail at once instead of waiting out their timeouts. It tries the server again ",
            f" (every {settings.key('CIRCUIT_BREAKER_COOLDOWN')}={settings.circuit_breaker_cooldown:g} s); "
            f"{settings.key('CIRCUIT_BREAKER')} = False turns it off.",
        )
        _BREAKERS.add(self)

    def where(self, *, key: bool = True) -> str:
        """What it covers, as its errors (``key``) and logs name it: the URL (behind its config
        key), and the node."""
        settings = self.settings
        url = f"{settings.key('URL')} ({settings.redacted_url})" if key else settings.redacted_url
        return url if self.node is None else f"{url}, node {self.node},"

    def probe_with(self, probe: Callable[[], object], name: str) -> None:
        """Try the server with ``probe`` (raises when it does not answer) when a cooldown
        ends, and name the breaker ``name`` in OpenTelemetry: the pools' owner calls it
        once, with a PING on a connection outside the pools."""
        self._probe = probe
        self._telemetry_name = name

    def failed(self, error: BaseException) -> None:
        """A command, checkout or connect of the pools raised ``error``: count it when it
        says the server is out of reach, and open the breaker at the threshold."""
        if not self.enabled or not is_outage(error):
            return
        with self._lock:
            self.failures += 1
            self.failing = True
            if self.state == CLOSED and self.failures >= self.threshold:
                self._open()

    def succeeded(self) -> None:
        """The server answered: the streak ends; while open, the probe tries at once (a
        command in flight when it opened got its reply: the server may be back, or that
        reply was on its way before a crash, so the probe decides)."""
        with self._lock:
            if self.state == CLOSED:
                self.failures = 0
                self.failing = False
                return
            self.next_try = min(self.next_try, time.monotonic())
        self._wake.set()

    def refuse(self) -> None:
        """Refuse a command while open, unless this thread is the probe's.

        :raises CircuitOpenError: naming the URL and when the probe tries again.
        """
        if self.refusing and threading.current_thread() is not self._prober:
            raise self.error()

    def error(self) -> CircuitOpenError:
        """The error a refused command raises."""
        left = max(0.0, self.next_try - time.monotonic())
        when = "now" if self.state == HALF_OPEN else f"in {left:.1f} s"
        before, after = self._message
        return CircuitOpenError(before + when + after)

    def figures(self) -> CircuitFigures:
        """Its part of the pools' snapshot (``stats()``, published, the report, Prometheus)."""
        return CircuitFigures(
            circuit_breaker=self.state,
            circuit_open=int(self.refusing),
            circuit_opened=self.opened,
            circuit_failures=self.failures,
            circuit_retry_in=self.retry_in(),
        )

    def retry_in(self) -> float:
        """Seconds until the probe tries again (0 while closed or probing)."""
        return round(max(0.0, self.next_try - time.monotonic()), 3) if self.state == OPEN else 0.0

    def _open(self) -> None:
        """Open now (holding the lock), and start the probe's thread unless it runs."""
        self.state = OPEN
        self.refusing = True
        self.opened += 1
        self.next_try = time.monotonic() + self.settings.circuit_breaker_cooldown
        settings = self.settings
        logger.warning(
            "Redis at %s is out of reach (%d connection failures in a row): %s's circuit breaker is open, "
            "commands fail at once; the server is tried again every %g s.",
            self.where(key=False),
            self.failures,
            settings.prefix,
            settings.circuit_breaker_cooldown,
        )
        self._recorded = record_circuit(self._telemetry_name, opened=True)
        if self._prober is None and not self._stop.is_set():  # it clears this as it ends
            self._prober = threading.Thread(target=self._run_probe, name=f"redispool-breaker-{settings.prefix}")
            self._prober.daemon = True
            self._prober.start()

    def _run_probe(self) -> None:
        """The probe's thread: at the end of each cooldown, one try; ends once closed (by
        its probe or by a reply to a command in flight), or when the pools close. It
        leaves :attr:`_prober` in the same lock section as it decides to end, so that a
        breaker opening again meanwhile starts another."""
        while True:
            self._wake.wait(max(0.0, self.next_try - time.monotonic()))  # a cooldown, or a reply
            self._wake.clear()
            stopped = self._stop.is_set()
            with self._lock:
                if stopped or self.state == CLOSED:
                    self._prober = None
                    return
                self.state = HALF_OPEN
            answered = self._try()
            with self._lock:
                closed_now = answered and self._set_closed()
                if answered or self.state == CLOSED:
                    self._prober = None
                else:
                    self.state = OPEN
                    self.next_try = time.monotonic() + self.settings.circuit_breaker_cooldown
                    continue
            if closed_now:
                self._closed()
            return

    def _try(self) -> bool:
        probe = self._probe
        try:
            if probe is not None:
                probe()
        except NodeLeft:  # nothing to try: no command goes there any more
            self._left = True
            return True
        except Exception as exc:  # whatever the probe met, the server did not answer it
            logger.debug("The circuit breaker's probe of %s failed: %s", self.where(key=False), exc)
            return False
        return True

    def _set_closed(self) -> bool:
        """Close (holding the lock); whether it was not closed already."""
        if self.state == CLOSED:
            return False
        self.state, self.refusing, self.failing, self.failures = CLOSED, False, False, 0
        return True

    def _closed(self) -> None:
        """Say that it closed (outside the lock)."""
        if self._left:
            self._left = False
            logger.warning("Redis at %s left the cluster: its circuit breaker is closed.", self.where(key=False))
        else:
            logger.warning("Redis at %s answers again: the circuit breaker is closed.", self.where(key=False))
        if self._recorded:  # what was recorded open is recorded closed
            record_circuit(self._telemetry_name, opened=False)
            self._recorded = False

    def close(self) -> None:
        """The pools closed: stop probing, and wait for a probe in flight to end (at most
        one command's worst case)."""
        self._stop.set()
        self._wake.set()
        prober = self._prober
        if prober is not None and prober is not threading.current_thread():
            prober.join(self.settings.worst_case_seconds + 1.0)

    def orphan(self) -> None:
        """The app was collected: stop probing, without waiting (inside the collector)."""
        self._stop.set()
        self._wake.set()

    def _start_afresh(self) -> None:
        """In a forked child: the parent's probe thread does not exist here, and its lock
        may be held forever. The child starts closed and finds out for itself."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._prober = None
        self.refusing = self.failing = False
        self.failures = 0
        self.state = CLOSED if self.enabled else OFF


class Breakers:
    """The circuit breakers of one app and prefix's pools: one for them all (one server, a
    Sentinel service), or one per node of a Redis Cluster, made as the first pool or
    connection to the node is, so that a dead node fails at once while the others serve.

    :param per_node: a breaker per node (a cluster); else :attr:`shared` is the only one.
    """

    def __init__(self, settings: Settings, *, per_node: bool) -> None:
        self.settings = settings
        self.per_node = per_node
        #: The breaker of every connection, or on a cluster of none (it stays off there).
        self.shared = CircuitBreaker(settings, enabled=None if not per_node else False)
        self._nodes: dict[str, CircuitBreaker] = {}
        self._probe_node: Callable[[str], Callable[[], object]] | None = None
        self._lock = threading.Lock()
        _BREAKER_SETS.add(self)

    def probe_with(self, probe: Callable[[], object], name: str) -> None:
        """How :attr:`shared` tries the server (see :meth:`CircuitBreaker.probe_with`)."""
        self.shared.probe_with(probe, name)

    def probe_nodes_with(self, make: Callable[[str], Callable[[], object]]) -> None:
        """How a node's breaker tries its node: ``make(address)`` gives its probe."""
        self._probe_node = make

    def of(self, address: str) -> CircuitBreaker:
        """The breaker of the connections to ``address`` (``host:port``)."""
        if not self.per_node:
            return self.shared
        breaker = self._nodes.get(address)
        if breaker is None:
            with self._lock:
                breaker = self._nodes.get(address)
                if breaker is None:
                    breaker = self._nodes[address] = CircuitBreaker(self.settings, node=address)
                    if self._probe_node is not None:
                        breaker.probe_with(self._probe_node(address), address)
        return breaker

    def every(self) -> list[CircuitBreaker]:
        """Each breaker now: :attr:`shared`, or the nodes'."""
        if not self.per_node:
            return [self.shared]
        with self._lock:
            return list(self._nodes.values())

    @property
    def state(self) -> str:
        """:attr:`CircuitBreaker.state`, or on a cluster the nodes' worst: ``open`` while any
        node's is open, ``half-open`` while one is probing, else ``closed`` (``off`` when off)."""
        if not self.per_node:
            return self.shared.state
        if not self.settings.circuit_breaker:
            return OFF
        states = {breaker.state for breaker in self.every()}
        return next((state for state in (OPEN, HALF_OPEN) if state in states), CLOSED)

    def figures(self) -> CircuitFigures:
        """Their part of the pools' snapshot: on a cluster, the nodes' added up (``circuit_open``
        counts the nodes refusing now, ``circuit_failures`` is the longest streak, and
        ``circuit_retry_in`` the soonest probe)."""
        if not self.per_node:
            return self.shared.figures()
        every = [breaker.figures() for breaker in self.every()]
        waits = [figures["circuit_retry_in"] for figures in every if figures["circuit_open"]]
        return CircuitFigures(
            circuit_breaker=self.state,
            circuit_open=sum(figures["circuit_open"] for figures in every),
            circuit_opened=sum(figures["circuit_opened"] for figures in every),
            circuit_failures=max((figures["circuit_failures"] for figures in every), default=0),
            circuit_retry_in=min(waits, default=0.0),
        )

    def close(self) -> None:
        """The pools closed: stop every probe (see :meth:`CircuitBreaker.close`)."""
        for breaker in self._all():
            breaker.close()

    def orphan(self) -> None:
        """The app was collected: stop every probe, without waiting."""
        for breaker in self._all():
            breaker.orphan()

    def _all(self) -> list[CircuitBreaker]:
        return [*self.every(), self.shared] if self.per_node else [self.shared]


def ping_through(side: SideConnection) -> Callable[[], object]:
    """The probe of a breaker: PING on a connection of its own, opened like ``side`` (the
    topology's connection outside the pools: it finds a Sentinel master or a cluster's
    nodes as the pools do) and closed after. It refers to nothing of the pools."""

    def ping() -> object:
        client = side.open()
        try:
            return client.ping()
        finally:
            side.close(client)

    return ping


#: Every breaker, and every set of them, in this process, for the fork hook below.
_BREAKERS: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_BREAKER_SETS: weakref.WeakSet[Breakers] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    for breaker in list(_BREAKERS):
        breaker._start_afresh()
    for breakers in list(_BREAKER_SETS):  # another thread may have held the lock at the fork
        breakers._lock = threading.Lock()


os.register_at_fork(after_in_child=_start_afresh_in_child)
