"""Grouping the server's CLIENT LIST by process, and joining it with published snapshots."""

from __future__ import annotations

import os
from typing import Any

import pytest

from flask_redispool._stats import (
    HOST,
    ProcessConnections,
    group_client_list,
    process_rows,
    split_client_name,
    totals,
)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("shop:web-1:4242", ("shop", "web-1", 4242)),
        ("shop.cache_redis:web-1.example.com:7", ("shop.cache_redis", "web-1.example.com", 7)),
        ("a:b:c:web:1", ("a:b:c", "web", 1)),
        ("shop", None),
        ("shop:web", None),
        ("shop:web:pid", None),
        (":web:1", None),
        ("", None),
    ],
)
def test_split_client_name(name: str, parsed: tuple[str, str, int] | None) -> None:
    assert split_client_name(name) == parsed


def test_group_client_list_counts_per_process_of_this_app_only() -> None:
    clients = [
        {"name": "shop:web-1:10", "idle": "3", "age": "12"},
        {"name": "shop:web-1:10", "idle": "0", "age": "40"},
        {"name": "shop:web-2:10", "idle": "7"},
        {"name": f"shop:{HOST}:{os.getpid()}", "idle": "0"},
        {"name": "shop.cache_redis:web-1:10", "idle": "1"},
        {"name": "other:web-1:10", "idle": "1"},
        {"name": "", "idle": "1"},
        {"idle": "1"},
    ]
    assert group_client_list(clients, "shop") == [
        {"host": HOST, "pid": os.getpid(), "connections": 1, "idle_max": 0, "idle_min": 0, "age_max": None,
         "this_process": True, "nodes": {}},
        {"host": "web-1", "pid": 10, "connections": 2, "idle_max": 3, "idle_min": 0, "age_max": 40,
         "this_process": False, "nodes": {}},
        {"host": "web-2", "pid": 10, "connections": 1, "idle_max": 7, "idle_min": 7, "age_max": None,
         "this_process": False, "nodes": {}},
    ]  # fmt: skip


def test_a_cluster_process_is_suspect_when_one_node_holds_more_than_its_pool() -> None:
    listed = [{"name": "shop:web:1", "node": node} for node in ("a:1", "a:1", "a:1", "b:2")]
    (server,) = group_client_list(listed, "shop")
    assert server["nodes"] == {"a:1": 3, "b:2": 1}
    pools = [{"address": address, "max_connections": 2} for address in ("a:1", "b:2", "c:3")]
    snapshot = {**_snapshot(1, in_use=0, age=0.1, limit=6), "pools": pools}
    (row,) = process_rows([snapshot], [server], interval=1.0, fresh_intervals=2, now=NOW)
    # 4 connections are within the process's 6 in all, but 3 are on a node allowed 2.
    assert row["suspect"] == "3 connections on node a:1, more than its pool's limit of 2"


def _snapshot(
    pid: int, *, in_use: int, age: float, interval: float = 1.0, limit: int = 10, loops: int = 0
) -> dict[str, Any]:
    counters = {"idle": 1, "peak_in_use": in_use + 1, "checkouts": 7, "waits": 2, "timeouts": 1}
    return {
        **counters, "host": "web", "pid": pid, "in_use": in_use, "max_connections": limit,
        "async_pools": loops, "async_in_use": loops, "published_at": NOW - age, "interval": interval,
    }  # fmt: skip


def _server(pid: int, connections: int, age: int | None = None) -> ProcessConnections:
    return ProcessConnections(
        host="web", pid=pid, connections=connections, idle_max=0, idle_min=0, age_max=age, this_process=False, nodes={}
    )


NOW = 1_000_000.0
MORE_THAN = "server connections, more than its pools' limit of"


@pytest.mark.parametrize(
    ("snapshot", "connections", "interval", "suspect"),
    [
        (_snapshot(1, in_use=1, age=0.5), 2, 1.0, None),
        (_snapshot(1, in_use=1, age=1.9, interval=1.0), 2, 1.0, None),  # fresh for 2 intervals
        (
            _snapshot(1, in_use=1, age=2.5, interval=1.0),
            2,
            1.0,
            "holds 2 connection(s); its last snapshot is 2.5 s old",
        ),
        (_snapshot(1, in_use=1, age=2.5, interval=5.0), 2, 1.0, None),  # freshness by the publisher's interval
        (_snapshot(1, in_use=3, age=0.1, limit=3), 4, 1.0, f"4 {MORE_THAN} 3"),
        (_snapshot(1, in_use=3, age=0.1, limit=3, loops=1), 6, 1.0, None),  # each loop's pool may hold 3 more
        (
            _snapshot(1, in_use=3, age=0.1, limit=3, loops=1),
            7,
            1.0,
            "7 server connections, more than its pools' limit of 6",
        ),
        (None, 3, 1.0, "holds 3 connection(s) but publishes no snapshot"),
        (None, 3, 0.0, None),  # publishing is off here: no snapshot is expected
        (_snapshot(1, in_use=0, age=9.0), 0, 1.0, None),  # an old snapshot, no connections: gone soon
    ],
)
def test_leak_suspects(snapshot: dict[str, Any] | None, connections: int, interval: float, suspect: str | None) -> None:
    server = [_server(1, connections)] if connections else []
    (row,) = process_rows([snapshot] if snapshot else [], server, interval=interval, fresh_intervals=2, now=NOW)
    assert (row["pid"], row["server_connections"], row["suspect"]) == (1, connections, suspect)


@pytest.mark.parametrize(
    ("age", "suspect"),
    [
        (0, None),  # a new process: its first snapshot is due one interval after its first connection
        (1, None),  # within the two intervals a snapshot stays fresh
        (2, "holds 3 connection(s) but publishes no snapshot"),
        (None, "holds 3 connection(s) but publishes no snapshot"),  # the server did not say
    ],
)
def test_a_process_without_a_snapshot_is_suspect_once_its_oldest_connection_is_two_intervals_old(
    age: int | None, suspect: str | None
) -> None:
    (row,) = process_rows([], [_server(1, 3, age)], interval=1.0, fresh_intervals=2, now=NOW)
    assert row["suspect"] == suspect
    (over,) = process_rows([_snapshot(1, in_use=3, age=9.0, limit=2)], [_server(1, 3, 0)], interval=1.0,
                           fresh_intervals=2, now=NOW)  # fmt: skip
    assert over["suspect"] == f"3 {MORE_THAN} 2"  # young connections, but more than the pool allows


def test_rows_join_snapshots_and_server_by_process_and_totals_add_up() -> None:
    snapshots = [_snapshot(2, in_use=1, age=0.25), _snapshot(1, in_use=0, age=0.5)]
    rows = process_rows(snapshots, [_server(1, 1), _server(3, 2)], interval=1.0, fresh_intervals=2, now=NOW)
    assert [(r["pid"], r["in_use"], r["snapshot_age"], r["server_connections"]) for r in rows] == [
        (1, 0, 0.5, 1),
        (2, 1, 0.2, 0),  # published, but holds nothing the server sees
        (3, None, None, 2),
    ]
    assert totals(rows, server_seen=True) == {
        "processes": 3, "in_use": 1, "idle": 2, "checkouts": 14, "waits": 4, "timeouts": 2, "async_in_use": 0,
        "async_checkouts": 0, "async_waits": 0, "async_timeouts": 0, "circuit_open": 0, "circuit_opened": 0,
        "cache_hits": 0, "cache_misses": 0, "cache_invalidations": 0, "cache_evictions": 0, "cache_entries": 0,
        "server_connections": 3, "suspects": 1,
    }  # fmt: skip


def test_without_client_list_the_server_columns_are_unknown() -> None:
    (row,) = process_rows([_snapshot(1, in_use=0, age=0.1)], None, interval=1.0, fresh_intervals=2, now=NOW)
    assert (row["server_connections"], row["suspect"]) == (None, None)
    assert totals([row], server_seen=False)["server_connections"] is None


def test_the_figures_table_and_the_typed_dicts_name_the_same_fields() -> None:
    """FIGURES is where a figure is declared; the TypedDicts repeat the names for type
    checkers, and this keeps the two in step."""
    from typing import get_type_hints

    from flask_redispool._stats import FIGURES, ROW_FIGURES, PoolStats, ProcessRow, Totals

    names = {figure.name for figure in FIGURES}
    assert names <= set(get_type_hints(PoolStats))
    row_extra = {"host", "pid", "snapshot_age", "server_connections", "this_process", "suspect", "pools"}
    assert set(get_type_hints(ProcessRow)) == {figure.name for figure in ROW_FIGURES} | row_extra
    totals_extra = {"processes", "server_connections", "suspects"}
    assert set(get_type_hints(Totals)) == {figure.name for figure in FIGURES if figure.total} | totals_extra
    assert len(names) == len(FIGURES)


def test_checkouts_are_counted_exactly_without_a_lock() -> None:
    """The checkout count is an itertools.count read back from its repr ("count(N)"):
    this pins that repr, and that concurrent checkouts lose nothing."""
    from flask_redispool._stats import PoolCounters

    from .conftest import run_in_threads

    counters = PoolCounters()
    assert counters.checkouts == 0

    def count() -> None:
        for _ in range(10_000):
            counters.checkout()

    run_in_threads(count, 4)
    assert counters.checkouts == 40_000
