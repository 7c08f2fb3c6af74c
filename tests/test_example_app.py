"""The example app and ``make demo``'s runner, against real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from example_app import create_app, redis_pool
from flask_redispool.testing import find_redis_server, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(make_example: Callable[..., Flask], redis_url: str) -> Flask:
    return make_example(REDIS_URL=redis_url)


def test_hits_count_and_stats_show_the_pool(example: Flask) -> None:
    client = example.test_client()
    assert [client.get("/hits").json for _ in range(2)] == [{"hits": n, "pid": os.getpid()} for n in (1, 2)]
    page = client.get("/").text
    assert '<span class="hits" id="hits">3</span>' in page
    assert "<th>in_use</th><td>0</td>" in page  # a command gives its connection back at once
    stats = client.get("/stats").json
    assert (stats["in_use"], stats["checkouts"], stats["client_name"]) == (0, 3, "example_app")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "fakeredis://")
    monkeypatch.setenv("FLASK_REDIS_MAX_CONNECTIONS", "7")
    app = create_app()
    assert redis_pool.stats(app)["max_connections"] == 7
    assert redis_pool.settings(app).url == "fakeredis://"


def _read_until(process: subprocess.Popen[str], needle: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:  # ends when the process closes its output
        if needle in line:
            return line
    raise AssertionError(f"the demo ended without printing {needle!r}")


@pytest.mark.skipif(find_redis_server() is None and os.environ.get("CI") != "true", reason="no redis-server")
def test_demo_starts_an_embedded_server_and_ctrl_c_stops_both() -> None:
    redis_port, web_port = free_port(), free_port()
    env = {**os.environ, "DEMO_REDIS_PORT": str(redis_port), "PORT": str(web_port), "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "example_app"]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as demo:
        try:
            redis_pid = int(_read_until(demo, "redis-server pid").split()[2])
            _read_until(demo, f"http://127.0.0.1:{web_port}")
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/hits", timeout=10) as response:
                assert json.loads(response.read()) == {"hits": 1, "pid": demo.pid}
            demo.send_signal(signal.SIGINT)
            _read_until(demo, "redis-server stopped")
            assert demo.wait(timeout=20) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)
