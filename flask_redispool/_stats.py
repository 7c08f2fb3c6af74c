"""Pool counters, the JSON-ready snapshots built from them, and the per-process report.

Counting sits on every checkout, so it is one uncontended lock section; everything
else (in use, idle) is read from the pool only when a snapshot is asked for
(:meth:`~flask_redispool._pool.CountedPool.connection_counts`).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypedDict, cast

__all__ = [
    "FIGURES",
    "HOST",
    "ROW_FIGURES",
    "Figure",
    "PoolCounters",
    "PoolFigures",
    "PoolReport",
    "PoolStats",
    "ProcessConnections",
    "ProcessRow",
    "Totals",
    "group_client_list",
    "is_fresh",
    "process_rows",
    "split_client_name",
    "totals",
]

#: This machine as connection names and snapshots give it: CLIENT SETNAME takes no
#: spaces, and a colon would split the name wrongly.
HOST: Final = re.sub(r"[^!-9;-~]", "-", socket.gethostname()) or "unknown"


class PoolFigures(TypedDict):
    """One pool of an app and prefix, in :attr:`PoolStats.pools`: there is one per
    server role (a single server's; a Sentinel service's master and replicas)."""

    role: str  #: ``"primary"`` (a single server), ``"master"`` or ``"replica"``
    address: str | None  #: ``host:port`` (the current master's behind Sentinel), if known
    max_connections: int
    in_use: int
    idle: int
    created: int
    checkouts: int
    waits: int
    timeouts: int


class PoolStats(TypedDict):
    """What :meth:`RedisPool.stats() <flask_redispool.RedisPool.stats>` returns.

    The counts add up the pools of :attr:`pools` (a single server has one); so does
    ``max_connections``, the most this process's sync pools may hold at once.
    """

    prefix: str
    url: str
    max_connections: int
    blocking: bool
    pool_timeout: float
    socket_timeout: float
    retries: int
    worst_case_seconds: float
    created: int
    in_use: int
    idle: int
    peak_in_use: int
    checkouts: int
    waits: int
    timeouts: int
    pid: int
    host: str
    client_name: str
    naming_refused: str | None  #: why the server refused CLIENT SETNAME, if it did
    async_pools: int  #: event loops with a pool of their own (async views)
    async_in_use: int  #: connections checked out of those pools now
    async_checkouts: int  #: connections checked out of them so far
    async_waits: int  #: async checkouts that found their loop's pool full and queued
    async_timeouts: int  #: async checkouts that ended in PoolExhaustedError
    #: the circuit breaker: ``"closed"``, ``"open"``, ``"half-open"`` or ``"off"`` (on a
    #: cluster, whose nodes have one each, ``"open"`` while any node's is)
    circuit_breaker: str
    circuit_open: int  #: 1 while the circuit breaker is open or half-open, else 0 (a cluster: its nodes')
    circuit_opened: int  #: times the circuit breaker opened (a cluster: its nodes' in all)
    circuit_failures: int  #: connection failures in a row now, 0 after a reply (a cluster: the longest)
    circuit_retry_in: float  #: seconds until the open breaker's probe tries again (0 otherwise; a cluster: the soonest)
    cache_hits: int  #: reads the client-side cache answered (``CLIENT_CACHE``)
    cache_misses: int  #: reads it sent to the server, and cached
    cache_invalidations: int  #: cached replies the server invalidated
    cache_evictions: int  #: cached replies dropped for room (``max_size``)
    cache_entries: int  #: replies it holds now
    pools: list[PoolFigures]  #: each pool apart


@dataclass(frozen=True)
class Figure:
    """One number of a process's pool, declared once for every place that shows it.

    :param name: its key in :class:`PoolStats`, a published snapshot and :class:`ProcessRow`.
    :param doc: one line: the Prometheus help text.
    :param column: its column title in ``flask redis-stats`` (``None``: not a column).
    :param width: that column's width.
    :param total: summed over the processes in :class:`Totals`.
    :param metric: its Prometheus metric name after ``flask_redispool_`` (``None``: not
        exported); counters get ``_total`` from prometheus_client.
    :param counter: a Prometheus counter that only grows (else a gauge).
    :param since_async: absent from snapshots of older releases (before async pools, or the
        client-side cache): read as 0.
    """

    name: str
    doc: str
    column: str | None = None
    width: int = 0
    total: bool = False
    metric: str | None = None
    counter: bool = False
    since_async: bool = False


#: The figures of one process's pool, in the order ``flask redis-stats`` shows them. The
#: TypedDicts below spell the same names for type checkers; a test keeps them in step.
FIGURES: Final[tuple[Figure, ...]] = (
    Figure("in_use", "Connections checked out of the pool now.", "IN_USE", 7, True, "connections_in_use"),
    Figure("idle", "Connections idle in the pool and open to the server.", "IDLE", 5, True, "connections_idle"),
    Figure("peak_in_use", "Most connections in use at once.", "PEAK", 5),
    Figure("checkouts", "Connections checked out of the pool.", "CHECKOUTS", 10, True, "checkouts", True),
    Figure("waits", "Checkouts that had to queue for a connection.", "WAITS", 6, True, "waits", True),
    Figure("timeouts", "Checkouts that ended in PoolExhaustedError.", "TIMEOUTS", 9, True, "timeouts", True),
    Figure("async_pools", "Event loops with a pool of their own.", "LOOPS", 6, since_async=True),
    Figure("async_in_use", "Connections checked out of the async pools now.", "ASYNC", 6, True, since_async=True),
    Figure(
        "async_checkouts", "Connections checked out of the async pools.", None, 0, True, "async_checkouts", True, True
    ),
    Figure("async_waits", "Async checkouts that queued for a connection.", None, 0, True, "async_waits", True, True),
    Figure(
        "async_timeouts",
        "Async checkouts that ended in PoolExhaustedError.",
        None,
        0,
        True,
        "async_timeouts",
        True,
        True,
    ),
    # Absent from snapshots published before the circuit breaker: read as 0 (since_async).
    Figure(
        "circuit_open",
        "Circuit breakers open now (1 at most, on a cluster one per node): their commands fail at once.",
        "CB_OPEN",
        7,
        True,
        "circuit_breaker_open",
        since_async=True,
    ),
    Figure("circuit_opened", "Times the circuit breaker opened.", None, 0, True, "circuit_breaker_opened", True, True),
    Figure(
        "circuit_failures",
        "Connection failures in a row now.",
        None,
        0,
        metric="circuit_breaker_failures",
        since_async=True,
    ),
    Figure("cache_hits", "Reads the client-side cache answered.", None, 0, True, "client_cache_hits", True, True),
    Figure("cache_misses", "Cacheable reads sent to the server.", None, 0, True, "client_cache_misses", True, True),
    Figure(
        "cache_invalidations",
        "Cached replies the server invalidated.",
        None,
        0,
        True,
        "client_cache_invalidations",
        True,
        True,
    ),
    Figure("cache_evictions", "Cached replies dropped for room.", None, 0, True, "client_cache_evictions", True, True),
    Figure(
        "cache_entries", "Replies in the client-side cache now.", None, 0, True, "client_cache_entries", False, True
    ),
    Figure("max_connections", "The limit, REDIS_MAX_CONNECTIONS.", metric="max_connections"),
    Figure("created", "Connections the pool has made.", metric="connections_created", counter=True),
)
#: The figures a :class:`ProcessRow` carries from a process's snapshot.
ROW_FIGURES: Final = tuple(figure for figure in FIGURES if figure.name != "created")


class ProcessConnections(TypedDict):
    """One process's connections as the server sees them (``CLIENT LIST``)."""

    host: str
    pid: int
    connections: int
    idle_max: int
    idle_min: int
    #: Seconds since its oldest connection connected (``CLIENT LIST``'s ``age``), if the server says.
    age_max: int | None
    this_process: bool
    #: Per node of a Redis Cluster (``host:port``), its connections there; empty elsewhere.
    nodes: dict[str, int]


class PoolCounters:
    """Counters of one pool in one process, a listener of its events
    (:mod:`~flask_redispool._events`); a forked child starts a fresh set.

    Checkouts, counted on every command, cost one C call: :meth:`checkout` is an
    :func:`itertools.count`'s ``__next__``, atomic under the GIL, no lock section. The
    rarer ones (a connection made, a wait, a timeout) take :attr:`lock`.
    """

    __slots__ = ("_checkouts", "checkout", "created", "lock", "timeouts", "waits")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._checkouts = itertools.count()
        #: Count one checkout.
        self.checkout = self._checkouts.__next__
        self.created = 0
        self.waits = 0
        self.timeouts = 0

    @property
    def checkouts(self) -> int:
        """Checkouts so far: the next number the count would give (its repr is ``count(N)``)."""
        return int(repr(self._checkouts)[len("count(") : -1])

    def connect(self) -> None:
        """Count a connection made."""
        with self.lock:
            self.created += 1

    def wait(self) -> None:
        """Count a checkout that began to wait."""
        with self.lock:
            self.waits += 1

    def timeout(self) -> None:
        """Count a checkout that got no connection."""
        with self.lock:
            self.timeouts += 1


def split_client_name(name: str) -> tuple[str, str, int] | None:
    """Split ``base:host:pid`` as set by our connections; ``None`` for other names."""
    parts = name.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


def group_client_list(clients: Iterable[Mapping[str, Any]], client_name: str) -> list[ProcessConnections]:
    """Group ``CLIENT LIST`` entries carrying ``client_name`` by host and pid.

    This is how the CLI, in its own process, sees what the serving workers hold. Entries
    of a cluster carry the ``node`` they were listed on, and are counted per node too.
    """
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    ages: dict[tuple[str, int], list[int]] = defaultdict(list)
    nodes: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    for entry in clients:
        parsed = split_client_name(str(entry.get("name", "")))
        if parsed is None or parsed[0] != client_name:
            continue
        groups[(parsed[1], parsed[2])].append(int(entry.get("idle", 0)))
        if "age" in entry:
            ages[(parsed[1], parsed[2])].append(int(entry["age"]))
        if "node" in entry:
            nodes[(parsed[1], parsed[2])][str(entry["node"])] += 1
    here = (HOST, os.getpid())
    return [
        ProcessConnections(
            host=host,
            pid=pid,
            connections=len(idles),
            idle_max=max(idles),
            idle_min=min(idles),
            age_max=max(ages[(host, pid)], default=None),
            this_process=(host, pid) == here,
            nodes=dict(nodes[(host, pid)]),
        )
        for (host, pid), idles in sorted(groups.items())
    ]


class ProcessRow(TypedDict):
    """One process in ``flask redis-stats``: its published snapshot (``None`` fields when
    it has none) beside the connections the server sees from it."""

    host: str
    pid: int
    in_use: int | None
    idle: int | None
    peak_in_use: int | None
    checkouts: int | None
    waits: int | None
    timeouts: int | None
    max_connections: int | None
    async_pools: int | None
    async_in_use: int | None
    async_checkouts: int | None
    async_waits: int | None
    async_timeouts: int | None
    circuit_open: int | None
    circuit_opened: int | None
    circuit_failures: int | None
    cache_hits: int | None
    cache_misses: int | None
    cache_invalidations: int | None
    cache_evictions: int | None
    cache_entries: int | None
    snapshot_age: float | None  #: seconds since the snapshot was published
    server_connections: int | None  #: ``None`` when ``CLIENT LIST`` was not allowed
    this_process: bool
    suspect: str | None  #: why this process may leak connections, if it may
    pools: list[PoolFigures]  #: each of its pools apart, from its snapshot (empty without one)


class Totals(TypedDict):
    """Sums over the rows of one pool; snapshot fields over the rows that have one."""

    processes: int
    in_use: int
    idle: int
    checkouts: int
    waits: int
    timeouts: int
    async_in_use: int
    async_checkouts: int
    async_waits: int
    async_timeouts: int
    circuit_open: int
    circuit_opened: int
    cache_hits: int
    cache_misses: int
    cache_invalidations: int
    cache_evictions: int
    cache_entries: int
    server_connections: int | None
    suspects: int


class PoolReport(TypedDict):
    """What :meth:`RedisPool.report() <flask_redispool.RedisPool.report>` returns, and
    ``flask redis-stats --json`` prints per pool."""

    pool: PoolStats  #: this process's own pool
    stats_interval: float
    processes: list[ProcessRow]
    totals: Totals
    snapshots_error: str | None  #: why no snapshot could be read, if none could
    snapshots_skipped: int  #: published snapshots that did not fit the expected shape
    server_error: str | None  #: why the server's view is missing, if it is


def process_rows(
    snapshots: Iterable[Mapping[str, Any]],
    server: Iterable[ProcessConnections] | None,
    *,
    interval: float,
    fresh_intervals: float,
    now: float,
) -> list[ProcessRow]:
    """Join published snapshots and ``CLIENT LIST`` groups by host and pid, and flag
    leak suspects: a process with more server connections than its pools allow (in all,
    or on one node of a cluster), or one holding connections without a fresh snapshot
    (only when ``interval`` is not 0). A process without any snapshot gets the same
    ``fresh_intervals`` of grace, counted from its oldest connection (``CLIENT LIST``'s
    ``age``): a new process publishes its first snapshot one interval after its first
    connection, and is no suspect until then."""
    rows: dict[tuple[str, int], ProcessRow] = {}
    fresh: dict[tuple[str, int], bool] = {}
    grace = fresh_intervals * interval
    on_nodes: dict[tuple[str, int], dict[str, int]] = {}
    for snap in snapshots:
        where = (str(snap["host"]), int(snap["pid"]))
        age = round(max(0.0, now - float(snap["published_at"])), 1)
        fresh[where] = is_fresh(snap, now, fresh_intervals)
        rows[where] = _row(where, snap, age, server=None if server is None else 0)
    for proc in server or ():
        where = (proc["host"], proc["pid"])
        row = rows.get(where) or _row(where, None, None, server=0)
        row["server_connections"], row["this_process"] = proc["connections"], proc["this_process"]
        rows[where], on_nodes[where] = row, proc.get("nodes", {})
        oldest = proc.get("age_max")
        if where not in fresh and oldest is not None and oldest < grace:  # new: its first snapshot is due
            fresh[where] = True
    for where, row in rows.items():
        row["suspect"] = _node_suspicion(row, on_nodes.get(where, {})) or _suspicion(
            row, expected=bool(interval), fresh=fresh.get(where, False)
        )
    return [rows[where] for where in sorted(rows)]


def is_fresh(snapshot: Mapping[str, Any], now: float, fresh_intervals: float) -> bool:
    """Whether ``snapshot`` was published within ``fresh_intervals`` of its own interval."""
    return now - float(snapshot["published_at"]) <= fresh_intervals * float(snapshot["interval"])


def _row(
    where: tuple[str, int], snap: Mapping[str, Any] | None, age: float | None, *, server: int | None
) -> ProcessRow:
    figures = {figure.name: None if snap is None else int(snap.get(figure.name, 0)) for figure in ROW_FIGURES}
    row = {"host": where[0], "pid": where[1], **figures, "snapshot_age": age}
    pools = list(snap.get("pools", [])) if snap is not None else []
    extra = {"server_connections": server, "this_process": False, "suspect": None, "pools": pools}
    return cast(ProcessRow, {**row, **extra})


def _node_suspicion(row: ProcessRow, on_nodes: Mapping[str, int]) -> str | None:
    """A cluster's node on which the process holds more than that node's pool allows."""
    for pool in row["pools"]:
        held = on_nodes.get(str(pool.get("address")), 0)
        if held > pool["max_connections"]:
            return (
                f"{held} connections on node {pool['address']}, more than its pool's limit of {pool['max_connections']}"
            )
    return None


def _suspicion(row: ProcessRow, *, expected: bool, fresh: bool) -> str | None:
    held, limit = row["server_connections"], row["max_connections"]
    if limit is not None:
        limit *= 1 + (row["async_pools"] or 0)  # each event loop's pool has the same limit
    if held is not None and limit is not None and held > limit:
        return f"{held} server connections, more than its pools' limit of {limit}"
    if not held or row["this_process"] or not expected or fresh:
        return None
    if row["snapshot_age"] is None:
        return f"holds {held} connection(s) but publishes no snapshot"
    return f"holds {held} connection(s); its last snapshot is {row['snapshot_age']:g} s old"


def totals(rows: Iterable[ProcessRow], *, server_seen: bool) -> Totals:
    """Sum ``rows`` (see :class:`Totals`); ``server_seen``: whether ``CLIENT LIST`` answered."""
    rows = list(rows)

    def total(name: str) -> int:
        values: list[int | None] = [row[name] for row in rows]  # type: ignore[literal-required]
        return sum(value or 0 for value in values)

    sums = {figure.name: total(figure.name) for figure in FIGURES if figure.total}
    return cast(
        Totals,
        {
            "processes": len(rows),
            **sums,
            "server_connections": total("server_connections") if server_seen else None,
            "suspects": sum(1 for row in rows if row["suspect"]),
        },
    )
