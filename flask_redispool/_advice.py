"""What to set ``REDIS_MAX_CONNECTIONS`` to: ``flask redis-stats --advise`` and
:meth:`RedisPool.advice() <flask_redispool.RedisPool.advice>`.

The serving workers' published snapshots (:mod:`~flask_redispool._snapshots`) say how many
connections each pool of each worker held at most (its peak: a pool never drops a
connection it made), how often a checkout waited or timed out, how long the worker has
counted, and how many threads it runs. The servers' ``INFO clients`` says how many
clients each one takes (``maxclients``) and holds now. :func:`advise` weighs them, a
pure function of those figures; :func:`build_advice` reads them.

The rules, with their thresholds (:class:`Thresholds`):

- waits or timeouts seen: **raise**, to the most threads alive in one worker when that is
  more than the limit (each may hold a connection), else by half (some threads hold more
  than one: a pubsub, a pipeline left open). Evidence of a pool too small needs no long
  watch;
- no waits, watched long enough (``min_window`` in the longest-running worker and
  ``min_checkouts`` in all): the peak and a quarter (at least one more) would do: **lower**
  to that when it is below the limit, else **keep**;
- on every server, the workers' limits together must leave a quarter of ``maxclients`` free
  (``reserve``): a rolling deploy runs old and new workers at once, and the publishers, the
  ``flask`` commands and other clients connect too. A limit above that is lowered, or
  ``maxclients`` raised, whatever was watched;
- otherwise: **too little** seen to say, and what is missing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict

from redis.exceptions import ResponseError

from ._snapshots import read_snapshots

if TYPE_CHECKING:
    from ._config import Settings
    from ._poolset import PoolSet
    from ._snapshots import AnyClient, PublishedStats

__all__ = [
    "PoolAdvice",
    "ServerClients",
    "Thresholds",
    "Verdict",
    "advise",
    "build_advice",
    "format_advice",
    "pool_advice",
    "server_clients",
]

#: The verdicts, in :attr:`PoolAdvice.advice`.
RAISE: Final = "raise"
LOWER: Final = "lower"
KEEP: Final = "keep"
TOO_LITTLE: Final = "too little"


@dataclass(frozen=True)
class Thresholds:
    """When the advisor has seen enough to say a pool is too large.

    :param min_window: how long the longest-running worker must have counted: a peak
        means little before the traffic's busy hour has passed.
    :param min_checkouts: checkouts counted by all the workers together.
    :param reserve: the share of each server's ``maxclients`` the workers' limits leave
        free, for deploys and other clients.
    """

    min_window: float = 600.0
    min_checkouts: int = 1000
    reserve: float = 0.25


class ServerClients(TypedDict):
    """One server's clients, from its ``INFO clients``."""

    address: str
    maxclients: int | None
    connected_clients: int | None


class PoolAdvice(TypedDict):
    """What :meth:`RedisPool.advice() <flask_redispool.RedisPool.advice>` returns, and
    ``flask redis-stats --advise --json`` prints per pool."""

    prefix: str
    url: str  #: without its password
    client_name: str
    setting: str  #: the config key judged: ``REDIS_MAX_CONNECTIONS``
    max_connections: int  #: the limit the workers run with (this app's when none published)
    workers: int  #: processes that published a snapshot
    threads: int | None  #: the most threads alive in one worker; ``None`` if none said
    observed_seconds: float  #: how long the longest-running worker has counted
    checkouts: int  #: by all the workers, sync and async
    peak_in_use: int  #: the most connections one pool of one worker held at once
    waits: int  #: checkouts that queued, in all the workers, sync and async
    timeouts: int  #: checkouts that ended in PoolExhaustedError, likewise
    async_pools: int  #: event loops with a pool of their own (whose peak is not counted)
    servers: list[ServerClients]
    advice: str  #: ``"raise"``, ``"lower"``, ``"keep"`` or ``"too little"``
    recommended: int | None  #: the ``REDIS_MAX_CONNECTIONS`` advised, if any
    maxclients_needed: int | None  #: the ``maxclients`` the advised or present limit needs, when above the server's
    reasons: list[str]  #: the arithmetic, one sentence each
    snapshots_error: str | None  #: why no snapshot could be read, if none could
    server_error: str | None  #: why the servers' ``INFO clients`` is missing, if it is


@dataclass(frozen=True)
class _Workers:
    """The figures of every worker's snapshot, gathered."""

    count: int
    limit: int
    threads: int | None
    seconds: float
    checkouts: int
    peak: int
    waits: int
    timeouts: int
    async_pools: int

    @classmethod
    def of(cls, snapshots: Sequence[PublishedStats], limit: int, now: float) -> _Workers:
        pools = [pool for snap in snapshots for pool in snap["pools"]]
        peaks = [pool["created"] for pool in pools] or [snap["peak_in_use"] for snap in snapshots]
        limits = [pool["max_connections"] for pool in pools]
        started = [snap["started_at"] for snap in snapshots if snap["started_at"]]
        threads = [snap["threads"] for snap in snapshots if snap["threads"]]
        return cls(
            count=len(snapshots),
            limit=max(limits, default=limit),
            threads=max(threads, default=None),
            seconds=max(0.0, now - min(started)) if started else 0.0,
            checkouts=sum(snap["checkouts"] + snap["async_checkouts"] for snap in snapshots),
            peak=max(peaks, default=0),
            waits=sum(snap["waits"] + snap["async_waits"] for snap in snapshots),
            timeouts=sum(snap["timeouts"] + snap["async_timeouts"] for snap in snapshots),
            async_pools=sum(snap["async_pools"] for snap in snapshots),
        )


@dataclass
class Verdict:
    """The advice on one pool (see :class:`PoolAdvice` for the fields)."""

    advice: str
    recommended: int | None
    reasons: list[str]
    maxclients_needed: int | None = None


def advise(
    snapshots: Sequence[PublishedStats],
    servers: Sequence[ServerClients],
    *,
    max_connections: int,
    now: float,
    thresholds: Thresholds = Thresholds(),
) -> Verdict:
    """The verdict on one pool, from the workers' ``snapshots`` and the ``servers``' clients
    (see the module's rules); no I/O.

    :param max_connections: the limit to judge when no worker says which it runs.
    :param now: the reader's ``time.time()``.
    """
    return _judge(_Workers.of(snapshots, max_connections, now), servers, thresholds)


def _judge(workers: _Workers, servers: Sequence[ServerClients], thresholds: Thresholds) -> Verdict:
    if not workers.count:
        return Verdict(TOO_LITTLE, None, ["no serving process has published stats yet: nothing to judge"])
    cap = _cap(workers, servers, thresholds)
    if workers.waits or workers.timeouts:
        return _raise(workers, cap, thresholds)
    missing = _too_little(workers, thresholds)
    if missing:
        if cap is not None and cap[0] < workers.limit:
            return _over_maxclients(workers, cap, workers.limit, thresholds, missing)
        return Verdict(TOO_LITTLE, None, missing)
    return _peak(workers, cap, thresholds)


#: The tightest server: the most each worker may hold there, its address and maxclients.
_Cap = tuple[int, str, int]


def _cap(workers: _Workers, servers: Sequence[ServerClients], thresholds: Thresholds) -> _Cap | None:
    """The most connections per worker that every server takes with its reserve left free."""
    caps = [
        (
            math.floor(server["maxclients"] * (1 - thresholds.reserve) / workers.count),
            server["address"],
            server["maxclients"],
        )
        for server in servers
        if server["maxclients"]
    ]
    return min(caps, default=None)


def _needed(workers: _Workers, limit: int, thresholds: Thresholds) -> int:
    """The ``maxclients`` that ``limit`` per worker needs, with the reserve left free."""
    return math.ceil(workers.count * limit / (1 - thresholds.reserve))


def _raise(workers: _Workers, cap: _Cap | None, thresholds: Thresholds) -> Verdict:
    limit = workers.limit
    seen = (
        f"peak {workers.peak} of {limit}, {workers.waits} wait(s) and {workers.timeouts} timeout(s) "
        f"in {workers.checkouts} checkouts"
    )
    if workers.threads is not None and workers.threads > limit:
        want = workers.threads
        why = f"{seen}: raise to {want}, the most threads alive in one worker (each may hold a connection)"
    else:
        want = max(limit + 1, math.ceil(limit * 1.5))
        why = f"{seen}, with no more threads than connections: some hold more than one; raise by half, to {want}"
    if cap is None or want <= cap[0]:
        return Verdict(RAISE, want, [why])
    most, address, maxclients = cap
    needed = _needed(workers, want, thresholds)
    bound = (
        f"{_workers(workers.count)} x {want} = {workers.count * want} would leave less than "
        f"{thresholds.reserve:.0%} of maxclients {maxclients} free on {address}"
    )
    if most > limit:
        return Verdict(RAISE, most, [why, f"{bound}: raise to {most} only, or raise maxclients to {needed}"], needed)
    return Verdict(RAISE, want, [why, f"{bound}: raise maxclients to {needed} first"], needed)


def _too_little(workers: _Workers, thresholds: Thresholds) -> list[str]:
    """Why what was watched is not enough to lower the limit; empty when it is."""
    missing = []
    if workers.seconds < thresholds.min_window:
        missing.append(
            f"watched for {_duration(workers.seconds)}, less than {_duration(thresholds.min_window)}: "
            "too short to know the peak"
        )
    if workers.checkouts < thresholds.min_checkouts:
        missing.append(
            f"{workers.checkouts} checkouts, fewer than {thresholds.min_checkouts}: too few to know the peak"
        )
    return missing


def _peak(workers: _Workers, cap: _Cap | None, thresholds: Thresholds) -> Verdict:
    limit, peak = workers.limit, workers.peak
    seen = (
        f"peak {peak} of {limit} over {_duration(workers.seconds)} ({_workers(workers.count)}, "
        f"{workers.checkouts} checkouts), no waits"
    )
    if workers.async_pools:
        want = limit
        reason = f"{seen}; the event loops' own pools count no peak: keep {limit}"
    else:
        want = min(limit, max(peak + 1, math.ceil(peak * 1.25)))
        reason = (
            f"{seen}: {want} would do (the peak and a quarter, at least one more)"
            if want < limit
            else f"{seen}: {limit} is about right, keep it"
        )
    if cap is not None and cap[0] < want:
        return _over_maxclients(workers, cap, want, thresholds, [reason])
    return Verdict(LOWER if want < limit else KEEP, want, [reason])


def _over_maxclients(workers: _Workers, cap: _Cap, want: int, thresholds: Thresholds, reasons: list[str]) -> Verdict:
    """``want`` per worker leaves too little of a server's ``maxclients`` free: lower to the cap."""
    most, address, maxclients = cap
    limit, count = workers.limit, workers.count
    needed = _needed(workers, want, thresholds)
    reason = (
        f"{_workers(count)} x {limit} = {count * limit} of maxclients {maxclients} on {address} "
        f"leaves {max(0, maxclients - count * limit)} for deploys and other clients, less than "
        f"{thresholds.reserve:.0%}: lower to {most} or raise maxclients to {needed}"
    )
    return Verdict(LOWER, most, [*reasons, reason], needed)


def _workers(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def _duration(seconds: float) -> str:
    """``seconds`` as people say it: ``45 s``, ``12 min``, ``2 h 5 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def server_clients(infos: Mapping[str, Mapping[str, Any]]) -> list[ServerClients]:
    """Each server's ``INFO clients`` (by address), as the advisor reads it."""

    def count(info: Mapping[str, Any], name: str) -> int | None:
        value = info.get(name)
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

    return [
        ServerClients(
            address=address,
            maxclients=count(info, "maxclients"),
            connected_clients=count(info, "connected_clients"),
        )
        for address, info in sorted(infos.items())
    ]


def build_advice(client: AnyClient, pools: PoolSet, thresholds: Thresholds = Thresholds()) -> PoolAdvice:
    """Read every worker's snapshot of ``pools`` and every server's ``INFO clients``
    through ``client`` (a topology's reader), and :func:`advise`.

    A command the server refuses (an ACL without ``SCAN`` or ``INFO``) leaves its part out
    and says why in ``snapshots_error`` or ``server_error``.

    :raises RedisError: Redis is unreachable, or refused the connection itself.
    """
    settings, topology = pools.settings, pools.topology
    topology.connect(client)
    snapshots: list[PublishedStats] = []
    servers: list[ServerClients] = []
    snapshots_error = server_error = None
    try:
        snapshots, _ = read_snapshots(client, settings)
    except ResponseError as exc:
        snapshots_error = f"{type(exc).__name__}: {exc}"
    try:
        servers = server_clients(topology.server_info(client, "clients"))
    except ResponseError as exc:
        server_error = f"{type(exc).__name__}: {exc}"
    advice = pool_advice(settings, snapshots, servers, now=time.time(), thresholds=thresholds)
    return {**advice, "snapshots_error": snapshots_error, "server_error": server_error}


def pool_advice(
    settings: Settings,
    snapshots: Sequence[PublishedStats],
    servers: Sequence[ServerClients],
    *,
    now: float,
    thresholds: Thresholds = Thresholds(),
) -> PoolAdvice:
    """The figures of ``snapshots`` and ``servers`` for the pool of ``settings``, and the
    verdict of :func:`advise` on them; no I/O."""
    workers = _Workers.of(snapshots, settings.max_connections, now)
    verdict = _judge(workers, servers, thresholds)
    return PoolAdvice(
        prefix=settings.prefix,
        url=settings.redacted_url,
        client_name=settings.client_name,
        setting=settings.key("MAX_CONNECTIONS"),
        max_connections=workers.limit,
        workers=workers.count,
        threads=workers.threads,
        observed_seconds=round(workers.seconds, 1),
        checkouts=workers.checkouts,
        peak_in_use=workers.peak,
        waits=workers.waits,
        timeouts=workers.timeouts,
        async_pools=workers.async_pools,
        servers=list(servers),
        advice=verdict.advice,
        recommended=verdict.recommended,
        maxclients_needed=verdict.maxclients_needed,
        reasons=verdict.reasons,
        snapshots_error=None,
        server_error=None,
    )


def format_advice(advice: PoolAdvice) -> list[str]:
    """``advice`` as ``flask redis-stats --advise`` prints it."""
    key = advice["setting"]
    threads = "-" if advice["threads"] is None else advice["threads"]
    lines = [
        f"{advice['prefix']}  {advice['url']}  client name {advice['client_name']!r}",
        f"  {key}={advice['max_connections']}  workers={advice['workers']}  threads={threads}  "
        f"watched={_duration(advice['observed_seconds'])}  checkouts={advice['checkouts']}",
        f"  peak_in_use={advice['peak_in_use']}  waits={advice['waits']}  timeouts={advice['timeouts']}",
    ]
    for server in advice["servers"]:
        maxclients = "-" if server["maxclients"] is None else server["maxclients"]
        connected = "-" if server["connected_clients"] is None else server["connected_clients"]
        lines.append(f"  server {server['address']}  maxclients={maxclients}  connected_clients={connected}")
    for part, error in (("snapshots", advice["snapshots_error"]), ("INFO clients", advice["server_error"])):
        if error:
            lines.append(f"  {part} unavailable: {error}")
    verdict, recommended = advice["advice"], advice["recommended"]
    if verdict == TOO_LITTLE or recommended is None:
        lines.append("  advice: too little seen to advise")
    elif verdict == KEEP:
        lines.append(f"  advice: keep {key}={recommended}")
    else:
        lines.append(f"  advice: {verdict} {key} to {recommended}")
    lines += [f"    {reason}" for reason in advice["reasons"]]
    return lines
