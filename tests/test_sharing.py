"""One pool shared by Flask-Caching, Flask-Limiter, Flask-Session and RQ, each the real
package, against a real redis-server of the test's own (so that every connection it sees
is the app's)."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, session
from flask_caching import Cache
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_session import Session
from redis import Redis, RedisCluster
from rq import Queue, SimpleWorker

from flask_redispool import RedisPool
from flask_redispool.testing import RedisClusterServers, RedisServer

from .conftest import close_pools, json_of, our_connections, run_in_threads
from .jobs import add
from .test_cluster import ours_per_node
from .test_docs import CLUSTER_URL_RE, ROOT, snippets


class Worker(SimpleWorker):
    """RQ's ``SimpleWorker`` without its command channel, which these tests do not use.

    Its pubsub thread sleeps up to 60 s between reads once unsubscribed, and redis-py 8.2's
    ``PubSubWorkerThread.stop()`` waits for the thread: a burst's teardown then took 60 s
    whenever the unsubscribe reply was read before ``stop()``."""

    def subscribe(self) -> None:
        """No command channel."""

    def unsubscribe(self) -> None:
        """No command channel."""


@pytest.fixture
def observer(own_server: RedisServer) -> Iterator[Redis]:
    client = Redis(port=own_server.port, socket_timeout=5)
    yield client
    client.close()


def shared_app(make_app: Callable[..., Flask], url: str) -> tuple[Flask, RedisPool]:
    """An app whose cache, rate limits, sessions and job queue all use its RedisPool."""
    app = make_app(REDIS_URL=url + "?socket_keepalive=true", REDIS_MAX_CONNECTIONS=6, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    shared = redis_pool.get_client(app)
    app.config.update(
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_HOST=shared,
        SESSION_TYPE="redis",
        SESSION_REDIS=shared,
        RATELIMIT_STORAGE_URI="redis://",
        RATELIMIT_STORAGE_OPTIONS={"connection_pool": redis_pool.get_pool(app)},
    )
    cache = Cache(app)
    Session(app)
    limiter = Limiter(get_remote_address, app=app)
    queue = Queue("jobs", connection=shared)
    cached_calls = iter(range(1, 10_000))

    @app.get("/visit")
    def visit() -> dict[str, int]:
        session["visits"] = session.get("visits", 0) + 1
        return {"visits": session["visits"]}

    @app.get("/cached")
    @cache.cached(timeout=60)
    def cached() -> dict[str, int]:
        return {"call": next(cached_calls)}

    @app.get("/limited")
    @limiter.limit("5/minute")
    def limited() -> str:
        return "ok"

    @app.post("/jobs")
    def enqueue() -> dict[str, str]:
        return {"id": queue.enqueue(add, 2, 3).id}

    @app.get("/hits")
    def hits() -> dict[str, int]:
        return {"hits": redis_pool.client.incr("hits")}

    return app, redis_pool


def test_four_libraries_and_the_views_share_one_counted_pool(
    make_app: Callable[..., Flask], own_server: RedisServer, observer: Redis
) -> None:
    app, redis_pool = shared_app(make_app, own_server.url)
    statuses: list[int] = []
    lock = threading.Lock()
    assert json_of(app.test_client().get("/cached")) == {"call": 1}  # computed once

    def browse() -> None:
        client = app.test_client()  # one browser: its own session cookie
        for n in range(1, 11):
            assert json_of(client.get("/visit")) == {"visits": n}  # the session persists
            assert json_of(client.get("/cached")) == {"call": 1}  # then the cache hits
            assert client.post("/jobs").status_code == 200
            assert client.get("/hits").status_code == 200
            status = client.get("/limited").status_code
            with lock:
                statuses.append(status)

    run_in_threads(browse, 8)
    assert statuses.count(200) == 5  # one address, 5 per minute: the limit holds across threads
    assert statuses.count(429) == 75
    assert observer.llen("rq:queue:jobs") == 80
    assert int(observer.get("hits") or 0) == 80

    stats = redis_pool.stats(app)
    assert stats["in_use"] == 0
    assert 1 <= stats["created"] <= stats["max_connections"] == 6
    mine = our_connections(observer, app.import_name)
    assert len(mine) == stats["created"]  # what the server sees from the app is the pool's
    others = [c for c in observer.client_list() if c["name"] == "" and int(c["id"]) != observer.client_id()]
    assert others == []  # no library opened a connection of its own
    assert redis_pool.get_pool(app).connection_kwargs["socket_keepalive"] is True  # the URL's options, for all


def test_an_rq_worker_runs_the_jobs_on_a_pool_of_its_own(
    make_app: Callable[..., Flask], own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flask_redispool")
    app, redis_pool = shared_app(make_app, own_server.url)
    app.config.update(RQ_REDIS_URL=own_server.url, RQ_REDIS_SOCKET_TIMEOUT=600)
    worker_pool = RedisPool(app, config_prefix="RQ_REDIS")
    job_id = json_of(app.test_client().post("/jobs"))["id"]

    worker = Worker(["jobs"], connection=worker_pool.get_client(app))
    assert worker.work(burst=True)
    job = Queue("jobs", connection=redis_pool.get_client(app)).fetch_job(job_id)
    assert job is not None
    assert job.return_value() == 5
    assert redis_pool.get_pool(app).connection_kwargs["socket_timeout"] == 0.5  # the web pool is untouched
    assert "changed" not in caplog.text


def test_a_worker_on_the_web_pool_is_reported(
    make_app: Callable[..., Flask], own_server: RedisServer, observer: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # RQ's own worker, command channel included: its pubsub connection is made with the
    # timeout RQ raised (its teardown may take up to 60 s, see Worker).
    app, redis_pool = shared_app(make_app, own_server.url)
    app.test_client().post("/jobs")
    caplog.set_level(logging.WARNING, "flask_redispool")
    worker = SimpleWorker(["jobs"], connection=redis_pool.get_client(app))
    worker.work(burst=True)
    pool = redis_pool.get_pool(app)
    pool.disconnect()
    with app.app_context():
        redis_pool.client.ping()  # a new connection: made with RQ's timeout
    assert pool.connection_kwargs["socket_timeout"] > 400  # RQ's Worker raised it for the whole pool
    assert "changed the REDIS pool's socket_timeout from 0.5 to" in caplog.text
    assert "Give that consumer a RedisPool of its own" in caplog.text
    # RQ's Worker renames a pooled connection to find its address: the names stay ours
    assert f"rename a REDIS connection to {worker.name!r} with CLIENT SETNAME" in caplog.text
    names = [entry["name"] for entry in observer.client_list()]
    assert our_connections(observer, app.name)
    assert not [name for name in names if name.startswith("rq:")]


def test_a_pool_that_does_not_name_lets_a_library_rename(
    make_app: Callable[..., Flask], own_server: RedisServer
) -> None:
    app = make_app(REDIS_URL=own_server.url, REDIS_CLIENT_NAME=False)
    client = RedisPool(app).get_client(app)
    assert client.client_setname("rq:worker:1") is True
    assert client.client_getname() == "rq:worker:1"


def test_get_client_outside_a_request(make_app: Callable[..., Flask], own_server: RedisServer) -> None:
    app, redis_pool = shared_app(make_app, own_server.url)
    client: Any = redis_pool.get_client(app)
    assert client.set("outside", 1)
    assert client.connection_pool is redis_pool.get_pool(app)
    assert client is not redis_pool.get_client(app)  # each caller its own
    assert redis_pool.stats(app)["checkouts"] == 1


def test_flask_limiter_runs_on_fake_mode(make_app: Callable[..., Flask]) -> None:
    """limits runs Lua scripts (EVALSHA): the fakeredis extra brings fakeredis[lua]."""
    app = make_app(REDIS_URL="fakeredis://", RATELIMIT_STORAGE_URI="redis://")
    redis_pool = RedisPool(app)
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": redis_pool.get_pool(app)}
    limiter = Limiter(get_remote_address, app=app)

    @app.get("/limited")
    @limiter.limit("2/minute")
    def limited() -> str:
        return "ok"

    client = app.test_client()
    assert [client.get("/limited").status_code for _ in range(3)] == [200, 200, 429]


def documented_cluster_app(cluster: RedisClusterServers) -> tuple[Flask, RedisPool, Cache]:
    """The Redis Cluster set-up of docs/sharing.rst, as written, on ``cluster``."""
    [code] = [snippet for snippet in snippets(ROOT / "docs" / "sharing.rst") if "get_cluster_client" in snippet]
    namespace: dict[str, Any] = {"__name__": "cluster_sharing"}
    exec(compile(CLUSTER_URL_RE.sub(cluster.url, code), "sharing.rst", "exec"), namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # Flask-Session's fallback to a client of its own
        app = namespace["create_app"]()
    return app, namespace["redis_pool"], namespace["cache"]


def test_flask_caching_and_flask_session_share_a_clusters_node_pools(redis_cluster: RedisClusterServers) -> None:
    app, redis_pool, cache = documented_cluster_app(redis_cluster)
    try:
        assert redis_pool.get_cluster_client(app) is redis_pool.get_cluster_client(app)  # one slot map per app

        def browse() -> None:
            client = app.test_client()  # one browser: its own session cookie
            for n in range(1, 11):
                assert json_of(client.get("/")) == {"visits": n, "greeting": "hello"}

        run_in_threads(browse, 8)
        shared = redis_pool.get_cluster_client(app)
        assert len(shared.keys("session:*", target_nodes=RedisCluster.PRIMARIES)) == 8  # one per browser
        with app.app_context():
            assert cache.set_many({"a": 1, "b": 2, "c": 3}) == ["a", "b", "c"]
            assert cache.delete_many("a", "b") == ["a", "b"]
            assert cache.clear()
        held = ours_per_node(redis_cluster, app.name)
        assert sum(held.values()) > 0
        stats = redis_pool.stats(app)
        assert stats["in_use"] == 0
        assert max(held.values()) <= stats["max_connections"]  # bounded per node, libraries' commands too
    finally:
        close_pools(app)
