"""The URL parser (``_url.parse_url``) reads what redis-py's ``parse_url`` reads, for every
form the package accepts, and its errors never show a value."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from redis import SSLConnection, UnixDomainSocketConnection
from redis.connection import parse_url as redis_parse_url
from redis.exceptions import ConnectionError, TimeoutError

from flask_redispool import RedisPool
from flask_redispool._url import parse_url

from .conftest import PASSWORD

NOT_A_DB = "the database must be a number from 0 to 2147483647"

#: One-server URLs that redis-py 7.3 and 8 read alike (redis-py 7.3 knows fewer typed
#: options, refuses an upper-case scheme and decodes query values twice).
ONE_SERVER = [
    "redis://",
    "redis://localhost",
    "redis://h:6380/2",
    "redis://h/000003",
    "redis://h/0/",
    "redis://[::1]:6379/0",
    "redis://user:p%40ss@host:6380/2?socket_timeout=1.5",
    "redis://:p%3Ass@h/0?db=3",
    "redis://u:p@h/0?password=q&username=v",
    "redis://h/0?password=x%2By&db=4&db=5",
    "redis://h/0?socket_keepalive=true&retry_on_timeout=no&encoding=utf-8&client_name=a+b",
    "redis://h/0?health_check_interval=2&max_connections=3&timeout=1&socket_connect_timeout=0.1",
    "redis://h/0?socket_keepalive=FALSE&ssl_check_hostname=n&x=",
    "rediss://h/1?ssl_check_hostname=false&ssl_cert_reqs=none",
    "rediss://h?ssl_include_verify_flags=VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN",
    "unix:///tmp/redis.sock?db=3",
    "unix://user:pw@/tmp/a%20b.sock",
]


@pytest.mark.parametrize("url", ONE_SERVER)
def test_a_one_server_url_reads_as_redis_py_reads_it(url: str) -> None:
    assert parse_url(url) == redis_parse_url(url)


@pytest.mark.parametrize("url", ["redis://h:1/2?socket_keepalive=yes", "redis://:pw@/0"])
def test_a_fakeredis_url_reads_as_a_redis_url(url: str) -> None:
    assert parse_url(url.replace("redis://", "fakeredis://")) == parse_url(url)


@pytest.mark.parametrize(
    ("url", "as_one_server"),
    [
        ("redis+sentinel://h1,h2:26380/mymaster", "redis://"),
        ("redis+sentinel://u:p%40ss@h1:1,h2:2/mymaster/3", "redis://u:p%40ss@/3"),
        ("redis+sentinel://:pw@h1/my%2Fmaster/0?socket_keepalive=true", "redis://:pw@/0?socket_keepalive=true"),
        ("redis+sentinel://h1/mymaster?db=2&password=x", "redis://?db=2&password=x"),
        ("redis+cluster://h1:7000,h2:7001", "redis://"),
        ("redis+cluster://u:p%2Fw@h1:7000/0?socket_keepalive=true", "redis://u:p%2Fw@/0?socket_keepalive=true"),
    ],
)
def test_a_sentinel_or_cluster_url_gives_the_credentials_database_and_options(url: str, as_one_server: str) -> None:
    """The servers' addresses are the topology's to read: no ``host`` or ``port``."""
    assert parse_url(url) == redis_parse_url(as_one_server)


def test_the_connection_class_follows_the_scheme() -> None:
    assert parse_url("rediss://h")["connection_class"] is SSLConnection
    assert parse_url("unix:///tmp/redis.sock")["connection_class"] is UnixDomainSocketConnection
    assert "connection_class" not in parse_url("redis://h")
    assert parse_url("REDIS://H/1") == {"host": "h", "db": 1}  # a scheme in any case, on every redis-py


def test_query_values_are_typed_and_decoded_once() -> None:
    parsed = parse_url(
        "redis://h/0?client_name=a%2520b&retry_on_error=[ConnectionError, TimeoutError]"
        "&ssl_exclude_verify_flags=VERIFY_X509_STRICT&protocol=3&socket_keepalive=off&socket_read_size=4096"
    )
    assert parsed["client_name"] == "a%20b"
    assert parsed["retry_on_error"] == [ConnectionError, TimeoutError]
    assert parsed["ssl_exclude_verify_flags"] == [ssl.VerifyFlags.VERIFY_X509_STRICT]
    assert (parsed["protocol"], parsed["socket_keepalive"], parsed["socket_read_size"]) == (3, False, 4096)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis://h/0?socket_timeout={PASSWORD}", "Invalid value for 'socket_timeout' in connection URL."),
        (f"redis://h/0?db={PASSWORD}", "Invalid value for 'db' in connection URL."),
        (f"redis://h/0?retry_on_error={PASSWORD}", "Invalid value for 'retry_on_error' in connection URL."),
        ("redis://h/0?retry_on_error=Redis", "Invalid value for 'retry_on_error' in connection URL."),
        (
            f"rediss://h?ssl_include_verify_flags={PASSWORD}",
            "Invalid value for 'ssl_include_verify_flags' in connection URL.",
        ),
        ("redis://h/0?db=-1", NOT_A_DB),
        ("redis://h/2147483648", NOT_A_DB),
        ("redis://h/" + "1" * 4301, NOT_A_DB),  # int() refuses it; redis-py reads no database
        ("redis+sentinel://h/mymaster/\u00b2", NOT_A_DB),  # a digit to str.isdigit(), not to int()
        ("redis+cluster://h?db=2147483648", NOT_A_DB),
        ("unix:///tmp/redis.sock?db=-1", NOT_A_DB),
    ],
)
def test_a_value_no_server_takes_is_refused_without_showing_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_url(url)


@pytest.mark.parametrize("url", ["REDIS://127.0.0.1:1/3", "Rediss://127.0.0.1:1/3", "UNIX:///tmp/redis.sock?db=3"])
def test_a_scheme_in_upper_case_is_accepted_on_every_redis_py(make_app: Callable[..., Flask], url: str) -> None:
    """The config check takes a scheme in any case (RFC 3986); redis-py 7 refused it."""
    app = make_app(REDIS_URL=url)
    kwargs: dict[str, Any] = RedisPool(app).get_pool(app).connection_kwargs
    assert kwargs["db"] == 3
