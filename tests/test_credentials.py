"""Rotating credentials (``CREDENTIAL_PROVIDER``) and a bounded connection age
(``MAX_CONNECTION_AGE``), against real servers: an ACL user whose password is rotated
under load, with no failed request and no connection left on the old password."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask
from redis import Redis
from redis.credentials import CredentialProvider

from flask_redispool import ConfigError, RedisPool
from flask_redispool._connection import AGE_JITTER, jittered_age
from flask_redispool._extension import app_states
from flask_redispool.testing import RedisServer

from .conftest import PASSWORD, pools_of, run_in_threads, wait_until

USER = "rotor"
OLD, NEW = "old-Pa55word-1", "new-Pa55word-2"
AGE = 0.5


class RotatingProvider(CredentialProvider):
    """A fake of a token service: hands out the current password, counting who got which."""

    def __init__(self, password: str = OLD) -> None:
        self.password = password
        self.handed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get_credentials(self) -> tuple[str, str]:
        with self._lock:
            self.handed[self.password] += 1
            return USER, self.password

    async def get_credentials_async(self) -> tuple[str, str]:
        return self.get_credentials()


def make_provider() -> RotatingProvider:
    """A factory, for the import-path form of the key."""
    return RotatingProvider()


SHARED_PROVIDER = RotatingProvider()


@pytest.fixture
def acl_server(own_server: RedisServer) -> Iterator[Redis]:
    """``own_server``'s admin client, with :data:`USER` on two passwords."""
    admin = Redis.from_url(own_server.url, socket_timeout=10)
    admin.execute_command("ACL", "SETUSER", USER, "on", f">{OLD}", f">{NEW}", "~*", "&*", "+@all")
    yield admin
    admin.close()


def rotating_app(make_app: Callable[..., Flask], server: RedisServer, provider: CredentialProvider) -> Flask:
    app = make_app(
        REDIS_URL=server.url,
        REDIS_CREDENTIAL_PROVIDER=provider,
        REDIS_MAX_CONNECTION_AGE=AGE,
        REDIS_STATS_INTERVAL=0,
    )
    redis_pool = RedisPool(app)

    @app.get("/hit")
    def hit() -> dict[str, int]:
        with redis_pool.client.pipeline(transaction=False) as pipe:  # one checkout: the id is the INCR's connection's
            pipe.client_id()
            pipe.incr("hits")
            connection_id, hits = pipe.execute()
        return {"id": connection_id, "hits": hits}

    @app.get("/async-hit")
    async def async_hit() -> dict[str, int]:
        async with redis_pool.async_client.pipeline(transaction=False) as pipe:
            pipe.client_id()
            pipe.incr("hits")
            connection_id, hits = await pipe.execute()
        return {"id": connection_id, "hits": hits}

    return app


@dataclass
class Load:
    """Requests of several threads: when each started, on which connection, and failures."""

    app: Flask
    path: str = "/hit"
    until: float = float("inf")
    limit: int = 20_000
    done: list[tuple[float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = self.app.test_client()
        while not self.stop.is_set() and time.monotonic() < self.until and len(self.done) < self.limit:
            started = time.monotonic()
            response = client.get(self.path)
            if response.status_code != 200:
                self.failures.append(response.get_data(as_text=True)[:200])
                continue
            self.done.append((started, int(response.get_json()["id"])))


@pytest.mark.parametrize("path", ["/hit", "/async-hit"])
def test_a_rotated_password_is_taken_up_within_the_age_and_no_request_fails(
    make_app: Callable[..., Flask], own_server: RedisServer, acl_server: Redis, path: str
) -> None:
    provider = RotatingProvider()
    app = rotating_app(make_app, own_server, provider)
    load = Load(app, path)
    threads = threading.Thread(target=run_in_threads, args=(load.run, 8))
    threads.start()
    try:
        wait_until(lambda: len(load.done) >= 200, 30, "requests on the old password")
        provider.password = NEW
        # A connection accepted from now on has a higher id than this one's: one with a lower
        # id was opened before the switch, and may hold the old password.
        with Redis.from_url(own_server.url) as fresh:
            switch_id = int(fresh.client_id())
        switched = time.monotonic()
        acl_server.execute_command("ACL", "SETUSER", USER, f"<{OLD}")  # the old password stops working
        load.until = switched + AGE + 1.5
    finally:
        threads.join(60)
        load.stop.set()
    assert not threads.is_alive()
    assert load.failures == []
    old_use = [started - switched for started, connection_id in load.done if connection_id < switch_id]
    later = [started for started, _ in load.done if started > switched + AGE + 0.5]
    assert old_use  # both sides of the bound were seen
    assert later
    # A connection checked out before its deadline (at most AGE after it connected, before
    # the switch) serves that one request; none is checked out later. 0.5 s for a
    # handshake that ended after the switch on a busy machine.
    assert max(old_use) <= AGE + 0.5, f"a connection on the old password served {max(old_use):.2f} s after the switch"
    assert not [entry for entry in acl_server.acl_log() if entry.get("reason") == "auth"]  # none tried it since
    assert provider.handed[NEW] > 0


def test_a_connection_is_replaced_at_its_first_checkout_past_its_age_not_before(
    make_app: Callable[..., Flask], own_server: RedisServer, acl_server: Redis
) -> None:
    app = rotating_app(make_app, own_server, RotatingProvider())
    client = app.test_client()
    first = client.get("/hit").get_json()["id"]
    connected = time.monotonic()
    replaced = wait_until(
        lambda: (client.get("/hit").get_json()["id"] != first) and time.monotonic(), 10 * AGE, "a new connection"
    )
    assert replaced - connected >= (1 - AGE_JITTER) * AGE
    (connection,) = pools_of(app).primary._made
    assert connection.connected_at is not None
    assert connection.connected_at >= connected


def test_a_connection_in_a_transaction_is_not_cut_past_its_age(
    make_app: Callable[..., Flask], own_server: RedisServer, acl_server: Redis
) -> None:
    app = rotating_app(make_app, own_server, RotatingProvider())
    state = app_states(app)[0]
    with app.app_context(), state.client.pipeline() as pipe:
        pipe.watch("k")
        held = pipe.client_id()
        past = time.monotonic() + AGE
        wait_until(lambda: time.monotonic() > past, 10 * AGE, "the connection's age to pass")
        assert pipe.client_id() == held  # sent on the same connection, still watching
        pipe.multi()
        pipe.set("k", "v")
        assert pipe.execute() == [True]
    with app.app_context():
        assert state.client.client_id() != held  # given back past its age: replaced


def test_jittered_age_stays_within_its_bound_and_spreads() -> None:
    assert jittered_age(10.0, lambda: 0.0) == 10.0
    assert jittered_age(10.0, lambda: 0.999999) > 10.0 * (1 - AGE_JITTER)
    draws = [jittered_age(10.0, random.Random(seed).random) for seed in range(1000)]
    assert all(10.0 * (1 - AGE_JITTER) < age <= 10.0 for age in draws)
    assert max(draws) - min(draws) > 0.9  # the deadlines spread over the window, not one instant


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis+sentinel://localhost:26379/mymaster/0",
        "redis+cluster://localhost:7000",
    ],
)
def test_the_provider_reaches_every_topologys_connections_sync_and_async(
    make_app: Callable[..., Flask], url: str
) -> None:
    provider = RotatingProvider()
    app = make_app(REDIS_URL=url, REDIS_CREDENTIAL_PROVIDER=provider)
    RedisPool(app)
    topology = app_states(app)[0].topology
    if url.startswith("redis+cluster"):
        options = [topology._node_options, topology._options]  # type: ignore[attr-defined]
    else:
        options = [pool.connection_options for pool in topology.pools.pools]
        options.append(topology._async_kwargs)  # type: ignore[attr-defined]
    assert all(option["credential_provider"] is provider for option in options)
    assert provider.handed == Counter()  # asked at connect time only


@pytest.mark.parametrize(
    "given",
    [f"{__name__}:SHARED_PROVIDER", f"{__name__}.SHARED_PROVIDER", f"{__name__}:make_provider"],
)
def test_the_provider_may_be_named_by_its_import_path(make_app: Callable[..., Flask], given: str) -> None:
    app = make_app(REDIS_URL="redis://localhost:6379/0", REDIS_CREDENTIAL_PROVIDER=given)
    provider = RedisPool(app).settings(app).credential_provider
    assert isinstance(provider, RotatingProvider)
    assert (provider is SHARED_PROVIDER) == given.endswith("SHARED_PROVIDER")


PROVIDER_MUST = (
    "REDIS_CREDENTIAL_PROVIDER must be a redis.credentials.CredentialProvider, or the import path "
    "('package.module:name') of one or of a function that takes no argument and returns one"
)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"REDIS_CREDENTIAL_PROVIDER": 42}, PROVIDER_MUST + ", got a int"),
        ({"REDIS_CREDENTIAL_PROVIDER": ("user", PASSWORD)}, PROVIDER_MUST + ", got a tuple"),
        (
            {"REDIS_CREDENTIAL_PROVIDER": "no_such_module:provider"},
            PROVIDER_MUST + "; importing it failed (ModuleNotFoundError), got ***",
        ),
        (
            {"REDIS_CREDENTIAL_PROVIDER": f"{__name__}:nothing"},
            PROVIDER_MUST + "; importing it failed (AttributeError)",
        ),
        (
            {"REDIS_CREDENTIAL_PROVIDER": PASSWORD},
            PROVIDER_MUST + "; it is not of that form, got ***",
        ),
        ({"REDIS_CREDENTIAL_PROVIDER": f"{__name__}:USER"}, PROVIDER_MUST + "; it names a str"),
        (
            {"REDIS_CREDENTIAL_PROVIDER": f"{__name__}:rotating_app"},
            PROVIDER_MUST + "; calling what it names raised TypeError",
        ),
        (
            {"REDIS_MAX_CONNECTION_AGE": -1},
            "REDIS_MAX_CONNECTION_AGE must be None (off) or a number of seconds > 0 and <= 86400, got -1 (int)",
        ),
        ({"REDIS_MAX_CONNECTION_AGE": 0}, "REDIS_MAX_CONNECTION_AGE must be None (off) or a number of seconds > 0"),
        (
            {"REDIS_MAX_CONNECTION_AGE": "soon"},
            "REDIS_MAX_CONNECTION_AGE must be None (off) or a number of seconds > 0",
        ),
        (
            {"REDIS_URL": f"redis://{USER}:{PASSWORD}@localhost/0", "REDIS_CREDENTIAL_PROVIDER": SHARED_PROVIDER},
            f"REDIS_CREDENTIAL_PROVIDER gives the credentials, but REDIS_URL (redis://{USER}:***@localhost/0) or "
            "REDIS_OPTIONS gives a username and a password too: remove them (redis://host:port/db), or leave "
            "REDIS_CREDENTIAL_PROVIDER unset.",
        ),
        (
            {"REDIS_OPTIONS": {"password": PASSWORD}, "REDIS_CREDENTIAL_PROVIDER": SHARED_PROVIDER},
            "REDIS_CREDENTIAL_PROVIDER gives the credentials, but REDIS_URL (redis://localhost:6379/0) or "
            "REDIS_OPTIONS gives a password too",
        ),
        (
            {
                "REDIS_URL": f"redis+sentinel://:{PASSWORD}@localhost/mymaster",
                "REDIS_CREDENTIAL_PROVIDER": SHARED_PROVIDER,
            },
            "REDIS_CREDENTIAL_PROVIDER gives the credentials, but REDIS_URL (redis+sentinel://:***@localhost/mymaster)",
        ),
        (
            {"REDIS_URL": f"redis+cluster://:{PASSWORD}@localhost:7000", "REDIS_CREDENTIAL_PROVIDER": SHARED_PROVIDER},
            "REDIS_CREDENTIAL_PROVIDER gives the credentials, but REDIS_URL (redis+cluster://:***@localhost:7000)",
        ),
        (
            {"REDIS_OPTIONS": {"credential_provider": SHARED_PROVIDER}},
            "REDIS_OPTIONS['credential_provider'] conflicts with REDIS_CREDENTIAL_PROVIDER",
        ),
    ],
)
def test_config_errors_name_the_key_and_never_show_a_secret(
    make_app: Callable[..., Flask], config: dict[str, object], message: str
) -> None:
    app = make_app(**{"REDIS_URL": "redis://localhost:6379/0", **config})
    with pytest.raises(ConfigError) as info:
        RedisPool(app)
    assert str(info.value).startswith(message)
    assert PASSWORD not in str(info.value)


def test_the_provider_is_not_in_the_settings_repr(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL="redis://localhost:6379/0", REDIS_CREDENTIAL_PROVIDER=SHARED_PROVIDER)
    settings = RedisPool(app).settings(app)
    assert "credential_provider" not in repr(settings)
    assert "max_connection_age=None" in repr(settings)
