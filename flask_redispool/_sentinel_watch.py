"""Following a Sentinel service's failovers as the sentinels announce them.

redis-py asks the sentinels where the master is only when a connection connects, so after
a failover its pooled connections keep writing to the old master until the sentinels
reconfigure it as a replica, seconds later, and that resync wipes every write it took
meanwhile: acknowledged, then gone. Redis's client guidelines for Sentinel say what to do
instead, and this module does it:

- **Listen.** One :class:`SentinelWatch` per app's pools (and process) subscribes, in one
  daemon thread started by the process's first connection to the service, to every
  sentinel's events: ``+failover-state-wait-promotion`` (the
  sentinel leading a failover has just told a replica to become master: from now on,
  writes on the old master are lost), ``+switch-master`` (every sentinel, once it knows)
  and ``-failover-abort-slave-timeout``. Each one for our service bumps
  :attr:`SentinelWatch.generation`: a pool drops an idle connection made before at its
  next checkout, and one in use when it comes back (a command in flight ends on the old
  master and is never sent again). A checkout compares two ints; nothing else on the
  request path. It reconnects to another sentinel when one goes away (bounded backoff),
  closes with the app's pools, and a forked child starts its own at its first connection.
- **Ask, then correct.** :class:`FollowingSentinel` (and :class:`AsyncFollowingSentinel`)
  asks the sentinels as redis-py does, but an answer naming a master the watch has seen
  demoted (a sentinel that has not heard yet) is replaced by the master it heard of last;
  its replica lists leave that master out.
- **Check the role** of every new connection before lending it (``ROLE``, once per
  connection): the master's pool refuses a server that is a replica now, or that a
  failover demoted; the replicas' pool refuses a server that still serves as a master
  after a failover named another one. A refusal is a :class:`~flask_redispool.WrongRoleError`
  (a redis-py ``ConnectionError`` the circuit breaker does not count), which the
  connection's retry answers by asking the sentinels again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio
import redis.asyncio.sentinel as aio_sentinel
from redis.exceptions import ConnectionError, RedisError, ResponseError
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from ._errors import WrongRoleError

__all__ = [
    "AsyncFollowingConnection",
    "AsyncFollowingSSLConnection",
    "AsyncFollowingSentinel",
    "FollowingConnection",
    "FollowingSSLConnection",
    "FollowingSentinel",
    "SentinelWatch",
]

logger = logging.getLogger("flask_redispool")

Address = tuple[str, int]

#: The leader of a failover has sent ``REPLICAOF NO ONE`` to the replica it promotes.
PROMOTING: Final = "+failover-state-wait-promotion"
#: A sentinel names the new master (the leader, and each other one as it learns).
SWITCHED: Final = "+switch-master"
#: The promoted replica did not report itself master in time: the old master stays.
ABORTED: Final = "-failover-abort-slave-timeout"
CHANNELS: Final = (PROMOTING, SWITCHED, ABORTED)
#: Seconds without a message before the listener pings a sentinel; as long again without
#: an answer, and it connects anew.
HEARTBEAT: Final = 5.0
#: The first and the longest wait before connecting again to a sentinel that went away.
BACKOFF_FIRST: Final = 0.1
BACKOFF_CAP: Final = 2.0
#: Seconds after the last failover heard of during which the listener's news overrule a
#: sentinel's answer: long enough for every sentinel to learn of it and for the demoted
#: master to be reconfigured as a replica (about 10 s with the sentinels' defaults).
NEWS_TTL: Final = 60.0
#: How long closing waits for the sentinels to end the subscriptions, then for the
#: listener's thread to end.
UNSUBSCRIBE_TIMEOUT: Final = 2.0
JOIN_TIMEOUT: Final = 5.0


class SentinelWatch:
    """What the sentinels of one service announced, and the thread that listens to them.

    :param addresses: the sentinels.
    :param service: the service name.
    :param options: ``redis.asyncio.Redis`` keyword arguments for the sentinels (their
        credentials, TLS, timeouts, client name).
    :param name: the thread's name.
    """

    def __init__(self, addresses: Sequence[Address], service: str, options: dict[str, Any], name: str) -> None:
        self.service = service
        self._addresses = list(addresses)
        self._options = {**options, "decode_responses": True, "socket_timeout": None}
        self._name = name
        #: Bumped by every failover heard of: a connection made before is not lent again.
        self.generation = 0
        #: The master the sentinels named last (``None``: none heard of), the former masters
        #: a failover demoted since, and until when (:func:`time.monotonic`) to believe
        #: them over the sentinels; replaced whole.
        self.news: tuple[Address | None, frozenset[Address], float] = (None, frozenset(), 0.0)
        #: Sentinels it listens to now.
        self.listening = 0
        self._closed = False
        self._start_afresh()
        _WATCHES.add(self)

    def _start_afresh(self) -> None:
        """No thread, a new lock: at birth, and in a forked child (where the parent's
        thread does not run and its lock may be held forever)."""
        # Reentrant: an app collected without close() closes its watch inside the garbage
        # collector, which may run in a thread that holds this lock already.
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.listening = 0

    # --- what the pools ask -------------------------------------------------------------

    def _fresh_news(self) -> tuple[Address | None, frozenset[Address]]:
        """The master heard of last and the masters demoted since, while they are news
        (:data:`NEWS_TTL`): a listener that missed a failover back misleads nobody for long."""
        latest, demoted, until = self.news
        return (latest, demoted) if time.monotonic() < until else (None, frozenset())

    def correct(self, master: Address) -> Address:
        """``master`` as a sentinel answered, or the master heard of last if that answer
        names a master a failover demoted (the sentinel has not heard yet)."""
        latest, demoted = self._fresh_news()
        return latest if latest is not None and master in demoted else master

    def replicas(self, listed: Sequence[Any]) -> list[Address]:
        """The replicas a sentinel ``listed``, less the master heard of last (a promoted
        replica stays listed until the sentinel names it master)."""
        latest = self._fresh_news()[0]
        return [address for address in listed if address != latest]

    def refusal(self, address: Address, role: str, *, is_master: bool) -> str | None:
        """Why a new connection to ``address``, whose ``ROLE`` is ``role``, is not to be
        lent by the master's pool (``is_master``) or the replicas'; ``None`` if it may."""
        latest, demoted = self._fresh_news()
        where = f"{address[0]}:{address[1]}"
        if is_master and role != "master":  # a replica, or one being promoted right now
            return f"{where} is a {role} now, not the master of {self.service!r}"
        if is_master and address in demoted:
            return f"{where} was the master of {self.service!r} until a failover"
        if not is_master and role == "master" and latest is not None and address != latest:
            return f"{where} still serves as a master, though a failover named {latest[0]}:{latest[1]}"
        return None

    # --- what the sentinels say ---------------------------------------------------------

    def heard(self, channel: str, data: str) -> None:
        """Take in one event a sentinel published on ``channel``."""
        parts = data.split()
        if channel == SWITCHED and len(parts) == 5 and parts[0] == self.service:
            self._switch(_address(parts[1:3]), _address(parts[3:5]))
        elif channel == PROMOTING and len(parts) == 8 and parts[5] == self.service:
            # slave <ip>:<port> <ip> <port> @ <service> <master ip> <master port>
            self._switch(_address(parts[6:8]), _address(parts[2:4]))
        elif channel == ABORTED and len(parts) == 4 and parts[1] == self.service:
            latest = self._fresh_news()[0]
            if latest is not None:  # master <service> <ip> <port>: it stays the master
                self._switch(latest, _address(parts[2:4]))

    def _switch(self, old: Address, new: Address) -> None:
        with self._lock:
            latest, known = self._fresh_news()
            demoted = (known | {old}) - {new}
            if old == new or (latest, known) == (new, demoted):
                return  # already heard (each sentinel announces it)
            self.news = (new, demoted, time.monotonic() + NEWS_TTL)
            self.generation += 1
        logger.info("Sentinel service %r: the master moves to %s:%s", self.service, *new)

    # --- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Start listening, once per process (again in a forked child); not after :meth:`close`.

        Called by each new connection that the sentinels led to a server that passed the
        role check: so a process that never reaches the service listens to nothing."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        thread.start()

    @property
    def running(self) -> bool:
        """Whether this process's listener thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def close(self) -> None:
        """Stop listening and close the connections to the sentinels; waits for the thread
        up to :data:`JOIN_TIMEOUT` (not when called from it). Safe to call twice."""
        with self._lock:
            self._closed = True
            loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stop.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT)

    def _run(self) -> None:
        asyncio.run(self._follow_all())

    async def _follow_all(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            if self._closed:
                return
            self._loop, self._stop = asyncio.get_running_loop(), stop
        live: dict[Address, Any] = {}  # the subscriptions open now
        tasks = [asyncio.ensure_future(self._follow(address, live, stop)) for address in self._addresses]
        try:
            await stop.wait()
            # Ask each sentinel to end the subscription, so that each reader ends between two
            # reads and closes its connection whole (a TLS one with its close_notify); a
            # reader cancelled mid-read would leave its socket to the garbage collector.
            for pubsub in list(live.values()):
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.unsubscribe()
            await asyncio.wait(tasks, timeout=UNSUBSCRIBE_TIMEOUT)
        finally:
            for task in tasks:  # those waiting to connect again, or a sentinel that hangs
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, address: Address, live: dict[Address, Any], stop: asyncio.Event) -> None:
        """Listen to one sentinel until ``stop``, connecting again after a failure."""
        delay = BACKOFF_FIRST
        while not stop.is_set():
            client = redis.asyncio.Redis(host=address[0], port=address[1], **self._options)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(*CHANNELS)
                live[address], delay = pubsub, BACKOFF_FIRST
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                logger.debug("Sentinel %s:%s: %s; listening again in %g s", *address, exc, delay)
            except Exception:  # never end the listener: a failover unheard of loses writes
                logger.warning("Listening to sentinel %s:%s failed; again in %g s", *address, delay, exc_info=True)
            finally:
                live.pop(address, None)
                await client.aclose()  # first: its pool closes the connection whole
                await pubsub.aclose()
            if not stop.is_set():
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)

    async def _listen(self, pubsub: Any) -> None:
        """Take in ``pubsub``'s messages until its subscriptions end (returns) or the
        sentinel goes away (raises)."""
        confirmed = 0
        pinged = False
        try:
            while True:
                message = await pubsub.get_message(timeout=HEARTBEAT)
                if message is None:
                    if pinged:
                        raise ConnectionError(f"no answer within {2 * HEARTBEAT:g} s")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                kind = message["type"]
                if kind == "message":
                    self.heard(message["channel"], message["data"])
                elif kind == "subscribe":
                    confirmed += 1
                    if confirmed == len(CHANNELS):
                        self.listening += 1
                elif kind == "unsubscribe" and not message["data"]:  # the last one: closing
                    return
        finally:
            if confirmed >= len(CHANNELS):
                self.listening -= 1


def _address(parts: Sequence[str]) -> Address:
    return parts[0], int(parts[1])


#: Every watch in this process, for the fork hook below.
_WATCHES: weakref.WeakSet[SentinelWatch] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    for watch in list(_WATCHES):
        watch._start_afresh()


os.register_at_fork(after_in_child=_start_afresh_in_child)


# --- asking the sentinels -----------------------------------------------------------------


class FollowingSentinel(Sentinel):
    """redis-py's :class:`~redis.sentinel.Sentinel`, corrected by a :class:`SentinelWatch`."""

    def __init__(self, sentinels: Sequence[Address], watch: SentinelWatch, **kwargs: Any) -> None:
        super().__init__(sentinels, **kwargs)
        self.watch = watch

    def discover_master(self, service_name: str) -> Address:
        return self.watch.correct(super().discover_master(service_name))

    def discover_slaves(self, service_name: str) -> list[Address]:
        return self.watch.replicas(super().discover_slaves(service_name))


class AsyncFollowingSentinel(aio_sentinel.Sentinel):
    """:class:`FollowingSentinel` for ``redis.asyncio``."""

    def __init__(self, sentinels: Sequence[Address], watch: SentinelWatch, **kwargs: Any) -> None:
        super().__init__(sentinels, **kwargs)
        self.watch = watch

    async def discover_master(self, service_name: str) -> Address:
        return self.watch.correct(await super().discover_master(service_name))

    async def discover_slaves(self, service_name: str) -> list[Address]:
        return self.watch.replicas(await super().discover_slaves(service_name))


# --- checking a new connection's role -----------------------------------------------------


def _watch_of(pool: Any) -> SentinelWatch | None:
    """The watch behind a Sentinel connection's pool (redis-py's sync proxy, or the
    ``redis.asyncio`` pool itself), if its sentinels are ours."""
    watch: SentinelWatch | None = getattr(pool.sentinel_manager, "watch", None)
    return watch


def _admit(connection: Any, reply: Any, watch: SentinelWatch) -> None:
    """Lend ``connection``, whose server answered ``ROLE`` with ``reply`` (``None``: not
    allowed to ask), or refuse it; a first one lent starts the process's listener.

    :raises WrongRoleError: the server's role is not the one its pool serves now."""
    if reply is not None:
        role = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        address = (connection.host, connection.port)
        refusal = watch.refusal(address, role, is_master=connection.connection_pool.is_master)
        if refusal is not None:
            raise WrongRoleError(refusal)
    watch.start()  # this process reaches the service: follow its failovers


class FollowingConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, which asks the new server its ``ROLE`` before it is
    lent and remembers which failover it was made after (:attr:`generation`)."""

    #: :attr:`SentinelWatch.generation` when it connected.
    generation = 0

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health)
        watch = _watch_of(self.connection_pool)
        if watch is None:
            return
        self.generation = watch.generation  # first: a failover heard of from now on makes it stale
        self.send_command("ROLE", check_health=False)  # type: ignore[no-untyped-call]
        try:
            reply = self.read_response()
        except ResponseError:  # ROLE not allowed for this ACL user: lend it unchecked
            reply = None
        _admit(self, reply, watch)


class FollowingSSLConnection(FollowingConnection, SentinelManagedSSLConnection):
    """:class:`FollowingConnection` over TLS."""


class AsyncFollowingConnection(aio_sentinel.SentinelManagedConnection):
    """:class:`FollowingConnection` for ``redis.asyncio``."""

    generation = 0

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health)
        watch = _watch_of(self.connection_pool)
        if watch is None:
            return
        self.generation = watch.generation
        await self.send_command("ROLE", check_health=False)
        try:
            reply = await self.read_response()
        except ResponseError:
            reply = None
        _admit(self, reply, watch)


class AsyncFollowingSSLConnection(AsyncFollowingConnection, aio_sentinel.SentinelManagedSSLConnection):
    """:class:`AsyncFollowingConnection` over TLS."""
