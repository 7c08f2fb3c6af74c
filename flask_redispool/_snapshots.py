"""Pool snapshots that every process publishes into Redis, and reading them back.

A ``flask redis-stats`` command, a dashboard or a Prometheus scrape runs in one process;
the connections are held by others (gunicorn workers). So each process that uses a pool
publishes that pool's :meth:`~flask_redispool._pool.CountedConnectionPool.snapshot`
every ``STATS_INTERVAL`` seconds under::

    flask_redispool:stats:{<client name>:<prefix>}:<host>:<pid>:<pool id>

with a time to live of :data:`~flask_redispool._config.STATS_TTL_INTERVALS` intervals, and
any process can read them all (:func:`read_snapshots`). The braces are a hash tag: on a
Redis Cluster, the snapshots of one app and prefix share a slot, and so one node. The
client name keeps two apps on
one Redis apart; the pool id two pools of one process with the same name, which readers
add up per process. Anybody who can write under the key pattern can write anything, so
every reader goes through one check (:func:`parse_snapshot`): the size bounded before
parsing, every field, nested ones included, checked against its type and bounds, and
what does not fit skipped and counted. One bad value cannot break ``redis-stats``, a
report or a scrape.

Publishing stays off the request path and cannot fail a request:

- a daemon thread publishes, one interval after the process's pool made its first
  connection, then every interval. So ``init_app`` does no I/O, a gunicorn master that
  preloads the app publishes nothing (one that ran a warm-up command withdraws its
  snapshot when it forks the workers with nothing in use, until it uses a pool again:
  :meth:`StatsPublisher.withdraw`), and each forked worker starts its own thread
  (the pool resets itself in a child) with its first connection, then publishes while
  idle too;
- the thread has a connection of its own, outside the pool, so it neither takes nor
  waits for one that requests need, and publishes even when every pooled connection
  is busy. It is named ``<client name>:<host>:<pid>:stats``, which keeps it out of the
  per-process counts: a publishing process holds at most ``MAX_CONNECTIONS`` + 1.
  :meth:`~flask_redispool.RedisPool.health` uses the same connection;
- when Redis is down the thread logs one warning and tries again next interval; when
  the server refuses the snapshot (ACL, read-only replica, full ``maxmemory``) it backs
  off, doubling its pause up to :data:`MAX_BACKOFF_INTERVALS` intervals;
- the thread holds its pool weakly: an app dropped without ``close()`` is collected,
  and the thread then ends, deleting its snapshot;
- a process that ends cleanly deletes its snapshots; one that is killed leaves them to
  expire.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, cast, get_type_hints

from redis.exceptions import ResponseError

from ._config import STATS_FRESH_INTERVALS, STATS_TTL_INTERVALS, Settings
from ._errors import REDIS_ERRORS
from ._stats import FIGURES, HOST, PoolFigures, PoolReport, PoolStats, group_client_list, process_rows, totals

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

    from ._poolset import PoolSet
    from ._topology import SideConnection

    #: A client of one server, or of a Redis Cluster.
    AnyClient = Redis | RedisCluster

__all__ = [
    "KEY_PREFIX",
    "MAX_BACKOFF_INTERVALS",
    "MAX_COUNT",
    "MAX_SNAPSHOT_SIZE",
    "MAX_TEXT",
    "PublishedStats",
    "StatsPublisher",
    "build_report",
    "parse_snapshot",
    "read_snapshots",
    "snapshot_key",
    "valid_snapshot",
]

#: The namespace of every published snapshot.
KEY_PREFIX: Final = "flask_redispool:stats"

logger = logging.getLogger("flask_redispool")
_GLOB_SPECIAL: Final = str.maketrans({c: "\\" + c for c in "*?[]\\"})
# What a send may raise: redis-py's errors (a cluster client that finds no node raises one
# that is not a RedisError), and socket errors when its connection is closed under it
# (shutdown); the thread must outlive all of them.
_SEND_ERRORS: Final = (*REDIS_ERRORS, OSError, ValueError)
# Publishers whose thread runs, so that a clean exit can delete their snapshots.
_RUNNING: weakref.WeakSet[StatsPublisher] = weakref.WeakSet()
# Tells apart the pools of one process in their snapshot keys.
_POOL_IDS: Final = itertools.count()
#: The longest pause, in intervals, before a refused snapshot is offered again.
MAX_BACKOFF_INTERVALS: Final = 64
# Snapshots read per MGET (and keys asked for per SCAN).
_MGET_KEYS: Final = 1000


class PublishedStats(PoolStats):
    """A :class:`~flask_redispool.PoolStats` as published, with when and how often."""

    published_at: float  #: the publisher's ``time.time()``
    interval: float  #: its ``STATS_INTERVAL``
    #: When the process's counters started (its ``time.time()`` then: at ``init_app``, or
    #: at the fork that made it); 0 in a snapshot of an older release.
    started_at: float
    #: Threads alive in the process when it published, besides its publishing thread; 0 in
    #: a snapshot of an older release.
    threads: int


def snapshot_key(settings: Settings, host: str, pid: int, pool_id: int = 0) -> str:
    """Where the process ``host``/``pid`` publishes its snapshot of one pool.

    ``pool_id`` tells apart two pools of one process with the same client name and
    prefix (two apps from one factory); readers add their snapshots up per process.
    """
    return f"{KEY_PREFIX}:{{{settings.client_name}:{settings.prefix}}}:{host}:{pid}:{pool_id}"


class StatsPublisher:
    """Publishes one pool's snapshot every ``STATS_INTERVAL`` seconds from a daemon thread.

    Each pool makes a new one in every process (redis-py resets a pool in a forked
    child), and the pool calls :meth:`start` when it makes its first connection.

    It holds its pool only weakly (``snapshot`` is a weak method): an app that is
    dropped without :meth:`RedisPool.close() <flask_redispool.RedisPool.close>` is still
    collected, and then :meth:`orphan` ends the thread, which deletes the snapshot and
    closes its connection. A server that refuses the snapshot (an ACL, a read-only
    replica, a full ``maxmemory``) is asked again after a growing pause, up to
    :data:`MAX_BACKOFF_INTERVALS` intervals, on the same connection. A process that
    forks with nothing in use :meth:`withdraws <withdraw>` its snapshot until it uses
    its pools again.

    :param settings: the pool's settings.
    :param snapshot: returns the pool's :class:`~flask_redispool.PoolStats`, or is
        a dead weak reference (returns ``None``) once the pool is gone.
    :param side: the publisher's own connection (the topology's), opened on first use.
    """

    def __init__(
        self,
        settings: Settings,
        snapshot: Callable[[], Callable[[], PoolStats] | None],
        side: SideConnection,
    ) -> None:
        self.settings = settings
        self.interval = settings.stats_interval
        self.pid = os.getpid()
        self.started_at = time.time()  # a forked child makes a new publisher, and new counters
        self.key = snapshot_key(settings, HOST, self.pid, next(_POOL_IDS))
        #: Read on every new connection: true once running, or when there is nothing to start.
        self.started = not self.interval
        #: Publishes that failed in a row.
        self.failures = 0
        self._running = False
        self._snapshot = snapshot
        self._side_connection = side
        self._side: AnyClient | None = None
        self._side_pid = self.pid
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._orphaned = False
        self._delay = self.interval
        # Checkouts when the process forked with nothing in use; None: publishing.
        self._withdrawn_at: int | None = None
        self._retract = False  # whether the withdrawn snapshot is still to be deleted

    @property
    def running(self) -> bool:
        """Whether this process's publishing thread runs."""
        return self._running

    @property
    def side(self) -> AnyClient:
        """The client of this process's own connection, outside the pool (made on first use)."""
        with self._lock:  # a forked child makes its own: the parent's socket is not its to use
            if self._side is None or self._side_pid != os.getpid():
                self._side, self._side_pid = self._side_connection.open(), os.getpid()
            return self._side

    def start(self) -> None:
        """Start the publishing thread, once."""
        with self._lock:
            if self.started:
                return
            self.started = self._running = True
        _RUNNING.add(self)
        name = f"flask-redispool-stats-{self.settings.prefix}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def orphan(self) -> None:
        """The app was collected without ``close()``: end the thread, which deletes the
        snapshot and closes its connection. Does no network I/O itself (it runs inside
        the garbage collector, in whichever thread triggered it)."""
        with self._lock:
            self._orphaned = True
            running = self._running
        self._stopped.set()
        if not running:
            self.close()

    def stop(self) -> None:
        """Stop publishing for good, delete this process's snapshot and close the publisher's
        connection (best effort). Safe to call twice.

        ``flask redis-stats`` calls it first, so that the command does not list itself.
        """
        with self._lock:
            running, self._running, self.started = self._running, False, True
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.worst_case_seconds)  # let a publish in flight end
            if thread.is_alive():  # Redis hangs: leave the snapshot to expire
                return
        if running and self.pid == os.getpid():  # a forked child must not delete its parent's
            self._send(("DEL", self.key), warn=False)
        self.close()

    def close(self) -> None:
        """Close the publisher's own connection (also the one :meth:`health` used)."""
        with self._lock:
            side, self._side = self._side, None
        if side is not None:
            self._side_connection.close(side)

    def withdraw(self) -> None:
        """The process forks with no connection in use (a gunicorn master that preloaded the
        app, its idle connections just closed): it serves nothing, so publish nothing until
        its pools check a connection out again. The thread deletes the snapshot and closes
        its connection at its next turn; no network I/O here (this runs just before a fork)."""
        snapshot = self._snapshot()
        if snapshot is None:
            return
        checkouts = _checkouts(snapshot())
        with self._lock:  # a snapshot may be out if the publisher's connection was made
            self._withdrawn_at = checkouts
            self._retract = self._retract or (self._running and self._side is not None)

    def publish(self) -> bool:
        """Publish the snapshot now; ``False`` if Redis could not take it (or the pool is gone,
        or the process has not used it since it withdrew the snapshot)."""
        snapshot = self._snapshot()
        if snapshot is None:
            return False
        pool_stats = snapshot()
        if self._withdrawn(pool_stats):
            return False
        stats = PublishedStats(
            **pool_stats,
            published_at=time.time(),
            interval=self.interval,
            started_at=self.started_at,
            threads=self._other_threads(),
        )
        ttl_ms = round(self.interval * STATS_TTL_INTERVALS * 1000)
        return self._send(("SET", self.key, json.dumps(stats), "PX", ttl_ms))

    def _other_threads(self) -> int:
        """Threads alive in this process besides the publishing one."""
        thread = self._thread
        return threading.active_count() - (1 if thread is not None and thread.is_alive() else 0)

    def _withdrawn(self, stats: PoolStats) -> bool:
        """Whether the snapshot stays withdrawn; deletes it first, once."""
        with self._lock:
            if self._withdrawn_at is not None and _checkouts(stats) > self._withdrawn_at:
                self._withdrawn_at, self._retract = None, False  # used again: publish again
            withdrawn, retract, self._retract = self._withdrawn_at is not None, self._retract, False
        if retract:
            self._send(("DEL", self.key), warn=False)
            self.close()
        return withdrawn

    def _run(self) -> None:
        # The first snapshot goes out one interval after the pool's first connection.
        while not self._stopped.wait(self._delay):
            self.publish()
        if self._orphaned:
            with self._lock:
                self._running = False
            self._send(("DEL", self.key), warn=False)
            self.close()

    def _send(self, command: tuple[object, ...], *, warn: bool = True) -> bool:
        try:
            self.side.execute_command(*command)  # type: ignore[no-untyped-call]
        except ResponseError as exc:  # refused: ask again after a growing pause
            self._delay = min(self._delay * 2, self.interval * MAX_BACKOFF_INTERVALS)
            return warn and self._failed(exc)
        except _SEND_ERRORS as exc:  # unreachable: try again next interval
            return warn and self._failed(exc)
        self._delay = self.interval
        if self.failures:
            self.failures = 0
            logger.info("Publishing %s's pool stats to Redis again.", self.settings.prefix)
        return True

    def _failed(self, exc: Exception) -> bool:
        self.failures += 1
        if self.failures == 1:
            settings = self.settings
            logger.warning(
                "Could not publish %s's pool stats to %s (%s); will retry %s.",
                settings.prefix,
                settings.redacted_url,
                f"{type(exc).__name__}: {exc}",
                "with a growing pause" if isinstance(exc, ResponseError) else f"every {self.interval:g} s",
            )
        return False


def _checkouts(stats: PoolStats) -> int:
    """Connections the pools of ``stats`` checked out so far, sync and async."""
    return stats["checkouts"] + stats["async_checkouts"]


#: A snapshot longer than this is skipped unparsed. Ours take about 1 KB, and 200 bytes
#: more per pool: a Redis Cluster of a thousand nodes publishes about 200 KB.
MAX_SNAPSHOT_SIZE: Final = 1 << 20
#: The largest count a reader takes: a signed 64-bit integer, which Prometheus exports
#: as a float without overflow. Ours come nowhere near it.
MAX_COUNT: Final = 2**63 - 1
#: The longest text a reader takes (a redacted URL that lists many nodes fits).
MAX_TEXT: Final = 4096
# A host as HOST spells it: printable ASCII without spaces or colons.
_HOST_RE: Final = re.compile(r"[!-9;-~]{1,255}")

#: Checks one published value and returns it, or raises :class:`_Misfit`.
Check = Callable[[object], Any]


class _Misfit(Exception):
    """A published value that does not fit its field."""


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise _Misfit
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise _Misfit  # NaN fails the comparison too
    return value


def _moment(value: object) -> float:
    """A publisher's ``published_at`` or ``interval``: more than 0 seconds."""
    seconds = _seconds(value)
    if not seconds:
        raise _Misfit
    return seconds


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Misfit
    return value


def _text(value: object) -> str:
    """Text a terminal can show as it is: bounded, without control characters."""
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise _Misfit
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _host(value: object) -> str:
    if not isinstance(value, str) or not _HOST_RE.fullmatch(value):
        raise _Misfit
    return value


def _pools(value: object) -> list[PoolFigures]:
    if not isinstance(value, list):
        raise _Misfit
    return [cast("PoolFigures", _fields(pool, _POOL_CHECKS)) for pool in value]


def _fields(value: object, checks: Mapping[str, Check], absent: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The JSON object ``value`` with each field of ``checks`` checked, and no other field;
    a field missing from ``value`` is read from ``absent``, if it is there."""
    absent = absent or {}
    if not isinstance(value, dict):
        raise _Misfit
    fields = {}
    for name, check in checks.items():
        if name not in value and name not in absent:
            raise _Misfit
        fields[name] = check(value[name] if name in value else absent[name])
    return fields


def _checks(kind: type, **by_name: Check) -> dict[str, Check]:
    """A check per field of the TypedDict ``kind``, by the field's type, or ``by_name``."""
    return {name: by_name.get(name) or _CHECKS_BY_TYPE[hint] for name, hint in get_type_hints(kind).items()}


_CHECKS_BY_TYPE: Final[dict[object, Check]] = {
    int: _count,
    float: _seconds,
    bool: _flag,
    str: _text,
    str | None: _optional_text,
    list[PoolFigures]: _pools,
}
_POOL_CHECKS: Final = _checks(PoolFigures)
_SNAPSHOT_CHECKS: Final = _checks(PublishedStats, host=_host, published_at=_moment, interval=_moment)
#: Fields a snapshot of an older release lacks, and how they are read then.
_ABSENT_AS: Final = {
    **{figure.name: 0 for figure in FIGURES if figure.since_async},
    "pools": [],
    "started_at": 0.0,
    "threads": 0,
    "circuit_breaker": "closed",
    "circuit_retry_in": 0.0,
}


def valid_snapshot(value: object, prefix: str) -> PublishedStats | None:
    """``value``, parsed JSON, as a snapshot of ``prefix``'s pool; ``None`` when it does not fit.

    Every field of :class:`PublishedStats`, those of each pool included, is checked
    against its type and bounds (counts from 0 to :data:`MAX_COUNT`, finite seconds,
    text of at most :data:`MAX_TEXT` printable characters); fields it does not declare
    are left out. This is what every reader (``redis-stats``, ``report()``, a Prometheus
    scrape) gets, so none of them checks again.
    """
    try:
        stats = _fields(value, _SNAPSHOT_CHECKS, _ABSENT_AS)
    except _Misfit:
        return None
    return cast("PublishedStats", stats) if stats["prefix"] == prefix else None


def parse_snapshot(raw: bytes | str, prefix: str) -> PublishedStats | None:
    """A published snapshot of ``prefix``'s pool as read from Redis, parsed and checked
    (:func:`valid_snapshot`); ``None`` when it does not fit. Parsing is bounded: a value
    longer than :data:`MAX_SNAPSHOT_SIZE` is not parsed, and one nested too deep for
    :func:`json.loads` is skipped."""
    if len(raw) > MAX_SNAPSHOT_SIZE:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), a number too long, nested too deep
        return None
    return valid_snapshot(value, prefix)


def read_snapshots(client: AnyClient, settings: Settings) -> tuple[list[PublishedStats], int]:
    """Every live process's published snapshot of the pool ``settings`` describe, one per
    process (two pools of one process with the same name are added up), and how many
    snapshots were skipped as malformed.

    :raises RedisError: Redis is unreachable, or SCAN/MGET are not allowed.
    """
    pattern = f"{KEY_PREFIX}:{{{settings.client_name.translate(_GLOB_SPECIAL)}:{settings.prefix}}}:*"
    keys = list(client.scan_iter(match=pattern, count=_MGET_KEYS))
    by_process: dict[tuple[str, int], PublishedStats] = {}
    skipped = 0
    for raw in _values(client, keys):
        if raw is None:  # expired between SCAN and MGET
            continue
        stats = parse_snapshot(raw, settings.prefix)
        if stats is None:
            skipped += 1
            continue
        where = (stats["host"], stats["pid"])
        by_process[where] = _add(by_process[where], stats) if where in by_process else stats
    return [by_process[where] for where in sorted(by_process)], skipped


def _values(client: AnyClient, keys: list[str]) -> Iterator[bytes | str | None]:
    """The values of ``keys``, a thousand per MGET: no one reply grows with the key count."""
    for start in range(0, len(keys), _MGET_KEYS):
        yield from client.mget(keys[start : start + _MGET_KEYS])


def _add(one: PublishedStats, other: PublishedStats) -> PublishedStats:
    """Two pools of one process, as one: counts added, the older publication time kept."""
    total: dict[str, Any] = dict(one)
    for figure in FIGURES:
        total[figure.name] += other[figure.name]  # type: ignore[literal-required]
    total["published_at"] = min(one["published_at"], other["published_at"])
    total["started_at"] = min(one["started_at"], other["started_at"])
    total["threads"] = max(one["threads"], other["threads"])
    total["pools"] = [*one["pools"], *other["pools"]]
    return cast("PublishedStats", total)


def build_report(client: AnyClient, pools: PoolSet) -> PoolReport:
    """Every process's snapshot of ``pools`` beside the connections the servers see from it
    (``CLIENT LIST`` on ``client``'s server and on every other server the pools use, such
    as Sentinel replicas or a cluster's nodes, as the pools' topology reads them).

    A command the server refuses (an ACL without ``CLIENT`` or ``SCAN``) leaves its part
    out and says why in ``server_error`` or ``snapshots_error``; so do unnamed connections
    (``CLIENT_NAME = False``, or a server that refused ``CLIENT SETNAME``), which the
    server view cannot tell apart. Snapshots that do not fit are counted in
    ``snapshots_skipped``.

    :raises RedisError: Redis is unreachable, or refused the connection itself
        (credentials, database number).
    """
    settings, topology = pools.settings, pools.topology
    topology.connect(client)  # first: a connection the server refuses is no partial view
    snapshots: list[PublishedStats] = []
    server = snapshots_error = server_error = None
    skipped = 0
    try:
        snapshots, skipped = read_snapshots(client, settings)
    except ResponseError as exc:
        snapshots_error = f"{type(exc).__name__}: {exc}"
    unnamed = _why_unnamed(pools)
    if unnamed is not None:
        server_error = unnamed
    else:
        try:
            server = group_client_list(topology.client_lists(client), settings.client_name)
        except ResponseError as exc:
            server_error = f"{type(exc).__name__}: {exc}"
    rows = process_rows(
        snapshots, server, interval=settings.stats_interval, fresh_intervals=STATS_FRESH_INTERVALS, now=time.time()
    )
    return PoolReport(
        pool=pools.snapshot(),
        stats_interval=settings.stats_interval,
        processes=rows,
        totals=totals(rows, server_seen=server is not None),
        snapshots_error=snapshots_error,
        snapshots_skipped=skipped,
        server_error=server_error,
    )


def _why_unnamed(pools: PoolSet) -> str | None:
    settings = pools.settings
    if not settings.name_connections:
        return f"connections are unnamed ({settings.key('CLIENT_NAME')} is False)"
    refused = pools.policy.naming_refused
    if refused is not None:
        return f"connections are unnamed: the server refused CLIENT SETNAME ({refused})"
    return None


@atexit.register
def _delete_on_exit() -> None:
    for publisher in list(_RUNNING):
        publisher.stop()
