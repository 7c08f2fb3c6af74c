"""Pool snapshots that every process publishes into Redis, and reading them back.

A ``flask redis-stats`` command, a dashboard or a Prometheus scrape runs in one process;
the connections are held by others (gunicorn workers). So each process that uses a pool
publishes that pool's :meth:`~flask_redispool.pool.CountedConnectionPool.snapshot`
every ``STATS_INTERVAL`` seconds under::

    flask_redispool:stats:<client name>:<prefix>:<host>:<pid>

with a time to live of :data:`~flask_redispool.config.STATS_TTL_INTERVALS` intervals, and
any process can read them all (:func:`read_snapshots`). The client name keeps two apps on
one Redis apart.

Publishing stays off the request path and cannot fail a request:

- a daemon thread publishes, one interval after the process's pool made its first
  connection, then every interval. So ``init_app`` does no I/O, a gunicorn master that
  preloads the app publishes nothing, and each forked worker starts its own thread
  (the pool resets itself in a child) with its first connection, then publishes while
  idle too;
- the thread has a connection of its own, outside the pool, so it neither takes nor
  waits for one that requests need, and publishes even when every pooled connection
  is busy. It is named ``<client name>:<host>:<pid>:stats``, which keeps it out of the
  per-process counts: a publishing process holds at most ``MAX_CONNECTIONS`` + 1;
- when Redis is down the thread logs one warning and tries again next interval;
- a process that ends cleanly deletes its snapshots; one that is killed leaves them to
  expire.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from redis.exceptions import RedisError, ResponseError

from .config import STATS_FRESH_INTERVALS, STATS_TTL_INTERVALS, Settings
from .stats import HOST, PoolReport, PoolStats, group_client_list, process_rows, totals

if TYPE_CHECKING:
    from redis import Redis
    from redis.connection import Connection

    from .pool import CountedConnectionPool

__all__ = ["KEY_PREFIX", "PublishedStats", "StatsPublisher", "build_report", "read_snapshots", "snapshot_key"]

#: The namespace of every published snapshot.
KEY_PREFIX: Final = "flask_redispool:stats"

logger = logging.getLogger("flask_redispool")
_GLOB_SPECIAL: Final = str.maketrans({c: "\\" + c for c in "*?[]\\"})
# What a send may raise: redis-py's errors, and socket errors when its connection is
# closed under it (shutdown); the thread must outlive all of them.
_SEND_ERRORS: Final = (RedisError, OSError, ValueError)
# Publishers whose thread runs, so that a clean exit can delete their snapshots.
_RUNNING: weakref.WeakSet[StatsPublisher] = weakref.WeakSet()


class PublishedStats(PoolStats):
    """A :class:`~flask_redispool.stats.PoolStats` as published, with when and how often."""

    published_at: float  #: the publisher's ``time.time()``
    interval: float  #: its ``STATS_INTERVAL``


def snapshot_key(settings: Settings, host: str, pid: int) -> str:
    """Where the process ``host``/``pid`` publishes its snapshot of this pool."""
    return f"{KEY_PREFIX}:{settings.client_name}:{settings.prefix}:{host}:{pid}"


class StatsPublisher:
    """Publishes one pool's snapshot every ``STATS_INTERVAL`` seconds from a daemon thread.

    Each pool makes a new one in every process (redis-py resets a pool in a forked
    child), and the pool calls :meth:`start` when it makes its first connection.
    """

    def __init__(self, pool: CountedConnectionPool) -> None:
        settings = pool.settings
        self.pool = pool
        self.interval = settings.stats_interval
        self.pid = os.getpid()
        self.key = snapshot_key(settings, HOST, self.pid)
        #: Read on every new connection: true once running, or when there is nothing to start.
        self.started = not self.interval
        self._running = False
        self._connection: Connection | None = None  # made on first use, in this process
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stopped = threading.Event()
        self._failing = False

    @property
    def running(self) -> bool:
        """Whether this process's publishing thread runs."""
        return self._running

    def start(self) -> None:
        """Start the publishing thread, once."""
        with self._lock:
            if self.started:
                return
            self.started = self._running = True
        _RUNNING.add(self)
        name = f"flask-redispool-stats-{self.pool.settings.prefix}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing for good and delete this process's snapshot (best effort).

        ``flask redis-stats`` calls it first, so that the command does not list itself.
        """
        with self._lock:
            running, self._running, self.started = self._running, False, True
        self._stopped.set()
        if not running or self.pid != os.getpid():  # a forked child must not delete its parent's
            return
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.pool.settings.worst_case_seconds)  # let a publish in flight end
            if thread.is_alive():  # Redis hangs: leave the snapshot to expire
                return
        self._send(lambda: ("DEL", self.key), warn=False)
        if self._connection is not None:
            self._connection.disconnect()  # type: ignore[no-untyped-call]

    def publish(self) -> bool:
        """Publish the snapshot now; ``False`` if Redis could not take it."""

        def command() -> tuple[object, ...]:
            stats = PublishedStats(**self.pool.snapshot(), published_at=time.time(), interval=self.interval)
            ttl_ms = round(self.interval * STATS_TTL_INTERVALS * 1000)
            return ("SET", self.key, json.dumps(stats), "PX", ttl_ms)

        return self._send(command)

    def _run(self) -> None:
        # The first snapshot goes out one interval after the pool's first connection.
        while not self._stopped.wait(self.interval):
            self.publish()

    def _send(self, command: Callable[[], tuple[object, ...]], *, warn: bool = True) -> bool:
        with self._send_lock:  # publish() may also be called from another thread
            if self._connection is None:
                pool = self.pool
                self._connection = pool.connection_class(**pool.connection_kwargs, name_suffix=":stats")
            connection: Connection = self._connection
            try:
                connection.send_command(*command())  # type: ignore[no-untyped-call]
                connection.read_response()
            except _SEND_ERRORS as exc:
                connection.disconnect()  # type: ignore[no-untyped-call]  # reconnects on the next send
                return warn and self._failed(exc)
        if self._failing:
            self._failing = False
            logger.info("Publishing %s's pool stats to Redis again.", self.pool.settings.prefix)
        return True

    def _failed(self, exc: Exception) -> bool:
        if not self._failing:
            self._failing = True
            settings = self.pool.settings
            logger.warning(
                "Could not publish %s's pool stats to %s (%s); will retry every %g s.",
                settings.prefix,
                settings.redacted_url,
                f"{type(exc).__name__}: {exc}",
                self.interval,
            )
        return False


def read_snapshots(client: Redis, settings: Settings) -> list[PublishedStats]:
    """Every live process's published snapshot of the pool ``settings`` describe.

    :raises RedisError: Redis is unreachable, or SCAN/MGET are not allowed.
    """
    pattern = f"{KEY_PREFIX}:{settings.client_name.translate(_GLOB_SPECIAL)}:{settings.prefix}:*"
    keys = list(client.scan_iter(match=pattern, count=1000))
    snapshots: list[PublishedStats] = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            stats = json.loads(raw)
        except ValueError:
            continue
        if isinstance(stats, dict) and stats.get("prefix") == settings.prefix:
            snapshots.append(cast("PublishedStats", stats))
    return sorted(snapshots, key=lambda s: (s["host"], s["pid"]))


def build_report(client: Redis, pool: CountedConnectionPool) -> PoolReport:
    """Every process's snapshot of ``pool`` beside the connections the server sees from it.

    A command the server refuses (an ACL without ``CLIENT`` or ``SCAN``) leaves its part
    out and says why in ``server_error`` or ``snapshots_error``.

    :raises RedisError: Redis is unreachable.
    """
    settings = pool.settings
    snapshots: list[PublishedStats] = []
    server = snapshots_error = server_error = None
    try:
        snapshots = read_snapshots(client, settings)
    except ResponseError as exc:
        snapshots_error = str(exc)
    try:
        server = group_client_list(client.client_list(), settings.client_name)
    except ResponseError as exc:
        server_error = str(exc)
    rows = process_rows(
        snapshots, server, interval=settings.stats_interval, fresh_intervals=STATS_FRESH_INTERVALS, now=time.time()
    )
    return PoolReport(
        pool=pool.snapshot(),
        stats_interval=settings.stats_interval,
        processes=rows,
        totals=totals(rows, server_seen=server is not None),
        snapshots_error=snapshots_error,
        server_error=server_error,
    )


@atexit.register
def _delete_on_exit() -> None:
    for publisher in list(_RUNNING):
        publisher.stop()
