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

from .conftest import Lines, interruptible, json_of, stop_process, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(make_example: Callable[..., Flask], redis_url: str) -> Flask:
    return make_example(REDIS_URL=redis_url)


def test_hits_count_and_the_dashboard_page(example: Flask) -> None:
    client = example.test_client()
    assert [client.get("/hits").json for _ in range(2)] == [{"hits": n, "pid": os.getpid()} for n in (1, 2)]
    page = client.get("/").text
    assert '<span class="hits" id="hits">3</span>' in page
    assert 'id="burst-quick"' in page
    assert 'id="burst-slow"' in page
    assert 'src="/static/dashboard.js"' in page  # served by the app: no CDN
    with client.get("/static/dashboard.js") as script:
        assert script.status_code == 200
    stats = json_of(client.get("/stats"))
    assert (stats["in_use"], stats["checkouts"], stats["client_name"]) == (0, 3, "example_app")


def test_report_is_what_redis_stats_shows(example: Flask) -> None:
    client = example.test_client()
    client.get("/hits")
    report = json_of(client.get("/report"))
    assert report["stats_interval"] == 1.0  # the example's default
    (row,) = [row for row in report["processes"] if row["pid"] == os.getpid()]
    assert (row["this_process"], row["server_connections"]) == (True, 1)


def test_a_burst_is_bounded_one_at_a_time_and_makes_requests_wait(example: Flask) -> None:
    client = example.test_client()
    assert client.post("/burst?kind=bogus").status_code == 400
    started = client.post("/burst?kind=slow")
    assert (started.status_code, started.json) == (202, {"kind": "slow", "pid": os.getpid(), "started": True})
    # 16 threads doing 5 units of >= 0.2 s each: the burst lasts at least a second.
    assert client.post("/burst?kind=quick").status_code == 409
    done = wait_until(lambda: client.post("/burst?kind=quick").status_code == 202, 30, "the slow burst to end")
    assert done
    stats = wait_until(lambda: (s := redis_pool.stats(example))["in_use"] == 0 and s, 30, "the quick burst to end")
    assert stats["created"] == stats["peak_in_use"] == 10  # the limit, not more
    assert stats["waits"] > 0  # more threads than connections: some waited
    assert stats["checkouts"] >= 80


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "fakeredis://")
    monkeypatch.setenv("FLASK_REDIS_MAX_CONNECTIONS", "7")
    app = create_app()
    assert redis_pool.stats(app)["max_connections"] == 7
    assert redis_pool.settings(app).url == "fakeredis://"
    redis_pool.close(app)


@pytest.mark.skipif(find_redis_server() is None and os.environ.get("CI") != "true", reason="no redis-server")
def test_demo_starts_an_embedded_server_and_ctrl_c_stops_both() -> None:
    redis_port, web_port = free_port(), free_port()
    env = {**os.environ, "DEMO_REDIS_PORT": str(redis_port), "PORT": str(web_port), "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    command = interruptible([sys.executable, "-m", "example_app"])
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as demo:
        try:
            assert demo.stdout is not None
            output = Lines(demo.stdout)
            redis_pid = int(output.until("redis-server pid").split()[2])
            output.until(f"http://127.0.0.1:{web_port}")
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/hits", timeout=10) as response:
                assert json.loads(response.read()) == {"hits": 1, "pid": demo.pid}
            demo.send_signal(signal.SIGINT)
            output.until("redis-server stopped")
            assert demo.wait(timeout=20) == 0
        finally:
            stop_process(demo)
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)
