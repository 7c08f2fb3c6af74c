"""docs/troubleshooting.rst quotes the messages users meet as the code writes them: each
case here makes one happen, against a real server where it takes one, and finds it on
the page. The case's own URL, ports and app name are first written as the page's
(``redis://localhost:6379/0``, app ``shop``); whitespace is compared collapsed, since the
page wraps long messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from flask_redispool import ConfigWarning, RedisPool
from flask_redispool.testing import RedisServer, free_port

from .conftest import PASSWORD, SentinelService, close_pools
from .test_errors import writes_paused
from .test_failover import tell_of_a_switch_to_a_replica
from .test_retry import SLOW_INCR, SLOW_READ, SOCKET_TIMEOUT

PAGE = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.rst"
PAGE_URL = "redis://localhost:6379/0"
#: What a server that wants a password answers redis-py 8's HELLO without one.
HELLO_REFUSED = (
    "HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> "
    "option can be used to authenticate the client and select the RESP protocol version at the same time"
)


class Case:
    """What a case gets: an app factory, and the servers it asks for."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.urls: list[str] = []
        self.apps: list[Flask] = []

    def app(self, url: str | None = None, **config: Any) -> tuple[Flask, RedisPool]:
        """App ``shop`` on ``url`` (a fakeredis server when ``None``), with a pool."""
        app = Flask("shop")
        if url is not None and "127.0.0.1" in url:  # a server of the test's: written as the page's
            self.urls.append(url)
        app.config.update(REDIS_URL=url or "fakeredis://", REDIS_STATS_INTERVAL=0, **config)
        self.apps.append(app)
        return app, RedisPool(app)

    def server(self, fixture: str = "own_server") -> RedisServer:
        server: RedisServer = self.request.getfixturevalue(fixture)
        return server

    def as_on_the_page(self, text: str) -> str:
        for url in self.urls:  # none has credentials: the page's has none either
            text = text.replace(url, PAGE_URL).replace(urlsplit(url).netloc, "localhost:6379")
        text = re.sub(r"'shop:[^' ]*'", "'shop:web-1:4101'", text)  # a connection's name: host and pid
        return " ".join(text.split())


def shown(error: BaseException) -> str:
    """An error as a traceback's last line shows it, with its notes."""
    return " ".join([f"{type(error).__module__}.{type(error).__qualname__}: {error}", *getattr(error, "__notes__", [])])


def raised(run: Callable[[], object]) -> str:
    try:
        run()
    except Exception as exc:  # any error: the one shown
        return shown(exc)
    raise AssertionError("nothing was raised")


def missing_url(case: Case) -> str:
    app = Flask("shop")
    return raised(lambda: RedisPool(app))


def bad_value(case: Case) -> str:
    return raised(lambda: case.app(REDIS_MAX_CONNECTIONS=0))


def too_many_retries(case: Case) -> str:
    return raised(lambda: case.app(REDIS_RETRIES=100))


def bad_scheme(case: Case) -> str:
    return raised(lambda: case.app("http://localhost:6379/0"))


def option_of_a_key(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL, REDIS_OPTIONS={"socket_timeout": 3}))


def option_reserved(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL, REDIS_OPTIONS={"connection_pool": None}))


def query_of_a_key(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL + "?socket_timeout=3"))


def query_and_option(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL + "?socket_keepalive=true", REDIS_OPTIONS={"socket_keepalive": True}))


def tls_keys_without_tls(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL, REDIS_SSL_CERT_REQS="none"))


def sentinel_keys_without_sentinel(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL, REDIS_SENTINEL_USERNAME="watcher"))


def cluster_option_replaced(case: Case) -> str:
    url = "redis+cluster://localhost:7000,localhost:7001"
    return raised(lambda: case.app(url, REDIS_OPTIONS={"read_from_replicas": True}))


def client_cache_on_resp2(case: Case) -> str:
    return raised(lambda: case.app(PAGE_URL, REDIS_CLIENT_CACHE=True, REDIS_OPTIONS={"protocol": 2}))


def client_cache_refused(case: Case) -> str:
    """Valkey refuses redis-py's cache (on redis-py 7, init_app refuses the key first)."""
    server = case.server("valkey_server")
    return raised(lambda: _ping(*case.app(server.url, REDIS_CLIENT_CACHE=True)))


def near_miss(case: Case) -> str:
    with pytest.warns(ConfigWarning) as warned:
        case.app(REDIS_MAX_CONECTIONS=4)
    [warning] = warned
    return f"{ConfigWarning.__module__}.ConfigWarning: {warning.message}"


def pool_of_a_cluster(case: Case) -> str:
    app, redis_pool = case.app("redis+cluster://localhost:7000,localhost:7001")
    return raised(lambda: redis_pool.get_pool(app))


def pool_exhausted(case: Case) -> str:
    app, redis_pool = case.app(REDIS_MAX_CONNECTIONS=1, REDIS_POOL_TIMEOUT=0.1)
    with app.app_context(), redis_pool.connection():
        return raised(lambda: redis_pool.client.get("key"))


def unreachable(case: Case) -> str:
    app, redis_pool = case.app(f"redis://127.0.0.1:{free_port()}/0")
    with app.app_context():
        return raised(lambda: redis_pool.client.get("key"))


def _fail_until_open(app: Flask, redis_pool: RedisPool) -> str:
    """Commands on an unreachable server until the circuit breaker opens: the refusal."""
    with app.app_context():
        for _ in range(10):
            message = raised(lambda: redis_pool.client.get("key"))
    return re.sub(r"again in [0-9.]+ s", "again in 29.9 s", message)  # as long as the cooldown left


def circuit_open(case: Case) -> str:
    app, redis_pool = case.app(f"redis://127.0.0.1:{free_port()}/0", REDIS_CIRCUIT_BREAKER_COOLDOWN=30)
    return _fail_until_open(app, redis_pool)


def circuit_opened_warning(case: Case) -> str:
    app, redis_pool = case.app(f"redis://127.0.0.1:{free_port()}/0", REDIS_CIRCUIT_BREAKER_COOLDOWN=30)
    caplog: pytest.LogCaptureFixture = case.request.getfixturevalue("caplog")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_redispool"):
        _fail_until_open(app, redis_pool)
    [record] = [record for record in caplog.records if "circuit breaker is open" in record.getMessage()]
    return f"WARNING:flask_redispool:{record.getMessage()}"


def wrong_role(case: Case) -> str:
    """A master's pool told of a failover to a replica reaches that replica: the page's
    service is ``mymaster`` at ``localhost:26379``, the replica ``10.0.0.2:6379``."""
    service: SentinelService = case.request.getfixturevalue("sentinel_service")
    service.wait_ready(replicas=2)
    app, redis_pool = case.app(service.url, REDIS_CIRCUIT_BREAKER=False)
    case.urls.remove(service.url)  # not a server's URL: written as the page's below
    replica = tell_of_a_switch_to_a_replica(app, redis_pool, service)
    with app.app_context():
        message = raised(lambda: redis_pool.client.get("key"))
    sentinels = urlsplit(service.url).netloc
    return message.replace(sentinels, "localhost:26379").replace(f"127.0.0.1:{replica.port}", "10.0.0.2:6379")


def sentinels_down(case: Case) -> str:
    """``flask redis-ping`` with every sentinel of the service down: the page's sentinels
    are ``localhost:26379`` to ``26381``."""
    service: SentinelService = case.request.getfixturevalue("sentinel_service")
    service.wait_ready(replicas=2)
    app, _redis_pool = case.app(service.url)
    case.urls.remove(service.url)  # not a server's URL: written as the page's below
    for sentinel in service.sentinels:
        sentinel.kill()
    try:
        output = app.test_cli_runner().invoke(args=["redis-ping"]).output.strip()
    finally:
        for sentinel in service.sentinels:
            sentinel.start()
        service.wait_ready(replicas=2)
    for number, sentinel in enumerate(service.sentinels):
        output = output.replace(f"127.0.0.1:{sentinel.port}", f"localhost:{26379 + number}")
    return output


def read_timeout(message: str, address: str) -> str:
    """The page quotes redis-py 8.2's words for a read timeout, which name the server;
    redis-py before 8.2 says "from socket" (the page says so too)."""
    return message.replace("Timeout reading from socket", f"Timeout reading from {address}")


def no_answer(case: Case) -> str:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        app, redis_pool = case.app(f"redis://{address}/0", REDIS_RETRIES=0)
        with app.app_context():
            return read_timeout(raised(lambda: redis_pool.client.get("key")), address)


def credentials(case: Case) -> str:
    app, redis_pool = case.app(f"redis://127.0.0.1:{case.server('auth_server').port}/0")
    with app.app_context():
        message = raised(lambda: redis_pool.client.get("key"))
    # redis-py 7 speaks RESP2 unless told: no HELLO, so the refusal comes at the first command
    # in the server's other words, which the page mentions.
    return message.replace("AuthenticationError: Authentication required.", f"AuthenticationError: {HELLO_REFUSED}")


def may_have_run(case: Case) -> str:
    server = case.server()
    app, redis_pool = case.app(server.url, REDIS_SOCKET_TIMEOUT=SOCKET_TIMEOUT)
    with app.app_context():
        return read_timeout(
            raised(lambda: redis_pool.client.eval(SLOW_INCR, 1, "counter")), urlsplit(server.url).netloc
        )


def waiting_command_timed_out(case: Case) -> str:
    server = case.server()
    app, redis_pool = case.app(server.url, REDIS_RETRIES=0)
    with app.app_context():
        redis_pool.client.ping()
        with writes_paused(server.url):
            message = raised(lambda: redis_pool.client.blpop(["jobs"], timeout=0.4))
    return read_timeout(message, urlsplit(server.url).netloc)


def timed_out_in_blocking(case: Case) -> str:
    server = case.server()
    app, redis_pool = case.app(server.url, REDIS_RETRIES=0)
    with app.app_context(), redis_pool.blocking(1) as client:
        client.ping()
        with writes_paused(server.url):
            message = raised(lambda: client.blpop(["jobs"], timeout=1))
    return read_timeout(message, urlsplit(server.url).netloc)


def continued_a_transaction(case: Case) -> str:
    server = case.server()
    app, redis_pool = case.app(server.url, REDIS_SOCKET_TIMEOUT=SOCKET_TIMEOUT)
    with app.app_context():
        client = redis_pool.client.client()
        client.execute_command("MULTI")
        client.execute_command("EVAL_RO", SLOW_READ, 0)
        return read_timeout(raised(lambda: client.execute_command("EXEC")), urlsplit(server.url).netloc)


def blocking_command(case: Case) -> str:
    app, redis_pool = case.app()
    with app.app_context():
        return raised(lambda: redis_pool.client.blpop(["jobs"], timeout=0))


def outside_a_context(case: Case) -> str:
    _app, redis_pool = case.app()
    return raised(lambda: redis_pool.client)


def not_registered(case: Case) -> str:
    app, _redis_pool = case.app()
    with app.app_context():
        return raised(lambda: RedisPool().client)


def registered_twice(case: Case) -> str:
    app, redis_pool = case.app()
    return raised(lambda: redis_pool.init_app(app))


def closed(case: Case) -> str:
    app, redis_pool = case.app()
    redis_pool.close(app)
    with app.app_context():
        return raised(lambda: redis_pool.client)


def async_outside_a_loop(case: Case) -> str:
    app, redis_pool = case.app()
    with app.app_context():
        return raised(lambda: redis_pool.async_client)


def cluster_client_on_one_server(case: Case) -> str:
    app, redis_pool = case.app(PAGE_URL)
    with app.app_context():
        return raised(lambda: redis_pool.cluster_client)


def client_on_a_cluster(case: Case) -> str:
    app, redis_pool = case.app("redis+cluster://localhost:7000,localhost:7001")
    with app.app_context():
        return raised(lambda: redis_pool.client.get("key"))


def async_on_another_loop(case: Case) -> str:
    app, redis_pool = case.app()

    async def elsewhere() -> object:
        return redis_pool.async_client

    with app.app_context():
        return raised(lambda: asyncio.run(elsewhere()))


def bad_prefix(case: Case) -> str:
    return raised(lambda: RedisPool(config_prefix="redis"))


def naming_refused(case: Case) -> str:
    start_server: Callable[..., RedisServer] = case.request.getfixturevalue("start_server")
    app, redis_pool = case.app(start_server("--rename-command", "CLIENT", '""').url)
    return logged(case, lambda: _ping(app, redis_pool))


def settings_changed(case: Case) -> str:
    app, redis_pool = case.app(case.server().url)
    redis_pool.get_pool(app).connection_kwargs["socket_timeout"] = 415  # as RQ's Worker does
    return logged(case, lambda: _ping(app, redis_pool))


def rename_kept(case: Case) -> str:
    app, redis_pool = case.app()
    return logged(case, lambda: redis_pool.get_client(app).client_setname("rq:worker:4f2a"))


def _ping(app: Flask, redis_pool: RedisPool) -> None:
    with app.app_context():
        redis_pool.client.ping()


def logged(case: Case, run: Callable[[], object]) -> str:
    caplog: pytest.LogCaptureFixture = case.request.getfixturevalue("caplog")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_redispool"):
        run()
    [record] = caplog.records
    return f"WARNING:flask_redispool:{record.getMessage()}"


CASES: list[Callable[[Case], str]] = [
    missing_url,
    bad_value,
    too_many_retries,
    bad_scheme,
    bad_prefix,
    option_of_a_key,
    option_reserved,
    query_of_a_key,
    query_and_option,
    tls_keys_without_tls,
    sentinel_keys_without_sentinel,
    cluster_option_replaced,
    client_cache_on_resp2,
    near_miss,
    registered_twice,
    pool_exhausted,
    client_cache_refused,
    unreachable,
    circuit_open,
    wrong_role,
    sentinels_down,
    no_answer,
    credentials,
    may_have_run,
    waiting_command_timed_out,
    timed_out_in_blocking,
    continued_a_transaction,
    blocking_command,
    outside_a_context,
    not_registered,
    closed,
    async_outside_a_loop,
    async_on_another_loop,
    cluster_client_on_one_server,
    client_on_a_cluster,
    pool_of_a_cluster,
    naming_refused,
    settings_changed,
    rename_kept,
    circuit_opened_warning,
]


@pytest.fixture
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    made = Case(request)
    yield made
    for app in made.apps:
        close_pools(app)


@pytest.mark.parametrize("make", CASES, ids=lambda make: make.__name__)
def test_the_page_quotes_the_message(case: Case, make: Callable[[Case], str]) -> None:
    message = case.as_on_the_page(make(case))
    assert PASSWORD not in message
    assert message in " ".join(PAGE.read_text().split()), f"not on {PAGE.name}:\n{message}"
