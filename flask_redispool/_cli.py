"""``flask redis-stats`` and ``flask redis-ping``, registered by ``init_app``.

A ``flask`` command runs in a process of its own, so its pool says little about the
serving workers. ``redis-stats`` therefore reads what the workers publish (see
:mod:`flask_redispool._snapshots`) and asks the server: ``CLIENT LIST`` entries named
``<client name>:<host>:<pid>`` show what every process holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
from flask.cli import ScriptInfo

from ._advice import PoolAdvice, Thresholds, build_advice, format_advice
from ._errors import REDIS_ERRORS
from ._health import failure_message, probe
from ._snapshots import build_report
from ._state import AppState, app_states
from ._stats import FIGURES, PoolFigures, PoolReport

if TYPE_CHECKING:
    from ._state import App

__all__ = ["ping_command", "register_commands", "stats_command"]


def register_commands(app: App) -> None:
    """Add the commands to ``app.cli`` (once, however many prefixes the app has)."""
    for command in (stats_command, ping_command):
        if command.name not in app.cli.commands:
            app.cli.add_command(command)


def _command_app() -> App:
    """The app of the running ``flask`` (or ``quart``) command: ``load_app()`` of the
    ``ScriptInfo`` that the command line put in the click context.

    The commands need no app context, so the same ones serve Flask and Quart apps. Run
    without either command line, they find the app as Flask's ``pass_script_info``
    does (``--app``, ``FLASK_APP`` or ``app.py``).
    """
    ctx = click.get_current_context()
    info = ctx.find_object(ScriptInfo) or _quart_script_info(ctx) or ctx.ensure_object(ScriptInfo)
    app: App = info.load_app()
    return app


def _quart_script_info(ctx: click.Context) -> Any:
    """The ``quart`` command line's ``ScriptInfo``, if it runs this command (Quart is optional)."""
    try:
        from quart.cli import ScriptInfo as QuartScriptInfo
    except ImportError:  # pragma: no cover - Quart is not installed
        return None
    return ctx.find_object(QuartScriptInfo)


def _not_a_server(app: App) -> None:
    """A command is not a serving process: it publishes no snapshot of its pools."""
    for state in app_states(app):
        state.pools.publisher.stop()


#: What a command reads from Redis: a report, or advice.
Read = TypeVar("Read", PoolReport, PoolAdvice)


def _report(state: AppState) -> PoolReport:
    return _read(state, lambda: build_report(state.reader(), state.pools), "its client list")


def _read(state: AppState, build: Callable[[], Read], server_part: str) -> Read:
    """What ``build()`` read from Redis (a report or advice), or the command's error: Redis
    failed, or showed neither the snapshots nor ``server_part``."""
    try:
        read = build()
    except REDIS_ERRORS as exc:
        raise click.ClickException(failure_message(state.settings, exc)) from None
    if read["snapshots_error"] and read["server_error"]:
        settings = state.settings
        raise click.ClickException(
            f"Redis for {settings.key('URL')} ({settings.redacted_url}) showed neither the published "
            f"snapshots ({read['snapshots_error']}) nor {server_part} ({read['server_error']})."
        )
    return read


#: (title, row key, width): the process, its snapshot's figures, then what is not in a snapshot.
_COLUMNS: Final[tuple[tuple[str, str, int], ...]] = (
    ("HOST", "host", 20),
    ("PID", "pid", 8),
    *((figure.column, figure.name, figure.width) for figure in FIGURES if figure.column),
    ("AGE", "snapshot_age", 7),
    ("SERVER", "server_connections", 7),
)


def _cell(value: object, name: str, width: int) -> str:
    if value is None:
        text = "-"
    elif name == "snapshot_age" and isinstance(value, float):
        text = f"{value:.1f}s"
    else:
        text = str(value)
    return f"{text:<{width}}" if name == "host" else f"{text:>{width}}"


def _format(report: PoolReport) -> list[str]:
    pool = report["pool"]
    lines = [
        f"{pool['prefix']}  {pool['url']}  client name {pool['client_name']!r}",
        f"  max_connections={pool['max_connections']} blocking={pool['blocking']} "
        f"pool_timeout={pool['pool_timeout']:g}s socket_timeout={pool['socket_timeout']:g}s "
        f"retries={pool['retries']} worst_case={pool['worst_case_seconds']:g}s "
        f"stats_interval={report['stats_interval']:g}s",
        "  " + " ".join(_cell(title, name, width) for title, name, width in _COLUMNS),
    ]
    for row in report["processes"]:
        mark = "  (this command)" if row["this_process"] else ""
        lines.append("  " + " ".join(_cell(row[name], name, width) for _, name, width in _COLUMNS) + mark)  # type: ignore[literal-required]
        if len(row["pools"]) > 1:  # a Sentinel service's master and replicas: each apart
            lines += [_pool_line(pool) for pool in row["pools"]]
    totals = report["totals"]
    total_row = {**totals, "host": "total", "pid": f"{totals['processes']} proc"}  # no sum of peaks or loops
    lines.append("  " + " ".join(_cell(total_row.get(name), name, width) for _, name, width in _COLUMNS))
    for row in report["processes"]:
        if row["suspect"]:
            lines.append(f"  leak suspect: {row['host']} pid {row['pid']}: {row['suspect']}")
    for part, error in (("snapshots", report["snapshots_error"]), ("server view", report["server_error"])):
        if error:
            lines.append(f"  {part} unavailable: {error}")
    if report["snapshots_skipped"]:
        lines.append(f"  {report['snapshots_skipped']} malformed snapshot(s) skipped")
    return lines


def _pool_line(pool: PoolFigures) -> str:
    where = pool["address"] or "-"
    counts = " ".join(f"{name}={pool[name]}" for name in _POOL_FIGURES)
    return f"    {pool['role']:<8} {where:<22} {counts}"


#: What a process's line per pool shows.
_POOL_FIGURES: Final = ("in_use", "idle", "created", "max_connections", "checkouts", "waits", "timeouts")


def _advice(state: AppState, thresholds: Thresholds) -> PoolAdvice:
    return _read(state, lambda: build_advice(state.reader(), state.pools, thresholds), "its clients")


def _render(app: App, as_json: bool, compact: bool = False, advise: Thresholds | None = None) -> str:
    states = app_states(app)
    parts: list[PoolReport] | list[PoolAdvice]
    if advise is None:
        parts = reports = [_report(state) for state in states]
        lines = [_format(report) for report in reports]
    else:
        parts = advice = [_advice(state, advise) for state in states]
        lines = [format_advice(one) for one in advice]
    if as_json:
        return json.dumps({"pools": parts}, indent=None if compact else 2)
    return "\n\n".join("\n".join(part) for part in lines)


@click.command("redis-stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl-C (with --json: one JSON document per line).",
)
@click.option(
    "--advise",
    is_flag=True,
    help="Say what to set REDIS_MAX_CONNECTIONS to, from the workers' peaks, waits and the servers' maxclients.",
)
@click.option(
    "--min-window",
    type=click.FloatRange(min=0),
    default=Thresholds.min_window,
    show_default=True,
    metavar="SECONDS",
    help="With --advise: how long a worker must have counted before a pool is called too large.",
)
@click.option(
    "--min-checkouts",
    type=click.IntRange(min=0),
    default=Thresholds.min_checkouts,
    show_default=True,
    metavar="COUNT",
    help="With --advise: how many checkouts the workers must have counted before a pool is called too large.",
)
def stats_command(as_json: bool, watch: float | None, advise: bool, min_window: float, min_checkouts: int) -> None:
    """Show every process's Redis connections: the pool counters each serving process
    publishes (REDIS_STATS_INTERVAL), and the connections the server sees from it.

    Flags leak suspects: processes holding more connections than their pool allows, or
    holding connections without publishing fresh snapshots. With --advise, says what to
    set REDIS_MAX_CONNECTIONS to instead, showing the arithmetic."""
    app = _command_app()
    _not_a_server(app)
    thresholds = Thresholds(min_window=min_window, min_checkouts=min_checkouts) if advise else None
    if watch is None:
        click.echo(_render(app, as_json, advise=thresholds))
        return
    try:
        while True:
            try:
                frame = _render(app, as_json, compact=True, advise=thresholds)
            except click.ClickException as exc:  # Redis down for now: keep watching
                frame = f"Error: {exc.format_message()}"
            if not as_json:
                click.clear()
                frame = f"{time.strftime('%H:%M:%S')}  every {watch:g}s, Ctrl-C to stop\n\n{frame}"
            click.echo(frame)
            time.sleep(watch)
    except KeyboardInterrupt:
        return


@click.command("redis-ping")
def ping_command() -> None:
    """Ping each Redis server of this app; exit 1 if one is unreachable."""
    app = _command_app()
    _not_a_server(app)
    for state in app_states(app):
        health, failure = probe(state.pools)
        settings = state.settings
        if failure is not None:
            raise click.ClickException(failure_message(settings, failure))
        click.echo(
            f"{settings.prefix}  {settings.redacted_url}  PONG in {health['latency_ms']:.2f} ms, "
            f"{'Valkey' if health['server'] == 'valkey' else 'Redis'} {health['server_version']}"
        )
