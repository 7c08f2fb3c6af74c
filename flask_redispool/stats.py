"""Pool counters and the JSON-ready snapshots built from them.

Counting sits on every checkout, so it is one uncontended lock section; everything
else (in use, idle) is read from redis-py's public
:meth:`~redis.ConnectionPool.get_connection_count` only when a snapshot is asked for.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

__all__ = ["PoolCounters", "PoolStats", "ProcessConnections", "group_client_list", "split_client_name"]


class PoolStats(TypedDict):
    """What :meth:`RedisPool.stats() <flask_redispool.RedisPool.stats>` returns."""

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


class ProcessConnections(TypedDict):
    """One process's connections as the server sees them (``CLIENT LIST``)."""

    host: str
    pid: int
    connections: int
    idle_max: int
    idle_min: int
    this_process: bool


class PoolCounters:
    """Counters of one pool in one process; a forked child starts a fresh set.

    The pool updates them under :attr:`lock`: one short section per checkout, and one
    per connection made, wait or timeout.
    """

    __slots__ = ("checkouts", "created", "lock", "timeouts", "waits")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checkouts = 0
        self.created = 0
        self.waits = 0
        self.timeouts = 0

    def waited(self) -> None:
        with self.lock:
            self.waits += 1

    def timed_out(self) -> None:
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

    This is how the CLI, in its own process, sees what the serving workers hold.
    """
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for entry in clients:
        parsed = split_client_name(str(entry.get("name", "")))
        if parsed is None or parsed[0] != client_name:
            continue
        groups[(parsed[1], parsed[2])].append(int(entry.get("idle", 0)))
    here = (socket.gethostname(), os.getpid())
    return [
        ProcessConnections(
            host=host,
            pid=pid,
            connections=len(idles),
            idle_max=max(idles),
            idle_min=min(idles),
            this_process=(host, pid) == here,
        )
        for (host, pid), idles in sorted(groups.items())
    ]
