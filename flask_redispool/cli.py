"""``flask redis-stats`` and ``flask redis-ping``, registered by ``init_app``.

A ``flask`` command runs in a process of its own, so its pool says little about the
serving workers. ``redis-stats`` therefore also asks the server: ``CLIENT LIST``
entries named ``<client name>:<host>:<pid>`` show what every process holds.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from redis.exceptions import RedisError, ResponseError

from .extension import AppState, app_states
from .health import check_health
from .stats import PoolStats, ProcessConnections, group_client_list

__all__ = ["ping_command", "register_commands", "stats_command"]


class PoolReport(TypedDict):
    """One pool in ``flask redis-stats --json``."""

    pool: PoolStats
    server: list[ProcessConnections] | None
    server_error: str | None


def register_commands(app: Flask) -> None:
    """Add the commands to ``app.cli`` (once, however many prefixes the app has)."""
    for command in (stats_command, ping_command):
        if command.name not in app.cli.commands:
            app.cli.add_command(command)


def _unreachable(state: AppState, reason: object) -> click.ClickException:
    settings = state.settings
    return click.ClickException(f"Redis for {settings.key('URL')} ({settings.redacted_url}) is unreachable: {reason}")


def _report(state: AppState) -> PoolReport:
    try:
        clients: list[dict[str, Any]] = state.client.client_list()
    except ResponseError as exc:  # e.g. CLIENT not allowed for this ACL user
        return PoolReport(pool=state.pool.snapshot(), server=None, server_error=str(exc))
    except RedisError as exc:
        raise _unreachable(state, exc) from None
    server = group_client_list(clients, state.settings.client_name)
    return PoolReport(pool=state.pool.snapshot(), server=server, server_error=None)


def _format(report: PoolReport) -> list[str]:
    pool = report["pool"]
    lines = [
        f"{pool['prefix']}  {pool['url']}  client name {pool['client_name']!r}",
        f"  settings      max_connections={pool['max_connections']} blocking={pool['blocking']} "
        f"pool_timeout={pool['pool_timeout']:g}s socket_timeout={pool['socket_timeout']:g}s "
        f"retries={pool['retries']} worst_case={pool['worst_case_seconds']:g}s",
        f"  this process  pid={pool['pid']} created={pool['created']} in_use={pool['in_use']} "
        f"idle={pool['idle']} peak_in_use={pool['peak_in_use']} checkouts={pool['checkouts']} "
        f"waits={pool['waits']} timeouts={pool['timeouts']}",
    ]
    if report["server"] is None:
        lines.append(f"  server view unavailable: {report['server_error']}")
        return lines
    lines.append(f"  {'HOST':<24} {'PID':>8} {'CONNECTIONS':>12} {'IDLE s (min-max)':>17}")
    for proc in report["server"]:
        mark = "  (this command)" if proc["this_process"] else ""
        idle = f"{proc['idle_min']}-{proc['idle_max']}"
        lines.append(f"  {proc['host']:<24} {proc['pid']:>8} {proc['connections']:>12} {idle:>17}{mark}")
    total = sum(p["connections"] for p in report["server"])
    lines.append(f"  total: {total} connection(s) in {len(report['server'])} process(es)")
    return lines


@click.command("redis-stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@with_appcontext
def stats_command(as_json: bool) -> None:
    """Show each Redis pool's settings and counters, and the connections the server
    sees from every process of this app (grouped by host and pid)."""
    reports = [_report(state) for state in app_states(current_app)]
    if as_json:
        click.echo(json.dumps({"pools": reports}, indent=2))
        return
    click.echo("\n\n".join("\n".join(_format(report)) for report in reports))


@click.command("redis-ping")
@with_appcontext
def ping_command() -> None:
    """Ping each Redis server of this app; exit 1 if one is unreachable."""
    for state in app_states(current_app):
        health = check_health(state.client, state.pool)
        settings = state.settings
        if not health["ok"]:
            raise _unreachable(state, health["error"])
        click.echo(
            f"{settings.prefix}  {settings.redacted_url}  PONG in {health['latency_ms']:.2f} ms, "
            f"Redis {health['server_version']}"
        )
