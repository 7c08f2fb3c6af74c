"""Every Python snippet of the README and the docs runs, page by page, against a real server.

A page's snippets run in order in one namespace, as a reader would paste them into one
module. Each runs inside a request context of the page's latest Flask ``app`` (the docs
say "in a view"); Redis URLs in them point at the test's server, and Redis Cluster URLs
at a cluster the test starts. Afterwards every
``GET`` route the page defined (on ``app``, or on the app its ``create_app()`` makes)
is requested, and must not fail.
"""

from __future__ import annotations

import contextlib
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from redis.observability.providers import reset_observability_instance
from redis.observability.recorder import reset_collector

from flask_redispool._extension import app_states

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
_URL_RE = re.compile(r"redis://[^\"'\s]*localhost:6379/[0-9]+")
_CLUSTER_URL_RE = re.compile(r"redis\+cluster://localhost:[0-9]+(,localhost:[0-9]+)*")


def snippets(page: Path) -> list[str]:
    """The page's Python code blocks, dedented."""
    text = page.read_text()
    if page.suffix == ".md":
        return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:[ ]{3,}.*)?\n)+)", text, flags=re.MULTILINE)
    return [textwrap.dedent(block) for block in blocks]


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
    cluster_url = request.getfixturevalue("redis_cluster").url if _CLUSTER_URL_RE.search(page.read_text()) else ""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FLASK_REDIS_URL", redis_url)  # for app.config.from_prefixed_env()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_page"}
    try:
        for number, code in enumerate(snippets(page), 1):
            monkeypatch.setattr(prometheus_client, "REGISTRY", CollectorRegistry())  # each snippet: its own
            code = _CLUSTER_URL_RE.sub(cluster_url, _URL_RE.sub(redis_url, code))
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
