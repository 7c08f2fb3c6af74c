"""Every Python snippet of the README and the docs runs, page by page, against a real server.

A page's snippets run in order in one namespace, as a reader would paste them into one
module. Each runs inside a request context of the page's latest Flask ``app`` (the docs
say "in a view"); Redis URLs in them point at the test's server, and Redis Cluster URLs
at a cluster the test starts. Afterwards every
``GET`` route the page defined (on ``app``, or on the app its ``create_app()`` makes)
is requested, and must not fail.

The quick start's ``app.py`` runs as a reader runs it: written to a directory of its
own and served with the one command the page gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from flask import Flask
from opentelemetry import metrics
from prometheus_client import CollectorRegistry
from redis.observability.providers import reset_observability_instance
from redis.observability.recorder import reset_collector

from flask_redispool._extension import app_states
from flask_redispool.testing import free_port

from .conftest import Lines, stop_process

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
_URL_RE = re.compile(r"redis://[^\"'\s]*localhost:6379/[0-9]+")
CLUSTER_URL_RE = re.compile(r"redis\+cluster://localhost:[0-9]+(,localhost:[0-9]+)*")
#: Pages whose snippets need Redis 8 (client-side caching): they run against ``redis8_server``.
NEEDS_REDIS_8 = {"caching.rst"}
# A reST Python block: its caption if it names a file (":caption: app.py"), and its code.
_RST_PYTHON = r"^\.\. code-block:: python\n(?:[ ]{3,}:caption: (\S+\.py)\n)?\n((?:(?:[ ]{3,}.*)?\n)+)"


def snippets(page: Path) -> list[str]:
    """The page's Python code blocks, dedented; not those captioned as a file of their own
    (``:caption: app.py``), which are run as files (:func:`test_the_quick_start_runs_with_one_command`)."""
    text = page.read_text()
    if page.suffix == ".md":
        return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for file, block in re.findall(_RST_PYTHON, text, flags=re.MULTILINE) if not file]


def python_file(page: Path, name: str) -> str:
    """The code block of ``page`` captioned ``name``: a file of its own."""
    text = page.read_text()
    [code] = [block for file, block in re.findall(_RST_PYTHON, text, flags=re.MULTILINE) if file == name]
    return textwrap.dedent(code).strip() + "\n"


def flask_apps(namespace: dict[str, Any]) -> list[Flask]:
    return [value for value in namespace.values() if isinstance(value, Flask)]


@contextlib.contextmanager
def in_a_view(namespace: dict[str, Any]) -> Iterator[None]:
    app = namespace.get("app")
    if isinstance(app, Flask) and app_states(app):
        with app.test_request_context():
            yield
    else:
        yield


def close(namespace: dict[str, Any]) -> None:
    for app in flask_apps(namespace):
        for state in app_states(app):
            state.extension.close(app)
    reset_observability_instance()  # a page turns redis-py's OpenTelemetry metrics on: off again
    reset_collector()


@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_every_snippet_runs(
    page: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cluster_url = request.getfixturevalue("redis_cluster").url if CLUSTER_URL_RE.search(page.read_text()) else ""
    if page.name in NEEDS_REDIS_8:
        redis_url = request.getfixturevalue("redis8_server").url
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FLASK_REDIS_URL", redis_url)  # for app.config.from_prefixed_env()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_page"}
    providers: list[Any] = [metrics.get_meter_provider()]  # a page's lasts as long as the page, not the process
    monkeypatch.setattr(metrics, "set_meter_provider", providers.append)
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: providers[-1])
    try:
        for number, code in enumerate(snippets(page), 1):
            monkeypatch.setattr(prometheus_client, "REGISTRY", CollectorRegistry())  # each snippet: its own
            code = CLUSTER_URL_RE.sub(cluster_url, _URL_RE.sub(redis_url, code))
            with in_a_view(namespace):
                exec(compile(code, f"{page.name} snippet {number}", "exec"), namespace)
        if "create_app" in namespace and not isinstance(namespace.get("app"), Flask):
            namespace["app"] = namespace["create_app"]()
        for app in flask_apps(namespace):
            client = app.test_client()
            for rule in app.url_map.iter_rules():
                if "GET" in (rule.methods or ()) and not rule.arguments and rule.endpoint != "static":
                    response = client.get(rule.rule)
                    assert response.status_code < 500, (page.name, rule.rule, response.text)
    finally:
        close(namespace)


QUICK_START = ROOT / "docs" / "quickstart.rst"
#: What the quick start says happens without ``REDIS_URL``.
NO_URL = (
    "flask_redispool.ConfigError: REDIS_URL is not set: give the Redis server's URL, "
    "e.g. 'redis://localhost:6379/0', or 'fakeredis://' for an in-process fake."
)


def test_the_readme_and_the_docs_show_one_quick_start() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{python_file(QUICK_START, 'app.py')}```" in readme
    for page in (readme, QUICK_START.read_text()):
        assert "REDIS_URL=redis://localhost:6379/0 flask --app app run" in page
        assert NO_URL in page


def flask_run(directory: Path, port: int, redis_url: str | None) -> tuple[list[str], dict[str, str]]:
    """``[REDIS_URL=…] flask --app app run`` in ``directory``, on ``port``, with this checkout's package."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLASK_", "REDIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    flask = Path(sys.executable).with_name("flask")
    command = [str(flask)] if flask.exists() else [sys.executable, "-m", "flask"]
    return [*command, "--app", "app", "run", "--port", str(port)], env


@pytest.mark.parametrize("backend", ["redis-server", "fakeredis"])
def test_the_quick_start_runs_with_one_command(tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    redis_url = request.getfixturevalue("redis_url") if backend == "redis-server" else "fakeredis://"
    (tmp_path / "app.py").write_text(python_file(QUICK_START, "app.py"))
    port = free_port()
    command, env = flask_run(tmp_path, port, redis_url)
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as app:
        try:
            assert app.stdout is not None
            Lines(app.stdout).until(f"http://127.0.0.1:{port}")
            for hits in (1, 2):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                    assert json.loads(response.read()) == {"hits": hits}
        finally:
            stop_process(app)


def test_the_quick_start_without_redis_url_stops_with_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(python_file(QUICK_START, "app.py"))
    command, env = flask_run(tmp_path, free_port(), None)
    ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode != 0
    assert ran.stderr.rstrip().endswith(NO_URL), ran.stderr
