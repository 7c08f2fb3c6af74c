"""Sphinx configuration. The config reference and the CLI help are generated from
the package itself at build time, so the docs cannot drift from the code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import flask_redispool  # noqa: E402

project = "flask-redispool"
copyright = "2026, the flask-redispool authors"
release = version = flask_redispool.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "myst_parser", "pallets_sphinx_themes"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build", "_generated", "_inventories"]
html_theme = "flask"
html_static_path = ["_static"]
html_css_files = ["fit.css"]  # long table cells and messages wrap at 1280 px
html_title = f"flask-redispool {version}"
# Each project's own inventory first; without a network, the copies in _inventories/
# (made by building those projects' docs), so the links resolve offline too.
intersphinx_mapping: dict[str, Any] = {
    "flask": ("https://flask.palletsprojects.com/en/stable/", (None, "_inventories/flask.inv")),
    "redis": ("https://redis.readthedocs.io/en/stable/", (None, "_inventories/redis.inv")),
}
nitpicky = False
suppress_warnings = ["myst.header"]  # CHANGES.md, included under the page title, starts at "##"


def _config_table() -> str:
    from flask_redispool._config import CONFIG_KEYS, REQUIRED

    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 28 14 58",
        "",
        "   * - Key",
        "     - Default",
        "     - Meaning",
    ]
    for key in CONFIG_KEYS:
        default = "*required*" if key.default is REQUIRED else f"``{key.default!r}``"
        if key.name == "CLIENT_NAME":
            default = "*from the app*"
        lines += [f"   * - ``REDIS_{key.name}``", f"     - {default}", f"     - {key.doc} Takes {key.accepts}."]
    return "\n".join(lines) + "\n"


def _cli_help() -> str:
    from flask import Flask

    from flask_redispool import RedisPool

    app = Flask("yourapp")
    app.config["REDIS_URL"] = "fakeredis://"
    RedisPool(app)
    runner = app.test_cli_runner()
    parts = []
    for command in ("redis-stats", "redis-ping"):
        output = runner.invoke(args=[command, "--help"], prog_name="flask").output
        parts += [f"``flask {command} --help``:", "", ".. code-block:: text", ""]
        parts += ["   " + line if line else "" for line in output.splitlines()] + [""]
    return "\n".join(parts)


def _generate(_app: object) -> None:
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    (out / "config_keys.rst").write_text(_config_table())
    (out / "cli_help.rst").write_text(_cli_help())


def setup(app: Any) -> None:
    app.connect("builder-inited", _generate)
