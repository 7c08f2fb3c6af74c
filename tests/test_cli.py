"""``flask redis-stats`` and ``flask redis-ping`` against real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskCliRunner
from redis import Redis

from flask_redispool import RedisPool
from flask_redispool._cli import ping_command
from flask_redispool._stats import HOST, group_client_list
from flask_redispool.testing import free_port

from .conftest import Lines, Worker, interruptible, stop_process, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker(app: Flask, start_worker: Callable[..., Worker]) -> Worker:
    """Another process of the same app, holding 2 connections, as a serving worker would."""
    return start_worker(app.import_name, held=2)


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def _stats_json(runner: FlaskCliRunner) -> dict[str, Any]:
    result = runner.invoke(args=["redis-stats", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)["pools"]
    return report  # type: ignore[no-any-return]


def _rows(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["pid"]: row for row in report["processes"]}


def _published(report: dict[str, Any], pid: int) -> dict[str, Any] | None:
    """``report`` once it has a snapshot of ``pid``."""
    return report if _rows(report).get(pid, {}).get("in_use") is not None else None


@pytest.mark.servers
def test_stats_table_has_a_row_per_process_and_totals(
    app: Flask, redis_pool: RedisPool, runner: FlaskCliRunner, start_worker: Callable[..., Worker]
) -> None:
    publishing = start_worker(app.import_name, held=2, interval=0.2)
    wait_until(lambda: _published(_stats_json(runner), publishing.pid), 10, "a snapshot")
    result = runner.invoke(args=["redis-stats"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"REDIS  {redis_pool.stats(app)['url']}  client name {app.import_name!r}"
    assert lines[1].startswith("  max_connections=10 blocking=True pool_timeout=1s")
    assert lines[1].endswith(" stats_interval=10s")
    header = "HOST PID IN_USE IDLE PEAK CHECKOUTS WAITS TIMEOUTS LOOPS ASYNC CB_OPEN AGE SERVER"
    assert lines[2].split() == header.split()
    rows = {line.split()[1]: line.split() for line in lines[3:5]}
    assert rows[str(publishing.pid)][:10] == [HOST, str(publishing.pid), "2", "0", "2", "2", "0", "0", "0", "0"]
    assert rows[str(publishing.pid)][-1] == "2"
    assert rows[str(os.getpid())][2:] == ["-"] * 10 + ["1", "(this", "command)"]
    assert lines[5].split() == ["total", "2", "proc", "2", "0", "-", "2", "0", "0", "-", "0", "0", "-", "3"]


@pytest.mark.servers
def test_stats_json_rows_match_the_server(
    app: Flask, runner: FlaskCliRunner, start_worker: Callable[..., Worker], server: Redis
) -> None:
    publishing = start_worker(app.import_name, held=2, interval=0.2)
    silent = start_worker(app.import_name, held=1, interval=0)
    report = wait_until(lambda: _published(_stats_json(runner), publishing.pid), 10, "a snapshot")
    rows = _rows(report)
    held = {proc["pid"]: proc["connections"] for proc in group_client_list(server.client_list(), app.import_name)}
    assert (
        {pid: row["server_connections"] for pid, row in rows.items()}
        == held
        == {publishing.pid: 2, silent.pid: 1, os.getpid(): 1}
    )
    row = rows[publishing.pid]
    assert (row["in_use"], row["idle"], row["max_connections"], row["suspect"]) == (2, 0, 10, None)
    assert 0 <= row["snapshot_age"] <= 2 * 0.2
    assert rows[silent.pid]["in_use"] is None
    assert rows[silent.pid]["suspect"] is None  # new: within two intervals of its first connection
    assert rows[os.getpid()]["this_process"] is True
    assert report["totals"] == {
        "processes": 3, "in_use": 2, "idle": 0, "checkouts": 2, "waits": 0, "timeouts": 0, "async_in_use": 0,
        "async_checkouts": 0, "async_waits": 0, "async_timeouts": 0, "circuit_open": 0, "circuit_opened": 0,
        "cache_hits": 0, "cache_misses": 0, "cache_invalidations": 0, "cache_evictions": 0, "cache_entries": 0,
        "server_connections": 4, "suspects": 0,
    }  # fmt: skip
    assert report["server_error"] is report["snapshots_error"] is None


@pytest.mark.servers
def test_a_new_process_is_no_leak_suspect_before_two_intervals(
    make_app: Callable[..., Flask], redis_url: str, start_worker: Callable[..., Worker], server: Redis
) -> None:
    """A process publishes its first snapshot one interval after its first connection: a
    deploy must raise no alarm for two intervals, and a real leak still does after them."""
    worker = start_worker("newcomer", held=1, interval=60)  # its first snapshot is a minute away
    deploy = make_app(REDIS_URL=redis_url, REDIS_CLIENT_NAME="newcomer", REDIS_STATS_INTERVAL=60)
    RedisPool(deploy)
    runner = deploy.test_cli_runner()

    def connection_age() -> int:
        (held,) = [c for c in server.client_list() if c["name"] == f"newcomer:{HOST}:{worker.pid}"]
        return int(held["age"])

    for _ in range(2):  # as soon as it connected, and once CLIENT LIST gives it an age
        row = _rows(_stats_json(runner))[worker.pid]
        assert (row["server_connections"], row["snapshot_age"], row["suspect"]) == (1, None, None)
        table = runner.invoke(args=["redis-stats"])
        assert table.exit_code == 0, table.output
        assert "leak suspect" not in table.output
        wait_until(lambda: connection_age() >= 1, 10, "a connection a second old")

    hasty = make_app(REDIS_URL=redis_url, REDIS_CLIENT_NAME="newcomer", REDIS_STATS_INTERVAL=0.5)
    RedisPool(hasty)  # two of its intervals are a second: the same connection is soon past them
    wait_until(lambda: connection_age() >= 2, 10, "a connection two seconds old")
    leak = _rows(_stats_json(hasty.test_cli_runner()))[worker.pid]
    assert leak["suspect"] == "holds 1 connection(s) but publishes no snapshot"


def test_stats_does_not_list_itself_as_a_publisher(app: Flask, runner: FlaskCliRunner, server: Redis) -> None:
    app.config["REDIS_STATS_INTERVAL"] = 0.1
    for _ in range(3):
        _stats_json(runner)
    assert server.keys("flask_redispool:*") == []


def test_stats_reports_every_prefix(make_app: Callable[..., Flask], redis_url: str) -> None:
    app = make_app(REDIS_URL=redis_url, CACHE_REDIS_URL=redis_url)
    RedisPool(app)
    RedisPool(app, config_prefix="CACHE_REDIS")
    result = app.test_cli_runner().invoke(args=["redis-stats", "--json"])
    assert [r["pool"]["prefix"] for r in json.loads(result.output)["pools"]] == ["REDIS", "CACHE_REDIS"]


def test_ping_reports_round_trip_and_version(runner: FlaskCliRunner, redis_pool: RedisPool, app: Flask) -> None:
    result = runner.invoke(args=["redis-ping"])
    assert result.exit_code == 0, result.output
    prefix, url, pong, _in, ms, unit, redis, version = result.output.split()
    assert (prefix, url, pong, unit, redis) == ("REDIS", redis_pool.stats(app)["url"], "PONG", "ms,", "Redis")
    assert float(ms) > 0
    assert version[0].isdigit()


def test_the_commands_find_the_app_under_a_group_that_keeps_its_own_object(runner: FlaskCliRunner, app: Flask) -> None:
    @click.group()
    @click.pass_context
    def tools(ctx: click.Context) -> None:
        ctx.obj = {"verbose": False}  # hides the command line's ScriptInfo one level up

    tools.add_command(ping_command)
    app.cli.add_command(tools)
    result = runner.invoke(args=["tools", "redis-ping"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("REDIS  ")


def test_the_commands_find_the_app_as_flask_does_outside_its_command_line(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by a click program of one's own, they load ``app.py`` as ``flask`` would."""
    (tmp_path / "app.py").write_text(
        "from flask import Flask\nfrom flask_redispool import RedisPool\n"
        f"app = Flask(__name__)\napp.config['REDIS_URL'] = {redis_url!r}\nredis_pool = RedisPool(app)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # Flask puts the directory first
    try:
        result = CliRunner().invoke(ping_command, [])
    finally:
        loaded = sys.modules.pop("app", None)
        if loaded is not None:
            loaded.redis_pool.close(loaded.app)
    assert loaded is not None
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"REDIS  {redis_url}  PONG in ")


def flask_command(tmp_path: Path, url: str, *args: str) -> tuple[list[str], dict[str, Any]]:
    """The real ``flask`` command line for an app on ``url``, and the arguments to run it."""
    (tmp_path / "cli_app.py").write_text(
        "from flask import Flask\nfrom flask_redispool import RedisPool\n"
        f"app = Flask(__name__)\napp.config['REDIS_URL'] = {url!r}\nRedisPool(app)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return [sys.executable, "-m", "flask", "--app", "cli_app", *args], {"cwd": tmp_path, "env": env, "text": True}


@pytest.mark.parametrize("args", [["redis-stats"], ["redis-stats", "--json"], ["redis-ping"]])
def test_unreachable_redis_is_one_line_and_exit_1(args: list[str], tmp_path: Path) -> None:
    """Run the real ``flask`` command, as a container health check would."""
    command, how = flask_command(tmp_path, f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0", *args)
    result = subprocess.run(command, capture_output=True, timeout=60, **how)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Redis for REDIS_URL (redis://:***@127.0.0.1:")
    assert "is unreachable: " in line
    assert "hunter2-secret" not in result.stderr


def test_watch_refreshes_until_ctrl_c(tmp_path: Path, redis_url: str) -> None:
    command, how = flask_command(tmp_path, redis_url, "redis-stats", "--json", "--watch", "0.1")
    process = subprocess.Popen(interruptible(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **how)
    try:
        assert process.stdout is not None
        lines = Lines(process.stdout)
        frames = [json.loads(lines.next()) for _ in range(3)]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        stop_process(process)
    assert [frame["pools"][0]["pool"]["pid"] for frame in frames] == [process.pid] * 3
    assert process.returncode == 0, stderr
    assert stderr == ""
