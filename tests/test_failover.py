"""Following a Sentinel service's failovers (:mod:`flask_redispool._sentinel_watch`),
against real servers: a master, two replicas and three sentinels (``sentinel_service``,
down-after 1,000 ms), one listener per process, and a ``SENTINEL FAILOVER`` under writes
from our clients and from raw redis-py in the same run.

The failover test runs last in this module: it moves the master.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

from flask_redispool import RedisPool, WrongRoleError
from flask_redispool._sentinel_watch import ABORTED, PROMOTING, SWITCHED, SentinelWatch, _watch_of
from flask_redispool.testing import RedisServer

from .conftest import SentinelService, calls, our_connections, wait_until

#: The name of the listener's thread for the default prefix.
LISTENER = "flask-redispool-sentinels-REDIS"
#: How long writes go on after the sentinels name the new master (the issue's measure).
WRITING_ON = 3.0


def listeners() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == LISTENER]


def subscribed(service: SentinelService, app: Flask, each: int = 1) -> int:
    """How many sentinels hold ``each`` of this app's subscriptions to their events (one
    per process), as ``CLIENT LIST`` shows them."""
    count = 0
    for sentinel in service.sentinels:
        if sentinel.pid is None:
            continue
        with sentinel.client(socket_timeout=2, decode_responses=True) as client:
            held = [entry for entry in our_connections(client, app.import_name) if int(entry.get("sub", 0)) == 3]
        count += len(held) == each
    return count


@pytest.fixture
def sentinel_app(make_app: Callable[..., Flask], sentinel_service: SentinelService) -> tuple[Flask, RedisPool]:
    sentinel_service.wait_ready(replicas=2)
    app = make_app(REDIS_URL=sentinel_service.url, REDIS_STATS_INTERVAL=0)
    return app, RedisPool(app)


def test_one_listener_per_process_however_many_requests(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app

    @app.post("/incr")
    def incr() -> dict[str, int]:
        return {"value": redis_pool.client.incr("listened")}

    @app.get("/async-read")
    async def async_read() -> dict[str, str]:
        return {"value": str(await redis_pool.async_replica_client.get("listened"))}

    others = set(listeners())  # of apps that other tests left to the garbage collector
    assert set(listeners()) == others  # init_app starts nothing
    client = app.test_client()
    for _ in range(30):
        assert client.post("/incr").status_code == 200
        assert client.get("/async-read").status_code == 200
    assert len(set(listeners()) - others) == 1
    wait_until(lambda: subscribed(sentinel_service, app) == 3, 10, "a subscription per sentinel")

    redis_pool.close(app)
    assert set(listeners()) <= others  # joined by close()
    wait_until(lambda: subscribed(sentinel_service, app) == 0, 5, "the sentinels to see the subscriptions end")


def test_the_listener_survives_a_sentinel_restart(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app
    others = set(listeners())
    with app.app_context():
        redis_pool.client.ping()
    wait_until(lambda: subscribed(sentinel_service, app) == 3, 10, "a subscription per sentinel")
    restarted = sentinel_service.sentinels[0]
    restarted.kill()
    try:
        wait_until(lambda: subscribed(sentinel_service, app) == 2, 10, "the two others to keep theirs")
    finally:
        restarted.start()
    wait_until(lambda: subscribed(sentinel_service, app) == 3, 10, "the listener to subscribe to it again")
    assert len(set(listeners()) - others) == 1
    sentinel_service.wait_ready(replicas=2)


def test_health_asks_the_sentinels(sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService) -> None:
    """With every sentinel down, the master still answers the health check's PING on its
    open connection, but no connection can be made: health() says so."""
    app, redis_pool = sentinel_app
    assert redis_pool.health(app)["ok"] is True
    for sentinel in sentinel_service.sentinels:
        sentinel.kill()
    try:
        health = redis_pool.health(app)
        assert health["ok"] is False
        assert health["error"] is not None
        assert health["error"].startswith("MasterNotFoundError: None of the 3 sentinels told where the master")
    finally:
        for sentinel in sentinel_service.sentinels:
            sentinel.start()
    sentinel_service.wait_ready(replicas=2)
    assert redis_pool.health(app)["ok"] is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_listens_for_itself(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    app, redis_pool = sentinel_app
    others = set(listeners())
    with app.app_context():
        redis_pool.client.ping()
    wait_until(lambda: subscribed(sentinel_service, app, each=1) == 3, 10, "the parent's subscriptions")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first command starts a listener of its own
        try:
            with app.app_context():
                redis_pool.client.ping()
            deadline = time.monotonic() + 10
            while subscribed(sentinel_service, app, each=2) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.write(write_end, f"{len(listeners())} {subscribed(sentinel_service, app, each=2)}".encode())
        finally:
            os._exit(0)
    wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, 30, "the forked child to exit")
    assert os.read(read_end, 64).decode() == "1 3"  # one thread in the child, subscribed to each sentinel
    assert len(set(listeners()) - others) == 1  # the parent's still runs
    wait_until(lambda: subscribed(sentinel_service, app, each=1) == 3, 10, "the child's subscriptions to end")


def tell_of_a_switch_to_a_replica(app: Flask, redis_pool: RedisPool, service: SentinelService) -> RedisServer:
    """Have ``app``'s listener hear of a failover to the service's first replica, which the
    sentinels never made: the master's pool then reaches that replica. Returns it."""
    master, replica = service.master, service.replicas[0]
    watch = _watch_of(redis_pool.get_pool(app))
    assert watch is not None
    watch.heard(SWITCHED, f"{service.name} 127.0.0.1 {master.port} 127.0.0.1 {replica.port}")
    return replica


def test_a_server_of_the_wrong_role_is_refused_and_not_counted_as_an_outage(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService
) -> None:
    """Told of a failover to a replica (which the sentinels never made), the master's pool
    reaches that replica and refuses it, sync and async, with a ``WrongRoleError`` that
    names the server and the failover; the circuit breaker, on by default, counts none
    of them, since the server answered."""
    app, redis_pool = sentinel_app
    replica = tell_of_a_switch_to_a_replica(app, redis_pool, sentinel_service)
    refused = f"127.0.0.1:{replica.port} is a slave now, not the master of 'mymaster'"

    @app.get("/async")
    async def view() -> str:
        try:
            await redis_pool.async_client.get("key")
        except WrongRoleError as error:
            return str(error)
        return "lent"

    with app.app_context():
        for _ in range(10):
            with pytest.raises(WrongRoleError, match=refused) as raised:
                redis_pool.client.get("key")
    assert "is failing over" in "".join(getattr(raised.value, "__notes__", [str(raised.value)]))
    for _ in range(10):  # the error's text (on Python 3.10, with its note joined to it)
        assert app.test_client().get("/async").text.startswith(refused)
    stats = redis_pool.stats(app)
    assert (stats["circuit_breaker"], stats["circuit_failures"], stats["circuit_opened"]) == ("closed", 0, 0)


def test_the_watch_hears_only_its_service_and_each_failover_once() -> None:
    watch = SentinelWatch([("127.0.0.1", 1)], "mymaster", {}, "unstarted")
    old, new = ("10.0.0.1", 6379), ("10.0.0.2", 6379)
    watch.heard(PROMOTING, "slave 10.0.0.2:6379 10.0.0.2 6379 @ other 10.0.0.1 6379")
    watch.heard(SWITCHED, "other 10.0.0.1 6379 10.0.0.2 6379")
    assert (watch.generation, watch.news[:2]) == (0, (None, frozenset()))
    watch.heard(PROMOTING, "slave 10.0.0.2:6379 10.0.0.2 6379 @ mymaster 10.0.0.1 6379")
    for _ in range(3):  # each sentinel announces the switch as it learns of it
        watch.heard(SWITCHED, "mymaster 10.0.0.1 6379 10.0.0.2 6379")
    assert (watch.generation, watch.news[:2]) == (1, (new, frozenset({old})))
    assert watch.correct(old) == new  # a late sentinel's answer
    assert watch.correct(("10.0.0.3", 6379)) == ("10.0.0.3", 6379)  # a failover it did not hear of
    assert watch.replicas([new, ("10.0.0.3", 6379)]) == [("10.0.0.3", 6379)]
    assert watch.refusal(old, "master", is_master=True) == "10.0.0.1:6379 was the master of 'mymaster' until a failover"
    assert watch.refusal(old, "master", is_master=False) is not None  # not converted yet
    assert watch.refusal(old, "slave", is_master=False) is None
    assert watch.refusal(new, "master", is_master=False) is None  # the replicas' fallback
    watch.heard(ABORTED, "master mymaster 10.0.0.1 6379")  # the promotion timed out: the old one stays
    assert (watch.generation, watch.news[:2]) == (2, (old, frozenset({new})))
    assert watch.refusal(old, "slave", is_master=True) == "10.0.0.1:6379 is a slave now, not the master of 'mymaster'"
    watch.news = (old, frozenset({new}), time.monotonic() - 1)  # old news: the sentinels decide
    assert watch.correct(new) == new
    assert watch.refusal(new, "master", is_master=True) is None
    watch.close()
    assert not watch.running


@dataclass
class Writer:
    """``SET <prefix>:<i> <i>`` as fast as it can until ``stop`` is set; what came back."""

    prefix: str
    stop: threading.Event
    acknowledged: list[int] = field(default_factory=list)
    failed: int = 0
    lost: int = 0

    def run(self, write: Callable[[str, int], Any]) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                write(f"{self.prefix}:{i}", i)
            except RedisError:
                self.failed += 1
            else:
                self.acknowledged.append(i)

    async def run_async(self, write: Callable[[str, int], Any]) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                await write(f"{self.prefix}:{i}", i)
            except RedisError:
                self.failed += 1
            else:
                self.acknowledged.append(i)

    def count_lost(self, master: Redis) -> int:
        """How many acknowledged writes ``master`` (answers decoded) does not hold."""
        keys = self.acknowledged
        for start in range(0, len(keys), 2000):
            chunk = keys[start : start + 2000]
            values = master.mget([f"{self.prefix}:{i}" for i in chunk])
            self.lost += sum(value != str(i) for i, value in zip(chunk, values, strict=True))
        return self.lost

    def figures(self) -> dict[str, int]:
        return {"failed": self.failed, "lost": self.lost, "acknowledged": len(self.acknowledged)}


def writing_side_by_side(
    app: Flask, redis_pool: RedisPool, service: SentinelService, **raw_options: Any
) -> tuple[list[Writer], list[Callable[[], object]]]:
    """Three writers, ``ours``, ``ours-async`` and ``raw``, sharing one ``stop``, and what
    runs each: our sync client in an app context, our async client in a request to an
    async view (``POST /write``, made here), and raw redis-py's ``Sentinel.master_for``
    with ``raw_options`` for the sentinels and the master alike."""
    app.testing = False  # the async view runs until stopped: its errors are counted, not raised
    ours, ours_async, raw = writers = [Writer(prefix, threading.Event()) for prefix in ("ours", "ours-async", "raw")]
    ours_async.stop = raw.stop = ours.stop

    @app.post("/write")
    async def write() -> dict[str, int]:
        await ours_async.run_async(redis_pool.async_client.set)
        return {}

    def write_sync() -> None:
        with app.app_context():
            ours.run(redis_pool.client.set)

    def write_raw() -> None:
        addresses = [("127.0.0.1", sentinel.port) for sentinel in service.sentinels]
        sentinel = Sentinel(addresses, sentinel_kwargs=raw_options, **raw_options)
        master = sentinel.master_for(service.name, **raw_options)
        try:
            raw.run(master.set)
        finally:
            master.close()
            for client in sentinel.sentinels:
                client.close()

    return writers, [write_sync, lambda: app.test_client().post("/write"), write_raw]


@contextlib.contextmanager
def failing_over(
    service: SentinelService, writers: Sequence[Writer], targets: Sequence[Callable[[], object]]
) -> Iterator[tuple[int, int]]:
    """Run each of ``targets`` in a thread (the writers, and whatever else goes on); once
    each of ``writers`` has 100 writes acknowledged, ``SENTINEL FAILOVER``. Yields the old
    and the new master's ports once every sentinel names the new one, while the threads
    go on; then sets the writers' ``stop`` and waits for the threads (a bounded join)."""
    old_master = service.master_port()
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(len(w.acknowledged) > 100 for w in writers), 30, "writes before")
        with service.ask() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", service.name)
        new_master = wait_until(
            lambda: (port := service.agreed_master()) not in (None, old_master) and port, 30, "a new master"
        )
        yield old_master, new_master
    finally:
        for writer in writers:
            writer.stop.set()
        for thread in threads:
            thread.join(15)
    assert not any(thread.is_alive() for thread in threads)


def count_lost(service: SentinelService, old_master: int, new_master: int, writers: Sequence[Writer]) -> None:
    """Once the old master is a replica of the new one and every replica is in sync, count
    each writer's acknowledged writes that the master does not hold."""

    def settled() -> bool:
        try:
            with service.connect(old_master) as old:
                replication = dict(old.info("replication"))
        except RedisError:
            return False
        return bool(replication.get("role") == "slave" and replication.get("master_link_status") == "up")

    wait_until(settled, 60, "the old master to become a replica of the new one")
    replicas = len(service.replicas)
    with service.connect(new_master) as master:
        master.set("failover-marker", 1)
        wait_until(lambda: master.wait(replicas, 1000) == replicas, 30, "every replica in sync")
        for writer in writers:
            writer.count_lost(master)


def calls_to(service: SentinelService, port: int, command: str) -> int:
    """:func:`~tests.conftest.calls` of the service's node on ``port``."""
    with service.connect(port) as node:
        return calls(node, command)


def assert_little_lost(ours: Sequence[Writer], raw: Writer, figures: dict[str, Any]) -> None:
    """The issue's target: each of ``ours`` failed 50 writes at most and lost at most 1% of
    what ``raw`` lost (nothing, if raw lost nothing)."""
    for writer in ours:
        assert writer.failed <= 50, figures
        if raw.lost:
            assert writer.lost <= raw.lost * 0.01, figures
        else:
            assert writer.lost == 0, figures


def test_a_sentinel_failover_loses_no_acknowledged_write(
    sentinel_app: tuple[Flask, RedisPool], sentinel_service: SentinelService, record_property: Callable[..., None]
) -> None:
    """Our sync client, our async client and raw redis-py's ``Sentinel.master_for`` write
    side by side through one ``SENTINEL FAILOVER`` and 3 s beyond; once the old master is
    a replica again and the replicas are in sync, every acknowledged key is read back from
    the master. Raw redis-py writes to the demoted master until the sentinels reconfigure
    it, and loses those writes; ours follow the sentinels at once. Meanwhile
    ``replica_client`` keeps reading, and none of its reads reach the new master."""
    app, redis_pool = sentinel_app
    service = sentinel_service
    writers, targets = writing_side_by_side(app, redis_pool, service, socket_timeout=2)
    ours, ours_async, raw = writers
    stop = ours.stop
    reads = [0]

    def read() -> None:
        with app.app_context():
            while not stop.is_set():
                try:
                    redis_pool.replica_client.get("ours:1")
                    reads[0] += 1
                except RedisError:
                    pass

    with app.app_context():
        redis_pool.client.ping()
    wait_until(lambda: subscribed(service, app) == 3, 10, "a subscription per sentinel")
    with failing_over(service, writers, (*targets, read)) as (old_master, new_master):
        gets_before, reads_before = calls_to(service, new_master, "get"), reads[0]
        time.sleep(WRITING_ON)  # the measure: writes go on this long after the switch
        gets_after, reads_after = calls_to(service, new_master, "get"), reads[0]
    count_lost(service, old_master, new_master, writers)
    figures: dict[str, Any] = {writer.prefix: writer.figures() for writer in writers}
    figures["replica_reads"] = {"on_new_master": gets_after - gets_before, "all": reads_after - reads_before}
    record_property("failover_loss", figures)
    print(f"SENTINEL FAILOVER: {figures}")

    assert_little_lost((ours, ours_async), raw, figures)
    assert gets_after - gets_before == 0, figures  # replica_client leaves the new master alone
    assert reads_after > reads_before, figures
