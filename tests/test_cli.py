"""``flask redis-stats`` and ``flask redis-ping`` against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_redispool import RedisPool
from flask_redispool.pool import HOST
from flask_redispool.testing import free_port

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import sys
from flask import Flask
from flask_redispool import RedisPool

app = Flask("worker")
app.config.update(REDIS_URL=sys.argv[1], REDIS_CLIENT_NAME=sys.argv[2])
pool = RedisPool(app).get_pool(app)
held = [pool.get_connection() for _ in range(int(sys.argv[3]))]
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def worker(app: Flask, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process of the same app, holding 2 connections, as a serving worker would."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, redis_url, app.import_name, "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    yield process
    process.communicate("")  # closing stdin ends it


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def test_stats_shows_this_process_and_the_workers(
    app: Flask, redis_pool: RedisPool, runner: FlaskCliRunner, worker: subprocess.Popen[str]
) -> None:
    result = runner.invoke(args=["redis-stats"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"REDIS  {redis_pool.stats(app)['url']}  client name {app.import_name!r}"
    assert lines[1].startswith("  settings      max_connections=10 blocking=True pool_timeout=1s")
    assert lines[2].startswith(f"  this process  pid={os.getpid()} created=1 in_use=0 idle=1")
    rows = {line.split()[1]: line.split() for line in lines[4:-1]}
    assert rows[str(worker.pid)][:3] == [HOST, str(worker.pid), "2"]
    assert rows[str(os.getpid())][-2:] == ["(this", "command)"]
    assert lines[-1] == "  total: 3 connection(s) in 2 process(es)"


def test_stats_json_matches_the_server(
    app: Flask, redis_pool: RedisPool, runner: FlaskCliRunner, worker: subprocess.Popen[str]
) -> None:
    result = runner.invoke(args=["redis-stats", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)["pools"]
    assert report["pool"] == redis_pool.stats(app)
    assert report["server_error"] is None
    by_pid = {proc["pid"]: proc for proc in report["server"]}
    assert by_pid[worker.pid]["connections"] == 2
    assert by_pid[worker.pid]["this_process"] is False
    assert by_pid[os.getpid()]["this_process"] is True


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


@pytest.mark.parametrize("args", [["redis-stats"], ["redis-stats", "--json"], ["redis-ping"]])
def test_unreachable_redis_is_one_line_and_exit_1(args: list[str], tmp_path: Path) -> None:
    """Run the real ``flask`` command, as a container health check would."""
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    (tmp_path / "cli_app.py").write_text(
        "from flask import Flask\nfrom flask_redispool import RedisPool\n"
        f"app = Flask(__name__)\napp.config['REDIS_URL'] = {url!r}\nRedisPool(app)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "cli_app", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: Redis for REDIS_URL (redis://:***@127.0.0.1:")
    assert "is unreachable: " in line
    assert "hunter2-secret" not in result.stderr
