"""A password given to flask-redispool never shows up in anything it produces."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException, RedisError

from flask_redispool import RedisPool
from flask_redispool.testing import RedisServer, free_port

from .conftest import PASSWORD

# redis-py decodes the names of query arguments: each of these is a working password.
ENCODED_KEYS = ["%70assword", "pass%77ord", "%70%61%73%73%77%6F%72%64"]


def _outputs_of(app: Flask, redis_pool: RedisPool) -> list[str]:
    with app.app_context():
        client = redis_pool.client
        client.set("k", "v")
        with redis_pool.pipeline() as pipe, redis_pool.connection() as connection:
            seen = [repr(pipe), repr(connection), repr(client.pubsub())]
        with redis_pool.blocking(1) as pinned:
            seen.append(repr(pinned))
        seen += [repr(client), repr(redis_pool.get_pool()), repr(redis_pool.settings()), str(redis_pool.stats())]
        seen += [str(redis_pool.report()), str(redis_pool.health())]
        seen.append(repr(app.extensions))  # our per-app state: settings, pool, prepared client

    async def async_view() -> str:
        client = redis_pool.async_client
        await client.set("k", "v")
        return f"{client!r} {client.pipeline()!r} {client.connection_pool!r}"

    with app.app_context():  # run as Flask runs an async view, on this thread's loop
        seen.append(app.ensure_sync(async_view)())
    runner = app.test_cli_runner()
    for args in (["redis-stats"], ["redis-stats", "--json"], ["redis-ping"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        seen.append(result.output)
    return [*seen, repr(redis_pool)]


@pytest.mark.parametrize(
    "config",
    [
        {"REDIS_URL": "redis://:{password}@127.0.0.1:{port}/0"},
        {"REDIS_URL": "redis://default:{password}@127.0.0.1:{port}/0"},
        {"REDIS_URL": "redis://127.0.0.1:{port}/0", "REDIS_OPTIONS": {"password": "{password}"}},
        {"REDIS_URL": "redis://127.0.0.1:{port}/0?password={password}"},
        *({"REDIS_URL": f"redis://127.0.0.1:{{port}}/0?db=0&{key}={{password}}"} for key in ENCODED_KEYS),
    ],
)
def test_password_is_never_shown(
    make_app: Callable[..., Flask],
    auth_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, object],
) -> None:
    def fill(value: object) -> object:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return str(value).format(password=PASSWORD, port=auth_server.port)

    caplog.set_level(logging.DEBUG)
    app = make_app(**{key: fill(value) for key, value in config.items()})
    redis_pool = RedisPool(app)
    outputs = _outputs_of(app, redis_pool)
    outputs += [record.getMessage() for record in caplog.records]
    assert all(PASSWORD not in text for text in outputs)
    assert any("***" in text for text in outputs) == ("{password}" in str(config["REDIS_URL"]))


@pytest.mark.parametrize(
    "url", ["redis://:{password}@{address}/0", *(f"redis://{{address}}/0?{key}={{password}}" for key in ENCODED_KEYS)]
)
def test_errors_for_a_wrong_password_or_a_dead_server_hide_it(
    make_app: Callable[..., Flask], auth_server: RedisServer, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = make_app(REDIS_URL=url.format(password=f"wrong-{PASSWORD}", address=f"127.0.0.1:{auth_server.port}"))
    dead = make_app(REDIS_URL=url.format(password=PASSWORD, address=f"127.0.0.1:{free_port()}"))
    texts = []
    for app in (wrong, dead):
        redis_pool = RedisPool(app)
        with app.app_context(), pytest.raises(RedisError) as info:
            redis_pool.client.ping()
        texts += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]  # and notes
        health = redis_pool.health(app)
        assert not health["ok"]
        texts.append(str(health["error"]))
        for args in (["redis-stats"], ["redis-ping"]):
            result = app.test_cli_runner().invoke(args=args)
            assert result.exit_code == 1
            texts.append(result.output)
    assert "invalid" in texts[0].lower() or "auth" in texts[0].lower()
    texts += [record.getMessage() for record in caplog.records]
    assert all(PASSWORD not in text for text in texts)


def test_an_acl_user_with_restricted_commands(make_app: Callable[..., Flask], own_server: RedisServer) -> None:
    admin = Redis.from_url(own_server.url)
    admin.acl_setuser(
        "web",
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=["app:*"],
        # All of CLIENT is in @connection: keep what a connection needs, refuse CLIENT LIST.
        commands=["+@read", "+@write", "+@connection", "-client", "+client|setname", "+client|getname"],
    )
    app = make_app(REDIS_URL=f"redis://web:{PASSWORD}@127.0.0.1:{own_server.port}/0")
    redis_pool = RedisPool(app)
    with app.app_context():
        client = redis_pool.client
        assert client.incr("app:hits") == 1
        assert str(client.client_getname()).startswith(app.import_name + ":")
        with pytest.raises(NoPermissionError):
            client.get("other:key")
        with pytest.raises(NoPermissionError):
            client.config_get("maxmemory")  # @admin: not granted
    runner = app.test_cli_runner()
    ping = runner.invoke(args=["redis-ping"])
    assert ping.exit_code == 0, ping.output
    assert ping.output.endswith("Redis ? (INFO not permitted)\n")
    stats = runner.invoke(args=["redis-stats", "--json"])
    assert stats.exit_code == 0, stats.output
    (report,) = json.loads(stats.output)["pools"]
    assert [row["server_connections"] for row in report["processes"]] == []  # nothing published, no CLIENT LIST
    assert report["totals"]["server_connections"] is None
    assert "permission" in report["server_error"].lower()
    assert all(PASSWORD not in text for text in (ping.output, stats.output))
    assert redis_pool.stats(app)["in_use"] == 0
    admin.close()


def test_a_wrong_acl_password_is_a_clear_error(make_app: Callable[..., Flask], own_server: RedisServer) -> None:
    admin = Redis.from_url(own_server.url)
    admin.acl_setuser("web", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], commands=["+@all"])
    app = make_app(REDIS_URL=f"redis://web:not-{PASSWORD}@127.0.0.1:{own_server.port}/0")
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(AuthenticationError) as info:
        redis_pool.client.ping()
    assert "invalid username-password pair" in str(info.value)
    assert PASSWORD not in str(info.value)
    result = app.test_cli_runner().invoke(args=["redis-ping"])
    assert result.exit_code == 1
    assert "invalid username-password pair" in result.output
    assert PASSWORD not in result.output
    assert redis_pool.stats(app)["in_use"] == 0
    admin.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:{password}@{hosts}/mymaster/0?password={password}",
        *(f"redis+sentinel://{{hosts}}/mymaster/0?{key}={{password}}" for key in ENCODED_KEYS),
        "redis+cluster://user:{password}@{hosts}",
        *(f"redis+cluster://{{hosts}}?{key}={{password}}" for key in ENCODED_KEYS),
    ],
)
def test_sentinel_and_cluster_urls_with_several_hosts_hide_it(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"  # nothing answers there
    app = make_app(REDIS_URL=url.format(password=PASSWORD, hosts=hosts))
    redis_pool = RedisPool(app)
    texts = [repr(redis_pool), repr(redis_pool.settings(app)), str(redis_pool.stats(app)), repr(app.extensions)]
    cluster = url.startswith("redis+cluster")

    def ping() -> object:
        return (redis_pool.cluster_client if cluster else redis_pool.client).ping()

    with app.app_context():
        if not cluster:
            texts.append(repr(redis_pool.get_pool()))
        with pytest.raises((RedisError, RedisClusterException)) as info:
            ping()
    texts += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
    texts.append(str(redis_pool.health(app)["error"]))
    for args in (["redis-stats"], ["redis-stats", "--json"], ["redis-ping"]):
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code == 1
        texts.append(result.output)
    texts += [record.getMessage() for record in caplog.records]
    assert all(PASSWORD not in text for text in texts)
    assert "=***" in str(redis_pool.stats(app)) or ":***@" in str(redis_pool.stats(app))
