"""A bounded HTTP load generator for loopback, and a gunicorn runner.

Used by ``bench/bench_load.py`` and by the test suite's small load test. Traffic goes
only to 127.0.0.1; every run stops after ``total`` requests or ``deadline`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from flask_redispool._stats import group_client_list
from flask_redispool.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LoadResult:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.errors.update(other.errors)
        self.latencies += other.latencies
        self.seconds += other.seconds

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(p) - 1] if len(self.latencies) > 1 else 0.0


async def _client(
    port: int, path: str, keepalive: bool, budget: list[int], deadline: float, result: LoadResult
) -> None:
    close = "" if keepalive else "Connection: close\r\n"
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n".encode()
    reader = writer = None
    try:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if status != 200:
                    result.errors[f"HTTP {status}"] += 1
                if b"connection: close" in head.lower():
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, StopIteration) as exc:
                result.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
    finally:  # also when drive() gives up on a request that gets no answer
        if writer is not None:
            writer.close()


#: How long after its deadline a run waits for the answers to requests already sent.
ANSWER_GRACE = 30.0


def drive(
    port: int, path: str, *, concurrency: int, total: int, deadline: float = 120.0, keepalive: bool = True
) -> LoadResult:
    """Send ``total`` GETs from ``concurrency`` clients to 127.0.0.1:``port``.

    With ``keepalive`` each client keeps its connection, which stays with one worker;
    without, each request connects anew and the kernel spreads them over the workers.
    No request starts after ``deadline`` seconds; one still unanswered :data:`ANSWER_GRACE`
    seconds later is given up and counted in ``errors`` as ``"no answer"``.
    """
    result = LoadResult()
    budget = [total]

    async def main() -> None:
        stop = time.monotonic() + deadline
        clients = [
            asyncio.ensure_future(_client(port, path, keepalive, budget, stop, result)) for _ in range(concurrency)
        ]
        _, unanswered = await asyncio.wait(clients, timeout=deadline + ANSWER_GRACE)
        for client in unanswered:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if unanswered:
            result.errors["no answer"] += len(unanswered)

    started = time.perf_counter()
    asyncio.run(main())
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def gunicorn(
    app: str, *, redis_url: str, workers: int, threads: int, pythonpath: str = ".", env: dict[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    """Serve ``app`` with gunicorn (gthread) on a free loopback port; yields (port, master pid).

    ``env`` adds environment variables, e.g. ``{"FLASK_REDIS_STATS_INTERVAL": "0.5"}``.

    Stopped by its pid (SIGTERM, then SIGKILL) when the block ends.
    """
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
               "--worker-class", "gthread", "--bind", f"127.0.0.1:{port}", "--pythonpath", pythonpath,
               "--log-level", "warning", app]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {}), "REDIS_URL": redis_url})
    try:
        _wait_http(port, process)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_pids(master: int) -> set[int]:
    """The worker processes of the gunicorn ``master`` (Linux: its children in /proc)."""
    with open(f"/proc/{master}/task/{master}/children") as children:
        return {int(pid) for pid in children.read().split()}


def _wait_http(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until gunicorn answers HTTP. The probe asks for a page no app has: any answer,
    a 404 included, means a worker serves, and no probe (nor its retry after a slow
    answer) runs a view that counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page-readiness-probe", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"gunicorn on port {port} did not answer in {timeout} s")


class ConnectionSampler:
    """Samples the server's CLIENT LIST while a load runs: the most connections seen at
    any one time in total, without a name, and per process (by our connection names)."""

    def __init__(self, redis_url: str, client_name: str | None, interval: float = 0.05) -> None:
        self.redis = Redis.from_url(redis_url, socket_timeout=10)
        self.client_name = client_name
        self.interval = interval
        self.most_total = 0
        self.most_unnamed = 0
        self.most_per_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Take one sample now."""
        own_id = str(self.redis.client_id())
        clients = [c for c in self.redis.client_list() if c.get("id") != own_id]
        self.most_total = max(self.most_total, len(clients))
        self.most_unnamed = max(self.most_unnamed, sum(1 for c in clients if not c.get("name")))
        if self.client_name:
            for proc in group_client_list(clients, self.client_name):
                self.most_per_process[proc["pid"]] = max(self.most_per_process.get(proc["pid"], 0), proc["connections"])

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)  # its client's socket timeout bounds a sample
        self.sample()  # one at the end, however few a busy machine let the thread take
        self.redis.close()
