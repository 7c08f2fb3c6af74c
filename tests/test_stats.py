"""Grouping the server's CLIENT LIST by process."""

from __future__ import annotations

import os

import pytest

from flask_redispool.pool import HOST
from flask_redispool.stats import group_client_list, split_client_name


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
        {"name": "shop:web-1:10", "idle": "3"},
        {"name": "shop:web-1:10", "idle": "0"},
        {"name": "shop:web-2:10", "idle": "7"},
        {"name": f"shop:{HOST}:{os.getpid()}", "idle": "0"},
        {"name": "shop.cache_redis:web-1:10", "idle": "1"},
        {"name": "other:web-1:10", "idle": "1"},
        {"name": "", "idle": "1"},
        {"idle": "1"},
    ]
    assert group_client_list(clients, "shop") == [
        {"host": HOST, "pid": os.getpid(), "connections": 1, "idle_max": 0, "idle_min": 0, "this_process": True},
        {"host": "web-1", "pid": 10, "connections": 2, "idle_max": 3, "idle_min": 0, "this_process": False},
        {"host": "web-2", "pid": 10, "connections": 1, "idle_max": 7, "idle_min": 7, "this_process": False},
    ]
