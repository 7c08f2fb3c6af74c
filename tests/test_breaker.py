"""The circuit breaker, against real servers: 16 threads writing while the server hangs
(SIGSTOP) or dies (SIGKILL) fail at once once it opens, are served again within one
cooldown of the server's return, and lose or repeat no write; a blip does not open it;
command errors do not count; one key turns it off; every report shows its state."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from flask_redispool import CircuitOpenError, ConfigError, RedisPool, _telemetry
from flask_redispool._breaker import Breakers
from flask_redispool._config import load_settings
from flask_redispool._errors import REDIS_ERRORS
from flask_redispool._state import app_states
from flask_redispool.prometheus import RedisPoolCollector
from flask_redispool.testing import RedisClusterServers, RedisServer

from .conftest import PASSWORD, wait_until
from .test_docs import snippets

THREADS = 16
MEASURED = 5.0  # seconds of requests against the server that is down, once the breaker is open
#: The figures of the issue: a failing request once open, and the first request served
#: after the server returns (within one cooldown; plus slack for a busy machine).
P99_LIMIT = 0.010
COOLDOWN = 0.5
SLACK = 1.0
#: Errors a request may meet while the server goes down: its command's own before the
#: breaker opens (a write in flight says it may have run), CircuitOpenError after.
# A read that keeps the server busy 1.2 s: past one socket timeout, and its retry's.
SLOW_SCRIPT = (
    "local t = redis.call('TIME') while true do local n = redis.call('TIME') "
    "if (n[1] - t[1]) * 1000000 + n[2] - t[2] > 1200000 then return 1 end end"
)
OUTAGE_ERRORS = {
    "CircuitOpenError",
    "ConnectionError",
    "TimeoutError",
    "MayHaveRunConnectionError",
    "MayHaveRunTimeoutError",
}


@dataclass
class Load:
    """16 threads writing ``RPUSH log <thread>:<n>`` through the pool, each outcome kept."""

    app: Flask
    redis_pool: RedisPool
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (started, seconds, error type or None), per request.
    outcomes: list[tuple[float, float, str | None]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(THREADS)]
        for thread in self.threads:
            thread.start()

    def _write(self, number: int) -> None:
        deadline = time.monotonic() + 60  # bounded even if the test body fails
        with self.app.app_context():
            client = self.redis_pool.client
            sent = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                sent += 1
                ident = f"{number}:{sent}"
                started = time.monotonic()
                try:
                    client.rpush("log", ident)
                    error = None
                except (ConnectionError, TimeoutError) as exc:
                    error = type(exc).__name__
                with self.lock:
                    self.outcomes.append((started, time.monotonic() - started, error))
                    if error is None:
                        self.acknowledged.append(ident)

    def served_since(self, moment: float) -> list[float]:
        """When each request begun at or after ``moment`` was answered."""
        with self.lock:
            return [start + seconds for start, seconds, error in self.outcomes if start >= moment and error is None]

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads)


@dataclass
class Measured:
    p99_ms: float
    refused: int
    served_after_s: float
    errors: set[str]
    lost: int
    repeated: int
    opened: int


def _measure(
    make_app: Callable[..., Flask], server: RedisServer, down: Callable[[], object], up: Callable[[], object]
) -> Measured:
    """Load the server, take it ``down``, measure :data:`MEASURED` seconds once the breaker
    is open, bring it ``up``, and wait until requests are served again."""
    app = make_app(REDIS_URL=server.url, REDIS_MAX_CONNECTIONS=THREADS, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    load = Load(app, redis_pool)
    load.start()
    try:
        wait_until(lambda: len(load.served_since(0)) >= 200, 30, "load before the outage")
        down()
        try:
            wait_until(lambda: redis_pool.stats(app)["circuit_open"], 30, "the breaker to open")
            opened = time.monotonic()
            health = redis_pool.health(app)
            assert not health["ok"]
            assert health["circuit_breaker"] in {"open", "half-open"}
            assert health["error"] is not None
            assert health["error"].startswith("CircuitOpenError: Redis at REDIS_URL")
            time.sleep(MEASURED)  # the measurement's window, not a synchronisation
        finally:
            up()
        back = time.monotonic()
        served = wait_until(lambda: load.served_since(back), 30, "requests served after the server's return")
    finally:
        load.end()
    with load.lock:
        refused = sorted(s for start, s, e in load.outcomes if opened <= start < back and e == "CircuitOpenError")
        errors = {e for _, _, e in load.outcomes if e is not None}
    written = [item.decode() if isinstance(item, bytes) else item for item in server.client().lrange("log", 0, -1)]
    stats = redis_pool.stats(app)
    assert stats["circuit_breaker"] == "closed"
    return Measured(
        p99_ms=refused[int(len(refused) * 0.99) - 1] * 1000,
        refused=len(refused),
        served_after_s=min(served) - back,
        errors=errors,
        lost=len(set(load.acknowledged) - set(written)),
        repeated=len(written) - len(set(written)),
        opened=stats["circuit_opened"],
    )


def _check(measured: Measured, what: str) -> None:
    print(
        f"{what}: {measured.refused} requests refused at once, p99 {measured.p99_ms:.3f} ms; first served "
        f"{measured.served_after_s:.3f} s after the server's return; {measured.lost} writes lost, "
        f"{measured.repeated} repeated"
    )
    assert measured.refused > 1000
    assert measured.p99_ms < P99_LIMIT * 1000
    assert measured.served_after_s < COOLDOWN + SLACK
    assert measured.errors <= OUTAGE_ERRORS
    assert (measured.lost, measured.repeated) == (0, 0)
    assert measured.opened == 1


def test_a_hung_server_fails_requests_at_once_and_serves_them_again_when_it_resumes(
    make_app: Callable[..., Flask], start_server: Callable[..., RedisServer]
) -> None:
    server = start_server()
    pid = server.pid
    assert pid is not None
    stopped = False

    def down() -> None:
        nonlocal stopped
        os.kill(pid, signal.SIGSTOP)
        stopped = True

    def up() -> None:
        if stopped:
            os.kill(pid, signal.SIGCONT)

    _check(_measure(make_app, server, down, up), "SIGSTOP")


def test_a_killed_server_fails_requests_at_once_and_serves_them_again_when_it_restarts(
    make_app: Callable[..., Flask], start_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    # Every acknowledged write on disk before its reply, in a directory that outlives the
    # process: a write lost is one we lost, not one the crash took.
    server = start_server("--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always")
    _check(_measure(make_app, server, server.kill, server.start), "SIGKILL")


@pytest.fixture
def lone_app(make_app: Callable[..., Flask], own_server: RedisServer) -> tuple[Flask, RedisPool]:
    app = make_app(REDIS_URL=own_server.url, REDIS_STATS_INTERVAL=0)
    return app, RedisPool(app)


def test_a_blip_does_not_open_it(lone_app: tuple[Flask, RedisPool], own_server: RedisServer) -> None:
    """One refused connect, one slow reply (each retried, as RETRIES=1 allows): fewer
    failures than the threshold, and the next reply ends the streak."""
    app, redis_pool = lone_app
    with app.app_context():
        client = redis_pool.client
        client.ping()
        own_server.kill()
        with pytest.raises(ConnectionError) as refused:
            client.get("key")
        assert not isinstance(refused.value, CircuitOpenError)
        after_refusal = redis_pool.stats()["circuit_failures"]
        own_server.start()
        assert client.get("key") is None
        assert redis_pool.stats()["circuit_failures"] == 0
        with pytest.raises(TimeoutError):  # past the socket timeout; its retry's reply comes late too
            client.eval(SLOW_SCRIPT, 0)
        after_slow_reply = redis_pool.stats()["circuit_failures"]
        Redis(port=own_server.port, socket_timeout=10).ping()  # the script has ended
        assert client.get("key") is None
        stats = redis_pool.stats()
    print(f"failures in a row: {after_refusal} after a refused connect, {after_slow_reply} after a slow reply")
    assert 1 <= after_refusal < 5
    assert 1 <= after_slow_reply < 5
    assert (stats["circuit_breaker"], stats["circuit_opened"], stats["circuit_failures"]) == ("closed", 0, 0)


def test_command_errors_and_refused_credentials_do_not_count(
    make_app: Callable[..., Flask], redis_url: str, auth_server: RedisServer
) -> None:
    app = make_app(REDIS_URL=redis_url, REDIS_STATS_INTERVAL=0)
    wrong = make_app(REDIS_URL=f"redis://:wrong-{PASSWORD}@127.0.0.1:{auth_server.port}/0", REDIS_STATS_INTERVAL=0)
    redis_pool, wrong_pool = RedisPool(app), RedisPool(wrong)
    with app.app_context():
        redis_pool.client.set("text", "x")
        for _ in range(20):
            with pytest.raises(ResponseError):
                redis_pool.client.lpush("text", "y")  # WRONGTYPE
    with wrong.app_context():
        for _ in range(20):
            with pytest.raises(AuthenticationError):
                wrong_pool.client.ping()
    for pool, on in ((redis_pool, app), (wrong_pool, wrong)):
        stats = pool.stats(on)
        assert (stats["circuit_breaker"], stats["circuit_failures"], stats["circuit_opened"]) == ("closed", 0, 0)


def _open(app: Flask, redis_pool: RedisPool, server: RedisServer) -> None:
    """Kill ``server`` and fail commands until the breaker opens (or 20 have failed)."""
    server.kill()
    with app.app_context():
        for _ in range(20):
            with pytest.raises(ConnectionError):
                redis_pool.client.get("key")


def test_open_it_refuses_at_once_naming_the_url_but_no_password_and_when_it_tries_again(
    make_app: Callable[..., Flask], own_server: RedisServer
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{own_server.port}/0"
    app = make_app(REDIS_URL=url, REDIS_STATS_INTERVAL=0, REDIS_CIRCUIT_BREAKER_COOLDOWN=30)
    redis_pool = RedisPool(app)
    _open(app, redis_pool, own_server)
    with app.app_context(), pytest.raises(CircuitOpenError) as raised:
        redis_pool.client.set("key", "value")
    message = str(raised.value)
    assert PASSWORD not in message
    assert PASSWORD not in str(redis_pool.stats(app))
    before, when, after = re.split(r"(in [0-9.]+ s)", message)
    assert before == (
        f"Redis at REDIS_URL (redis://:***@127.0.0.1:{own_server.port}/0) is out of reach: 5 connection "
        "failures in a row opened the circuit breaker, so commands fail at once instead of waiting out "
        "their timeouts. It tries the server again "
    )
    assert 28 < float(when.split()[1]) <= 30
    assert after == " (every REDIS_CIRCUIT_BREAKER_COOLDOWN=30 s); REDIS_CIRCUIT_BREAKER = False turns it off."
    assert isinstance(raised.value, redis_pool.Unavailable)
    stats = redis_pool.stats(app)
    assert (stats["circuit_breaker"], stats["circuit_open"], stats["circuit_opened"]) == ("open", 1, 1)
    assert 28 < stats["circuit_retry_in"] <= 30
    probes = [t for t in threading.enumerate() if t.name == "redispool-breaker-REDIS"]
    assert probes
    redis_pool.close(app)  # the probe's thread ends with the pool
    for probe in probes:
        probe.join(5)
        assert not probe.is_alive()


def test_async_commands_are_refused_too(make_app: Callable[..., Flask], own_server: RedisServer) -> None:
    app = make_app(REDIS_URL=own_server.url, REDIS_STATS_INTERVAL=0, REDIS_CIRCUIT_BREAKER_COOLDOWN=30)
    redis_pool = RedisPool(app)

    @app.get("/get")
    async def get() -> str:
        try:
            await redis_pool.async_client.get("key")
        except ConnectionError as exc:
            return type(exc).__name__
        return "served"

    client = app.test_client()
    assert client.get("/get").text == "served"
    own_server.kill()
    texts = [client.get("/get").text for _ in range(6)]
    assert texts[0] == "ConnectionError"
    assert texts[-1] == "CircuitOpenError"
    started = time.monotonic()
    assert client.get("/get").text == "CircuitOpenError"
    assert time.monotonic() - started < 0.5


def test_a_cluster_has_a_breaker_per_node_reported_added_up() -> None:
    """Behind ``redis+cluster://`` each node's connections share a breaker of their own;
    the reports add them up, and a refusal names its node."""
    settings = load_settings({"REDIS_URL": "redis+cluster://127.0.0.1:7000"}, "REDIS", "app")
    breakers = Breakers(settings, per_node=True)
    one, other = breakers.of("127.0.0.1:7000"), breakers.of("127.0.0.1:7001")
    assert breakers.of("127.0.0.1:7000") is one
    assert other is not one
    assert (breakers.state, breakers.figures()["circuit_open"]) == ("closed", 0)
    for _ in range(settings.circuit_breaker_failures):
        one.failed(ConnectionError("refused"))
    other.failed(ConnectionError("refused"))
    try:
        assert breakers.figures() == {
            "circuit_breaker": "open",
            "circuit_open": 1,
            "circuit_opened": 1,
            "circuit_failures": 5,
            "circuit_retry_in": one.retry_in(),
        }
        with pytest.raises(
            CircuitOpenError, match=re.escape("(redis+cluster://127.0.0.1:7000), node 127.0.0.1:7000, is")
        ):
            one.refuse()
        other.refuse()  # the other node's commands go through
        assert breakers.shared.state == "off"  # no connection of a cluster uses it
    finally:
        breakers.close()


def test_it_is_off_with_one_key(make_app: Callable[..., Flask], own_server: RedisServer) -> None:
    app = make_app(REDIS_URL=own_server.url, REDIS_STATS_INTERVAL=0, REDIS_CIRCUIT_BREAKER=False)
    redis_pool = RedisPool(app)
    _open(app, redis_pool, own_server)
    with app.app_context(), pytest.raises(ConnectionError) as raised:
        redis_pool.client.get("key")
    assert not isinstance(raised.value, CircuitOpenError)
    stats, health = redis_pool.stats(app), redis_pool.health(app)
    assert (stats["circuit_breaker"], stats["circuit_open"], stats["circuit_opened"]) == ("off", 0, 0)
    assert health["circuit_breaker"] == "off"


BOOLEAN = "a boolean (True/False, or one of 1/0, true/false, yes/no, on/off)"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("CIRCUIT_BREAKER", "maybe", f"{BOOLEAN}, got 'maybe' (str)"),
        ("CIRCUIT_BREAKER_FAILURES", 0, "an integer >= 1, got 0 (int)"),
        ("CIRCUIT_BREAKER_COOLDOWN", 0, "a number of seconds > 0 and <= 86400, got 0 (int)"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_key(make_app: Callable[..., Flask], key: str, value: object, expected: str) -> None:
    app = make_app(REDIS_URL="redis://localhost:6379/0", **{f"REDIS_{key}": value})
    with pytest.raises(ConfigError) as raised:
        RedisPool(app)
    assert str(raised.value) == f"REDIS_{key} must be {expected}"


def test_views_fall_back_on_unavailable_but_not_on_a_command_error(
    make_app: Callable[..., Flask], own_server: RedisServer
) -> None:
    app = make_app(REDIS_URL=own_server.url, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)

    @app.get("/views")
    def views() -> dict[str, Any]:
        try:
            return {"views": redis_pool.client.incr("views")}
        except redis_pool.Unavailable:
            return {"views": None}

    client = app.test_client()
    assert client.get("/views").json == {"views": 1}
    own_server.kill()
    assert [client.get("/views").json for _ in range(8)] == [{"views": None}] * 8
    assert redis_pool.stats(app)["circuit_open"] == 1
    own_server.start()
    wait_until(lambda: client.get("/views").json == {"views": 1}, 10, "the breaker to close")
    with app.app_context():
        redis_pool.client.set("views", "text")
    assert client.get("/views").status_code == 500  # a bug (WRONGTYPE) is not hidden behind a fallback


def _samples(collector: Collector) -> dict[str, float]:
    return {sample.name: sample.value for metric in collector.collect() for sample in metric.samples}


def test_prometheus_and_opentelemetry_see_it_open_and_close(
    make_app: Callable[..., Flask], own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[tuple[str, int, dict[str, Any]]] = []

    class Instrument:
        def __init__(self, name: str) -> None:
            self.name = name

        def add(self, amount: int, attributes: dict[str, Any]) -> None:
            recorded.append((self.name, amount, attributes))

    monkeypatch.setattr(_telemetry, "observed", lambda: True)
    monkeypatch.setattr(_telemetry, "_circuit_instruments", lambda: (Instrument("open"), Instrument("opened")))
    app = make_app(REDIS_URL=own_server.url, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    collector = RedisPoolCollector(app)
    assert _samples(collector)["flask_redispool_circuit_breaker_open"] == 0
    _open(app, redis_pool, own_server)
    samples = _samples(collector)
    assert samples["flask_redispool_circuit_breaker_open"] == 1
    assert samples["flask_redispool_circuit_breaker_opened_total"] == 1
    own_server.start()
    wait_until(lambda: redis_pool.stats(app)["circuit_breaker"] == "closed", 10, "the probe to close it")
    assert _samples(collector)["flask_redispool_circuit_breaker_open"] == 0
    name = f"127.0.0.1:{own_server.port}"
    attributes = {"db.system": "redis", "db.client.connection.pool.name": name}
    assert recorded == [("open", 1, attributes), ("opened", 1, attributes), ("open", -1, attributes)]


DOCS = Path(__file__).resolve().parent.parent / "docs" / "breaker.rst"


def test_the_documented_fallbacks_serve_every_request_with_redis_killed(own_server: RedisServer) -> None:
    """The page's ``/article`` view and its Flask-Limiter and Flask-Caching app, with the
    server killed: every request is served, at once once the breaker is open."""
    _, article_code, price_code = (code.replace("redis://localhost:6379/0", own_server.url) for code in snippets(DOCS))
    article: dict[str, Any] = {"__name__": "article"}
    price: dict[str, Any] = {"__name__": "price"}
    exec(compile(article_code, "breaker.rst article", "exec"), article)
    exec(compile(price_code, "breaker.rst price", "exec"), price)
    apps: list[Flask] = [article["app"], price["create_app"]()]
    try:
        article_client, price_client = (app.test_client() for app in apps)
        assert article_client.get("/article").json == {"title": "Circuit breakers", "views": 1}
        assert price_client.get("/price").json == {"price": 42}
        own_server.kill()
        articles = [article_client.get("/article") for _ in range(10)]
        prices = [price_client.get("/price") for _ in range(10)]
        assert [(r.status_code, r.json) for r in articles] == [(200, {"title": "Circuit breakers", "views": None})] * 10
        assert [(r.status_code, r.json) for r in prices] == [(200, {"price": 42})] * 10
        assert article["redis_pool"].stats(apps[0])["circuit_open"] == 1
        started = time.monotonic()
        assert article_client.get("/article").status_code == 200
        assert price_client.get("/price").status_code == 200
        assert time.monotonic() - started < 0.5  # neither waited out a timeout
    finally:
        for app in apps:
            for state in app_states(app):
                state.extension.close(app)


@pytest.fixture
def slow_cluster(redis_server: RedisServer) -> Iterator[RedisClusterServers]:
    """Three masters that fail no node over for a minute: a hung one stays hung."""
    with RedisClusterServers(redis_server.binary, replicas=0, node_timeout_ms=60_000) as cluster:
        yield cluster


def test_a_hung_cluster_node_fails_at_once_while_the_others_serve(slow_cluster: RedisClusterServers) -> None:
    """Behind ``redis+cluster://`` each node has a breaker of its own, on by default: the
    commands for a hung master's slots fail at once once its breaker opens, those for the
    other masters' are served throughout, and the hung one's are served again when it
    resumes."""
    app = Flask("cluster_breaker")
    app.config.update(REDIS_URL=slow_cluster.url, REDIS_STATS_INTERVAL=0, REDIS_SOCKET_TIMEOUT=0.5)
    redis_pool = RedisPool(app)
    hung = slow_cluster.masters()[0]
    assert hung.pid is not None
    try:
        with app.app_context():
            client = redis_pool.cluster_client
            keys = {client.get_node_from_key(f"key:{i}").port: f"key:{i}" for i in range(30)}
            on_hung, elsewhere = keys.pop(hung.port), list(keys.values())
            assert len(elsewhere) == 2
            os.kill(hung.pid, signal.SIGSTOP)
            try:
                errors = [_error_of(lambda: client.get(on_hung)) for _ in range(8)]  # five time out, then at once
                started = time.monotonic()
                refused = _error_of(lambda: client.get(on_hung))
                seconds = time.monotonic() - started
                served = [_error_of(functools.partial(client.set, key, "served")) for key in elsewhere * 10]
                figures = redis_pool.stats(app)
            finally:
                os.kill(hung.pid, signal.SIGCONT)
            # redis-py 8 raises it as it is; 7's cluster client, as "cannot be connected".
            assert refused in {"CircuitOpenError", "RedisClusterException"}, errors
            assert seconds < 0.1
            assert served == [None] * 20
            assert (figures["circuit_breaker"], figures["circuit_open"]) == ("open", 1)
            wait_until(lambda: _error_of(lambda: client.get(on_hung)) is None, 10, "the node served again")
        assert redis_pool.stats(app)["circuit_breaker"] == "closed"
    finally:
        redis_pool.close(app)


def test_a_dead_masters_breaker_closes_once_it_left_the_cluster(
    own_cluster: RedisClusterServers, caplog: pytest.LogCaptureFixture
) -> None:
    """A master killed: its breaker opens, the cluster promotes its replica, which serves its
    keys; the dead node's probe then finds it gone from the cluster and closes its breaker,
    saying so, instead of probing it for the life of the app."""
    app = Flask("cluster_breaker")
    app.config.update(REDIS_URL=own_cluster.url, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    dead = own_cluster.masters()[0]
    try:
        with app.app_context(), caplog.at_level(logging.WARNING, logger="flask_redispool"):
            client = redis_pool.cluster_client
            key = next(f"key:{i}" for i in range(100) if client.get_node_from_key(f"key:{i}").port == dead.port)
            dead.kill()

            def opened() -> bool:
                _error_of(functools.partial(client.get, key))
                return bool(redis_pool.stats(app)["circuit_open"] == 1)

            wait_until(opened, 10, "its breaker to open")
            assert redis_pool.stats(app)["circuit_opened"] == 1
            wait_until(lambda: _error_of(functools.partial(client.set, key, 1)) is None, 20, "the replica to serve it")
            wait_until(lambda: redis_pool.stats(app)["circuit_breaker"] == "closed", 10, "the breaker to close")
        left = [r.getMessage() for r in caplog.records if "left the cluster" in r.getMessage()]
        assert left == [
            f"Redis at {own_cluster.url}, node 127.0.0.1:{dead.port}, left the cluster: its circuit breaker is closed."
        ]
    finally:
        redis_pool.close(app)


def test_under_load_a_hung_master_stalls_the_other_masters_writes_only_without_it(
    slow_cluster: RedisClusterServers,
) -> None:
    """Two apps on one cluster, with their breakers on and off, 8 threads each writing keys
    spread over the slots, while one master hangs: with the breaker, the writes to the
    other masters go on at full speed; without it, every thread spends most of its time
    waiting out the hung master's timeouts."""
    apps = {}
    for name, on in (("on", True), ("off", False)):
        app = Flask(f"cluster_breaker_{name}")
        app.config.update(REDIS_URL=slow_cluster.url, REDIS_STATS_INTERVAL=0, REDIS_CIRCUIT_BREAKER=on)
        apps[name] = (app, RedisPool(app))
    hung = slow_cluster.masters()[0]
    assert hung.pid is not None
    stop, hanging = threading.Event(), threading.Event()
    served: dict[str, int] = dict.fromkeys(apps, 0)  # writes to the other masters while one hangs
    written: dict[str, int] = dict.fromkeys(apps, 0)  # any write, before
    lock = threading.Lock()

    def write(name: str, number: int) -> None:
        app, redis_pool = apps[name]
        deadline = time.monotonic() + 60  # bounded even if the test body fails
        with app.app_context():
            client = redis_pool.cluster_client
            sent = 0
            while not stop.is_set() and time.monotonic() < deadline:
                sent += 1
                key = f"{name}:{number}:{sent}"
                if _error_of(functools.partial(client.set, key, 1)) is not None:
                    continue
                with lock:
                    if not hanging.is_set():
                        written[name] += 1
                    elif client.get_node_from_key(key).port != hung.port:
                        served[name] += 1

    threads = [threading.Thread(target=write, args=(name, n)) for name in apps for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: min(written.values()) >= 50, 30, "both apps to write")
        os.kill(hung.pid, signal.SIGSTOP)
        hanging.set()
        try:
            time.sleep(MEASURED)  # the measurement's window, not a synchronisation
            hanging.clear()
        finally:
            os.kill(hung.pid, signal.SIGCONT)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for app, redis_pool in apps.values():
            redis_pool.close(app)
    assert not any(thread.is_alive() for thread in threads)
    print(f"writes to the other masters in {MEASURED:g} s of a hung one: on {served['on']}, off {served['off']}")
    assert served["on"] >= 5 * max(served["off"], 1)


def _error_of(run: Callable[[], object]) -> str | None:
    try:
        run()
    except REDIS_ERRORS as exc:
        return type(exc).__name__
    return None
