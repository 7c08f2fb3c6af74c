"""Functions that RQ jobs in the tests run (a worker imports them by name)."""

from __future__ import annotations


def add(a: int, b: int) -> int:
    return a + b
