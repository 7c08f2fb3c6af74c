"""Example app for flask-redispool: a hit counter and a live dashboard of the pools.

Run it with ``make demo`` (starts an embedded redis-server when ``REDIS_URL`` is
unset), ``flask --app example_app run``, or ``gunicorn 'example_app:create_app()'``.
Settings come from ``REDIS_URL`` and ``FLASK_REDIS_*`` environment variables, e.g.
``FLASK_REDIS_MAX_CONNECTIONS=20``.

The dashboard at ``/`` charts every worker process's pool from the snapshots the
workers publish (``REDIS_STATS_INTERVAL``, 1 s here), and has buttons that start a
burst of work in the worker that receives the click, so you can watch a pool fill up,
make requests wait, and drain.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from flask import Blueprint, Flask, abort, current_app, render_template, request
from redis.exceptions import RedisError

from flask_redispool import Health, PoolReport, PoolStats, RedisPool

#: Where ``make demo`` starts its redis-server, and so where the app looks by default.
DEMO_REDIS_PORT = int(os.environ.get("DEMO_REDIS_PORT", "6399"))

redis_pool = RedisPool()
bp = Blueprint("example", __name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory: ``flask --app example_app`` and gunicorn both call it."""
    app = Flask(__name__)
    app.config["REDIS_URL"] = os.environ.get("REDIS_URL", f"redis://127.0.0.1:{DEMO_REDIS_PORT}/0")
    app.config["REDIS_STATS_INTERVAL"] = 1.0  # the dashboard's resolution
    app.config.from_prefixed_env()
    app.config.update(config or {})
    redis_pool.init_app(app)
    app.extensions[BURSTS_KEY] = Bursts()
    app.register_blueprint(bp)
    return app


@bp.get("/")
def index() -> str:
    hits = redis_pool.client.incr("example:hits")
    return render_template("index.html", hits=hits, stats=redis_pool.stats(), bursts=BURSTS)


@bp.get("/hits")
def hits() -> dict[str, int]:
    return {"hits": redis_pool.client.incr("example:hits"), "pid": os.getpid()}


@bp.get("/stats")
def stats() -> PoolStats:
    return redis_pool.stats()


@bp.get("/report")
def report() -> PoolReport:
    """Every worker's pool, as ``flask redis-stats --json`` shows it: the dashboard's data."""
    return redis_pool.report()


def _quick() -> None:
    redis_pool.client.incr("example:burst")


def _slow() -> None:
    with redis_pool.blocking(1) as client:  # a command the server takes 200 ms to answer
        client.blpop(["example:never"], timeout=0.2)


#: kind: (units of work, work, label). Run by more threads than the pool has
#: connections (BURST_THREADS), so a slow burst makes requests wait.
BURSTS: Final[dict[str, tuple[int, Callable[[], None], str]]] = {
    "quick": (400, _quick, "400 quick INCRs"),
    "slow": (80, _slow, "80 slow 200 ms BLPOPs"),
}
BURST_THREADS: Final = 16
BURSTS_KEY: Final = "example_app.bursts"


class Bursts:
    """The bursts of work one app runs in this process: one at a time, bounded, and
    stoppable. :func:`stop_bursts` stops and joins them, so that nothing the app
    started outlives it (a test's server, or the app itself)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self, app: Flask, work: Callable[[], None], units: int) -> bool:
        """Start ``units`` of ``work`` over BURST_THREADS threads; ``False`` if a burst runs."""
        with self._lock:
            if any(thread.is_alive() for thread in self._threads):
                return False
            self._stop.clear()
            shares = [units // BURST_THREADS + (i < units % BURST_THREADS) for i in range(BURST_THREADS)]
            self._threads = [
                threading.Thread(target=self._work, args=(app, work, share), daemon=True) for share in shares
            ]
            for thread in self._threads:
                thread.start()
        return True

    def _work(self, app: Flask, work: Callable[[], None], times: int) -> None:
        for _ in range(times):
            if self._stop.is_set():
                return
            # One context per unit, as one request each. A PoolExhaustedError shows up as
            # a timeout in the stats.
            with app.app_context(), contextlib.suppress(RedisError):
                work()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the running burst after its units in flight, and wait for its threads."""
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def stop_bursts(app: Flask) -> None:
    """Stop and join the app's bursts (tests call it before their server goes away)."""
    bursts: Bursts | None = app.extensions.get(BURSTS_KEY)
    if bursts is not None:
        bursts.stop()


@bp.post("/burst")
def burst() -> tuple[dict[str, Any], int]:
    """Start a bounded burst of work in this worker, as if requests arrived at once."""
    kind = request.args.get("kind", "")
    if kind not in BURSTS:
        abort(400, f"kind must be one of {', '.join(BURSTS)}")
    units, work, _label = BURSTS[kind]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    started = app.extensions[BURSTS_KEY].start(app, work, units)
    return {"kind": kind, "pid": os.getpid(), "started": started}, 202 if started else 409


@bp.get("/healthz")
def healthz() -> tuple[Health, int]:
    health = redis_pool.health()
    return health, 200 if health["ok"] else 503
