"""The config keys of flask-redispool, declared once.

Each :class:`ConfigKey` carries its name, parser, default and one line of
documentation. :func:`load_settings` (validation), the error messages, the typo
detector and the docs' config reference all read this one table, so they cannot
drift apart.

Keys are read with the extension's prefix: ``REDIS_URL`` for the default prefix,
``JOBS_REDIS_URL`` for ``RedisPool(config_prefix="JOBS_REDIS")``.
"""

from __future__ import annotations

import codecs
import difflib
import importlib
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard
from urllib.parse import unquote_plus

from redis.credentials import CredentialProvider

from ._client_cache import ClientCacheSettings, parse_client_cache
from ._errors import ConfigError, ConfigWarning
from ._topology import TLS_SCHEMES, TOPOLOGIES

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CONFIG_KEYS",
    "STATS_FRESH_INTERVALS",
    "STATS_TTL_INTERVALS",
    "ConfigKey",
    "Settings",
    "load_settings",
    "redact_url",
]

#: Retries back off exponentially with jitter, from ``BACKOFF_BASE`` up to
#: ``BACKOFF_CAP`` seconds (redis-py's :class:`~redis.backoff.ExponentialWithJitterBackoff`).
BACKOFF_BASE: Final = 0.01
BACKOFF_CAP: Final = 0.05

#: A published pool snapshot expires after this many ``STATS_INTERVAL``\ s, and counts
#: as fresh for :data:`STATS_FRESH_INTERVALS` (an idle process republishes every interval).
STATS_TTL_INTERVALS: Final = 3
STATS_FRESH_INTERVALS: Final = 2
#: The shortest ``STATS_INTERVAL`` other than 0: publishing is a background chore.
STATS_MIN_INTERVAL: Final = 0.1
#: The longest duration any key (and ``blocking()``) takes: one day. Longer ones overflow
#: the socket and thread layers (``OverflowError`` at the first command).
MAX_SECONDS: Final = 86_400.0
#: The most ``RETRIES`` taken: each retry adds a connect and a wait for a reply to the
#: worst case (:attr:`Settings.worst_case_seconds`), which grows with its square.
MAX_RETRIES: Final = 10
#: The highest database number, and the bound of other redis-py options a C ``int``
#: holds: the server reads SELECT's index as a 32-bit signed integer.
INT32_MAX: Final = 2**31 - 1

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_INT_RE: Final = re.compile(r"[0-9]+")
_MAX_DIGITS: Final = 100  # longer digit strings are refused before int() (which refuses 4,300)
_FLOAT_RE: Final = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
_NAME_RE: Final = re.compile(r"[!-~]+")  # printable ASCII, no spaces: what CLIENT SETNAME takes
_CERT_REQS: Final = ("required", "optional", "none")
_TLS_URLS: Final = ", ".join(f"{scheme}://" for scheme in TLS_SCHEMES[:-1]) + f" or {TLS_SCHEMES[-1]}://"
_HOST_PORT_RE: Final = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}(/[0-9]*)?")  # localhost:6379/0, scheme forgotten
# A URL query argument whose name holds one of these is a secret: redis-py's password and
# ssl_password, other libraries' sentinel_password, tokens.
_SECRET_WORDS: Final = ("password", "secret", "token")


class _Required:
    """Marks a key that has no default."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Final = _Required()


@dataclass(frozen=True)
class ConfigKey:
    """One config key: ``<PREFIX>_<name>``.

    :param name: the key without its prefix, e.g. ``"MAX_CONNECTIONS"``.
    :param parse: turns a raw config value into the setting, or raises
        :class:`ValueError` whose text says what was expected ("an integer >= 1").
    :param default: the value used when the key is unset, or ``REQUIRED``.
    :param doc: one line for the config reference.
    :param redis_option: the redis-py connection/pool keyword argument this key sets;
        the same option given through ``<PREFIX>_OPTIONS`` or the URL is a conflict.
    :param secret: the raw value may hold a password; error messages redact it.
    """

    name: str
    parse: Callable[[object], Any]
    default: object
    doc: str
    redis_option: str | None = None
    secret: bool = False

    def key(self, prefix: str) -> str:
        """The full config key for ``prefix``."""
        return f"{prefix}_{self.name}"

    @property
    def accepts(self) -> str:
        """The values the key takes, as its error message says them ("an integer >= 1"):
        :attr:`parse`'s refusal of a value no key takes. The config reference shows it."""
        try:
            self.parse(_NOT_A_VALUE)
        except ValueError as exc:
            return str(exc)
        raise AssertionError(f"{self.name} took {_NOT_A_VALUE!r}")  # pragma: no cover


_NOT_A_VALUE: Final = object()


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _describe_secret(value: object) -> str:
    """What a secret value looked like, without its contents: a redacted URL, dict keys."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def _integer(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def parse(value: object) -> int:
        if isinstance(value, str) and len(value) <= _MAX_DIGITS and _INT_RE.fullmatch(value):
            value = int(value)
        if not _int(value) or value < minimum or (maximum is not None and value > maximum):
            raise ValueError(expected)
        return value

    return parse


def _retries(value: object) -> int:
    try:
        return _integer(0, MAX_RETRIES)(value)
    except ValueError as exc:
        # Every other key at its default: how long a command may take at the bound.
        worst = load_settings({"REDIS_URL": "redis://", "REDIS_RETRIES": MAX_RETRIES}, "REDIS", "app")
        raise ValueError(
            f"{exc} (at {MAX_RETRIES}, a command that Redis does not answer may already take "
            f"{worst.worst_case_seconds:g} s with the default timeouts)"
        ) from None


def check_database(number: object) -> None:
    """Refuse a URL's database number (``/5``, ``?db=5``) that no server takes.

    :raises ValueError: saying which numbers are taken.
    """
    try:
        _integer(0, INT32_MAX)(number)
    except ValueError:
        raise ValueError(f"the database must be a number from 0 to {INT32_MAX}") from None


def _seconds(*, allow_zero: bool) -> Callable[[object], float]:
    lower = ">= 0" if allow_zero else "> 0"
    expected = f"a number of seconds {lower} and <= {MAX_SECONDS:g}"

    def parse(value: object) -> float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(expected)
        if not (value >= 0 if allow_zero else value > 0) or not value <= MAX_SECONDS:  # NaN fails both
            raise ValueError(expected)
        return float(value)

    return parse


def check_seconds(value: object, what: str) -> float:
    """A duration given to an API (not config): a number from 0 to :data:`MAX_SECONDS`,
    else a :class:`ValueError` naming ``what``."""
    try:
        if isinstance(value, str):
            raise ValueError(f"a number of seconds >= 0 and <= {MAX_SECONDS:g}")
        return _seconds(allow_zero=True)(value)
    except ValueError as exc:
        raise ValueError(f"{what} must be {exc}, got {value!r}") from None


def _interval(value: object) -> float:
    expected = f"0 (off) or a number of seconds from {STATS_MIN_INTERVAL:g} to {MAX_SECONDS:g}"
    try:
        seconds = _seconds(allow_zero=True)(value)
    except ValueError:
        raise ValueError(expected) from None
    if 0 < seconds < STATS_MIN_INTERVAL:
        raise ValueError(expected)
    return seconds


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("a boolean (True/False, or one of 1/0, true/false, yes/no, on/off)")


def _client_name(value: object) -> str | bool | None:
    if value is None or value is False:
        return value
    if isinstance(value, str) and value.lower() in _FALSE:
        return False
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError("a non-empty string of printable characters without spaces, or False (no names)")
    return value


def _url(value: object) -> str:
    """A URL whose scheme a topology serves (:data:`~flask_redispool._topology.TOPOLOGIES`)."""
    if not isinstance(value, str) or "://" not in value or value.partition("://")[0].lower() not in TOPOLOGIES:
        raise ValueError(f"a URL with one of the schemes {', '.join(s + '://' for s in TOPOLOGIES)}")
    rest = value.partition("://")[2]
    if "@" in rest and "@" in _after_authority(rest):
        # redis://:pa/ss@host or :pa#ss@: the password ends where '/', '?' or '#' stands, and
        # what follows would be read as path, query or fragment: another host than meant.
        raise ValueError(
            "a URL whose password is percent-encoded: a '/', '?', '#' or '@' in the password must be "
            "written %2F, %3F, %23 or %40 (urllib.parse.quote(password, safe=''))"
        )
    return value


def _after_authority(rest: str) -> str:
    """What follows the authority of ``rest`` (the URL after ``scheme://``): path, query, fragment."""
    ends = [index for index in (rest.find(stop) for stop in "/?#") if index != -1]
    return rest[min(ends) :] if ends else ""


def _optional_text(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise ValueError("a non-empty string, or None")


def _optional_boolean(value: object) -> bool | None:
    if value is None:
        return None
    try:
        return _boolean(value)
    except ValueError:
        raise ValueError(
            "None (the default) or a boolean (True/False, or one of 1/0, true/false, yes/no, on/off)"
        ) from None


def _existing_file(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.path.isfile(value):
        raise ValueError("the path of an existing, readable file")
    return os.fspath(value)


def _cert_reqs(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in _CERT_REQS:
        raise ValueError(f"one of {', '.join(repr(v) for v in _CERT_REQS)}")
    return value.lower()


def _options(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError("a dict of redis-py keyword arguments with string keys")
    options = dict(value)
    _check_option_values(options)
    return options


def _max_age(value: object) -> float | None:
    if value is None:
        return None
    try:
        return _seconds(allow_zero=False)(value)
    except ValueError:
        raise ValueError(f"None (off) or a number of seconds > 0 and <= {MAX_SECONDS:g}") from None


_PROVIDER: Final = (
    "a redis.credentials.CredentialProvider, or the import path ('package.module:name') of one "
    "or of a function that takes no argument and returns one"
)


def _credential_provider(value: object) -> CredentialProvider | None:
    """A provider, or what an import path names: a provider, or a factory called once now.

    The messages never quote the value: a password given to the wrong key would show.
    """
    if value is None or isinstance(value, CredentialProvider):
        return value
    if not isinstance(value, str):
        raise ValueError(_PROVIDER)
    module, _, name = value.partition(":") if ":" in value else value.rpartition(".")
    if not module or not name:
        raise ValueError(f"{_PROVIDER}; it is not of that form")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{_PROVIDER}; importing it failed ({type(exc).__name__})") from None
    if not isinstance(found, CredentialProvider) and callable(found):
        try:
            found = found()
        except Exception as exc:  # a factory's failure, whatever it is, is a config error
            raise ValueError(f"{_PROVIDER}; calling what it names raised {type(exc).__name__}") from None
    if not isinstance(found, CredentialProvider):
        raise ValueError(f"{_PROVIDER}; it names a {type(found).__name__}")
    return found


def _check_option_values(options: dict[str, Any]) -> None:
    """Refuse now what redis-py would only refuse at the first command."""
    checks = (("encoding", codecs.lookup, "codec"), ("encoding_errors", codecs.lookup_error, "error handler"))
    for option, lookup, what in checks:
        if option in options:
            try:
                lookup(options[option])
            except (LookupError, TypeError):
                raise ValueError(f"a dict whose {option!r} names a Python {what}") from None
    keepalive = options.get("socket_keepalive_options")
    if keepalive is not None and not (
        isinstance(keepalive, Mapping)
        and all(_int(k) and (_int(v) or isinstance(v, bytes)) for k, v in keepalive.items())
    ):
        raise ValueError("a dict whose 'socket_keepalive_options' maps socket option numbers to ints")


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


#: redis-py connection options that it leaves unchecked until the first command (the
#: server's refusal of ``SELECT zero``, a ``TypeError`` at the first read): read at
#: init_app instead, as our own keys are.
_OPTION_PARSERS: Final[dict[str, Callable[[object], int]]] = {
    "db": _integer(0, INT32_MAX),
    "socket_read_size": _integer(1, INT32_MAX),
    "socket_type": _integer(0, INT32_MAX),
}


#: Every key flask-redispool reads, in documentation order.
CONFIG_KEYS: Final[tuple[ConfigKey, ...]] = (
    ConfigKey(
        "URL",
        _url,
        REQUIRED,
        "Where Redis is: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS), "
        "``unix:///path/to.sock?db=0``, ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]`` "
        "(a Sentinel service: the sentinels' addresses, default port 26379; the credentials and "
        "database are the master's and replicas'), ``redis+cluster://[[user]:password@]host:port[,host:port…]`` "
        "(a Redis Cluster: some of its nodes, default port 6379; use ``cluster_client``), "
        "``rediss+sentinel://…`` and ``rediss+cluster://…`` (the same over TLS), or "
        "``fakeredis://`` (an in-process fake server for tests).",
        secret=True,
    ),
    ConfigKey(
        "MAX_CONNECTIONS",
        _integer(1),
        10,
        "Most connections one process may hold. Size it to the threads serving requests in "
        "one worker process (gunicorn ``--threads``) plus one per long-lived pubsub.",
        redis_option="max_connections",
    ),
    ConfigKey(
        "POOL_BLOCKING",
        _boolean,
        True,
        "When every connection is in use, wait up to ``POOL_TIMEOUT`` for one (true) or fail at once (false).",
    ),
    ConfigKey(
        "POOL_TIMEOUT",
        _seconds(allow_zero=True),
        1.0,
        "Seconds to wait for a free connection before raising PoolExhaustedError.",
        redis_option="timeout",
    ),
    ConfigKey(
        "SOCKET_TIMEOUT",
        _seconds(allow_zero=False),
        0.5,
        "Seconds a command may wait for its reply (redis-py's default is 5).",
        redis_option="socket_timeout",
    ),
    ConfigKey(
        "SOCKET_CONNECT_TIMEOUT",
        _seconds(allow_zero=False),
        0.2,
        "Seconds to establish a connection (redis-py's default is 5).",
        redis_option="socket_connect_timeout",
    ),
    ConfigKey(
        "RETRIES",
        _retries,
        1,
        "Times a command is retried after a connection error or timeout, with jittered "
        f"exponential backoff of at most {BACKOFF_CAP} s: a command that is safe to run twice "
        "(a read), or any command whose connection failed before it was sent. A write whose "
        "reply was lost is never sent again.",
        redis_option="retry",
    ),
    ConfigKey(
        "HEALTH_CHECK_INTERVAL",
        _seconds(allow_zero=True),
        0.0,
        "Send a PING before a command on a connection idle longer than this many seconds (0: off).",
        redis_option="health_check_interval",
    ),
    ConfigKey(
        "DECODE_RESPONSES",
        _boolean,
        False,
        "Return ``str`` instead of ``bytes``. Leave false to share the pool with libraries "
        "that store bytes (Flask-Session, RQ).",
        redis_option="decode_responses",
    ),
    ConfigKey(
        "CLIENT_NAME",
        _client_name,
        None,
        "Name every connection gives itself (CLIENT SETNAME), followed by ``:host:pid``. "
        "Default: the app's import name, plus the prefix when it is not ``REDIS``. False: send "
        "no CLIENT SETNAME (for servers that refuse it; the server view of ``flask redis-stats`` "
        "is then unavailable). A server that refuses names is detected too: the pool warns once "
        "and goes on unnamed.",
        redis_option="client_name",
    ),
    ConfigKey(
        "STATS_INTERVAL",
        _interval,
        10.0,
        "Seconds between the snapshots each process publishes of its pool into Redis, for "
        "``flask redis-stats`` and dashboards in other processes. A snapshot expires after "
        f"{STATS_TTL_INTERVALS} intervals (0: publish nothing).",
    ),
    ConfigKey(
        "SSL_CA_CERTS",
        _existing_file,
        None,
        "TLS only: CA bundle (PEM) to verify the server's certificate against. Default: the system's trusted CAs.",
        redis_option="ssl_ca_certs",
    ),
    ConfigKey(
        "SSL_CERTFILE",
        _existing_file,
        None,
        "TLS only: client certificate (PEM), for servers that require one.",
        redis_option="ssl_certfile",
    ),
    ConfigKey(
        "SSL_KEYFILE",
        _existing_file,
        None,
        "TLS only: the client certificate's private key (PEM).",
        redis_option="ssl_keyfile",
    ),
    ConfigKey(
        "SSL_CERT_REQS",
        _cert_reqs,
        "required",
        "TLS only: verify the server's certificate and host name (``required``), "
        "only a certificate it presents (``optional``), or nothing (``none``: test servers only).",
        redis_option="ssl_cert_reqs",
    ),
    ConfigKey(
        "SENTINEL_USERNAME",
        _optional_text,
        None,
        "``redis+sentinel://`` only: the user name the sentinels themselves want (ACL), if any.",
    ),
    ConfigKey(
        "SENTINEL_PASSWORD",
        _optional_text,
        None,
        "``redis+sentinel://`` only: the password the sentinels themselves want "
        "(``requirepass`` in sentinel.conf), if any. The password in the URL is the master's.",
        secret=True,
    ),
    ConfigKey(
        "SENTINEL_SSL_ENABLED",
        _optional_boolean,
        None,
        "``redis+sentinel://`` and ``rediss+sentinel://`` only: whether the connections to the "
        "sentinels themselves use TLS (with the ``SSL_*`` keys). None: as the master's and "
        "replicas' do (TLS with ``rediss+sentinel://``).",
    ),
    ConfigKey(
        "CREDENTIAL_PROVIDER",
        _credential_provider,
        None,
        "Where each new data connection gets its user name and password: a redis-py "
        ":class:`~redis.credentials.CredentialProvider` (asked at every connect, so a rotated "
        "password or a fresh token is used from then on), or its import path. Refused with "
        "credentials in the URL or ``OPTIONS``. Not for the sentinels (``SENTINEL_PASSWORD``). "
        "See :ref:`rotating-credentials`.",
        redis_option="credential_provider",
        secret=True,
    ),
    ConfigKey(
        "MAX_CONNECTION_AGE",
        _max_age,
        None,
        "Seconds a pooled connection may serve after it connected: one older than that "
        "(each by its own deadline, between 90% and 100% of it, so that a process does not "
        "reconnect all at once) is closed when it is next checked out, and connects again, "
        "authenticating anew. A connection checked out (a pipeline, a pubsub, a ``WATCH``) "
        "is never cut. None: no limit.",
    ),
    ConfigKey(
        "CIRCUIT_BREAKER",
        _boolean,
        True,
        "Fail commands at once while Redis is out of reach, instead of letting each wait out "
        "its timeouts: after ``CIRCUIT_BREAKER_FAILURES`` connection failures in a row, commands "
        "raise ``CircuitOpenError`` until a probe outside the request path finds the server "
        "answering again. Behind ``redis+cluster://``, each node has a breaker of its own: a "
        "dead node's commands fail at once while the others serve. False turns it off. See "
        ":doc:`breaker`.",
    ),
    ConfigKey(
        "CIRCUIT_BREAKER_FAILURES",
        _integer(1),
        5,
        "Connection failures (refused, reset, timed out; not command errors) in a row, with "
        "no reply from the server in between, that open the circuit breaker; never fewer than "
        "``RETRIES`` + 2, so that one command's tries cannot open it alone.",
    ),
    ConfigKey(
        "CIRCUIT_BREAKER_COOLDOWN",
        _seconds(allow_zero=False),
        0.5,
        "Seconds the open circuit breaker waits between probes of the server; commands are "
        "served again at most this long after the server is back.",
    ),
    ConfigKey(
        "CLIENT_CACHE",
        parse_client_cache,
        None,
        "Keep replies of reads in a client-side cache per sync connection, which the server invalidates "
        "(redis-py's, RESP3 tracking; Redis 7.4 or later, redis-py 8.2 or later): ``True``, or a dict "
        "of its options, ``max_size`` (per connection, default 10000), ``key_prefixes`` and ``commands`` "
        "(cache only those). Turns RESP3 on. Async clients are unaffected. See :doc:`caching`.",
    ),
    ConfigKey(
        "OPTIONS",
        _options,
        {},
        "Further keyword arguments for redis-py's connection pool (e.g. ``socket_keepalive``); "
        "behind ``redis+cluster://`` also :class:`~redis.cluster.RedisCluster`'s own "
        "(``load_balancing_strategy``, ``require_full_coverage``, ...). "
        "Options that have a key of their own above are refused here. Error messages name "
        "options, never their values.",
        secret=True,
    ),
)

_BY_NAME: Final = {k.name: k for k in CONFIG_KEYS}
_RESERVED_OPTIONS: Final = {
    "connection_pool": "it is created by flask-redispool",
    "connection_class": "it follows from the URL scheme",
    "connection_pool_class": "it is created by flask-redispool",
}
# Options that other names of redis-py's set what one of our keys sets.
_ALIASES: Final = {"cluster_error_retry_attempts": "RETRIES"}


@dataclass(frozen=True)
class Settings:
    """The validated settings of one :class:`~flask_redispool.RedisPool` on one app."""

    prefix: str
    url: str = field(repr=False)
    max_connections: int
    pool_blocking: bool
    pool_timeout: float
    socket_timeout: float
    socket_connect_timeout: float
    retries: int
    health_check_interval: float
    decode_responses: bool
    client_name: str
    #: Whether connections send ``CLIENT SETNAME`` (``CLIENT_NAME = False`` turns it off).
    name_connections: bool
    stats_interval: float
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_cert_reqs: str
    sentinel_username: str | None
    sentinel_password: str | None = field(repr=False)
    sentinel_ssl_enabled: bool | None
    credential_provider: CredentialProvider | None = field(repr=False)
    max_connection_age: float | None
    circuit_breaker: bool
    circuit_breaker_failures: int
    circuit_breaker_cooldown: float
    client_cache: ClientCacheSettings | None
    options: dict[str, Any] = field(repr=False)

    @property
    def scheme(self) -> str:
        """The URL's scheme, in lower case: what picks the topology
        (:data:`~flask_redispool._topology.TOPOLOGIES`)."""
        return self.url.partition("://")[0].lower()

    @property
    def tls(self) -> bool:
        """Whether the URL asks for TLS to the data nodes (``rediss://``,
        ``rediss+sentinel://``, ``rediss+cluster://``)."""
        return self.scheme in TLS_SCHEMES

    @property
    def sentinel_tls(self) -> bool:
        """Whether the connections to the sentinels use TLS: ``SENTINEL_SSL_ENABLED``, else as
        the data nodes' (:attr:`tls`)."""
        return self.tls if self.sentinel_ssl_enabled is None else self.sentinel_ssl_enabled

    @property
    def ssl_options(self) -> dict[str, Any]:
        """The redis-py ``ssl_*`` keyword arguments of the data nodes' connections (empty
        without TLS)."""
        return self.tls_options() if self.tls else {}

    def tls_options(self) -> dict[str, Any]:
        """The redis-py ``ssl_*`` keyword arguments of the ``SSL_*`` keys, for a TLS
        connection (to a data node or a sentinel)."""
        options = {
            "ssl_cert_reqs": self.ssl_cert_reqs,
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        return {name: value for name, value in options.items() if value is not None}

    def key(self, name: str) -> str:
        """The full config key of ``name``: ``settings.key("URL") == "REDIS_URL"``."""
        return _BY_NAME[name].key(self.prefix)

    @property
    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return redact_url(self.url)

    @property
    def worst_case_seconds(self) -> float:
        """Upper bound of one command's time when Redis does not answer.

        One attempt may connect (its socket connect retried ``RETRIES`` times) and then
        wait once for a reply: the handshake's first read when the server accepts but
        does not answer, else the command's own. A command makes at most ``RETRIES + 1``
        attempts with a backoff between them; a write that was sent makes one, so the
        bound holds for every command. A health check, when due, is one more such
        command. Waiting for a free connection (at most ``POOL_TIMEOUT``, only when all
        are busy) comes on top.

        ``SOCKET_TIMEOUT`` bounds each wait for bytes from the server, so this holds when
        the server is down, unreachable or silent. A reply that trickles in, each byte
        within ``SOCKET_TIMEOUT``, holds a sync command for as long as it trickles
        (redis-py times each socket read); ``redis.asyncio`` times each whole reply.
        """
        tries = self.retries + 1
        connect = tries * self.socket_connect_timeout + self.retries * BACKOFF_CAP
        command = tries * (connect + self.socket_timeout) + self.retries * BACKOFF_CAP
        return round(command * (2 if self.health_check_interval else 1), 3)


def load_settings(config: Mapping[str, Any], prefix: str, default_client_name: str) -> Settings:
    """Read and validate every ``<prefix>_*`` key of ``config``.

    :raises ConfigError: a value is missing, of the wrong type or out of range.
    :warns ConfigWarning: a ``<prefix>_`` key is close to, but not, one of ours.
    """
    _warn_unknown_keys(config, prefix)
    values: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        full = key.key(prefix)
        if full not in config or (config[full] is None and key.default is REQUIRED):  # None: os.environ.get()
            if key.default is REQUIRED:
                raise ConfigError(
                    f"{full} is not set: give the Redis server's URL, e.g. "
                    f"'redis://localhost:6379/0', or 'fakeredis://' for an in-process fake."
                )
            values[key.name.lower()] = key.default
            continue
        raw = config[full]
        try:
            values[key.name.lower()] = key.parse(raw)
        except ValueError as exc:
            shown = _describe(raw) if not key.secret else _describe_secret(raw)
            raise ConfigError(f"{full} must be {exc}, got {shown}") from None
    values["options"] = _parse_options(values["options"], _BY_NAME["OPTIONS"].key(prefix))
    values["name_connections"] = values["client_name"] is not False
    if not isinstance(values["client_name"], str):
        values["client_name"] = default_client_name
    settings = Settings(prefix=prefix, **values)
    _check_option_conflicts(settings)
    _check_tls(settings, config)
    return settings


def _keys(given: list[str]) -> str:
    """``"A only applies"``, ``"A, B only apply"``."""
    return f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'}"


def _check_tls(settings: Settings, config: Mapping[str, Any]) -> None:
    given = [
        key.key(settings.prefix)
        for key in CONFIG_KEYS
        if key.name.startswith("SSL_") and key.key(settings.prefix) in config
    ]
    if given and not (settings.tls or settings.sentinel_tls):
        raise ConfigError(
            f"{_keys(given)} to TLS connections, but {settings.key('URL')} is not "
            f"{_TLS_URLS} ({settings.redacted_url}): use one of them or remove them."
        )
    if settings.ssl_keyfile and not settings.ssl_certfile:
        raise ConfigError(f"{settings.key('SSL_KEYFILE')} is set without {settings.key('SSL_CERTFILE')}.")


def _parse_options(options: dict[str, Any], key: str) -> dict[str, Any]:
    """``options`` with the values of :data:`_OPTION_PARSERS` parsed (``"5"`` is 5).

    :raises ConfigError: naming the option, not its value (``OPTIONS`` may hold secrets).
    """
    parsed = dict(options)
    for option in options.keys() & _OPTION_PARSERS.keys():
        parse = _OPTION_PARSERS[option]
        try:
            parsed[option] = parse(options[option])
        except ValueError as exc:
            raise ConfigError(f"{key}[{option!r}] must be {exc}, got {_kind(options[option])}.") from None
    return parsed


def _kind(value: object) -> str:
    """What ``value`` is, without showing it: ``"a str"``, ``"a number out of that range"``."""
    if _int(value):
        return "a number out of that range"
    noun = type(value).__name__
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _check_option_conflicts(settings: Settings) -> None:
    dedicated = {k.redis_option: k for k in CONFIG_KEYS if k.redis_option}
    dedicated.update((option, _BY_NAME[name]) for option, name in _ALIASES.items())
    for option in settings.options:
        where = f"{settings.key('OPTIONS')}[{option!r}]"
        if option in dedicated:
            raise ConfigError(
                f"{where} conflicts with {dedicated[option].key(settings.prefix)}: "
                f"set {dedicated[option].key(settings.prefix)} instead."
            )
        if option in _RESERVED_OPTIONS:
            raise ConfigError(f"{where} cannot be set: {_RESERVED_OPTIONS[option]}.")


def url_query_conflicts(settings: Settings, url_options: Mapping[str, Any]) -> None:
    """Refuse URL query arguments that a dedicated key or ``OPTIONS`` also sets."""
    dedicated = {k.redis_option: k for k in CONFIG_KEYS if k.redis_option}
    for option in url_options:
        owner = dedicated.get(option)
        if owner is not None:
            raise ConfigError(
                f"{settings.key('URL')} query argument {option!r} conflicts with "
                f"{owner.key(settings.prefix)}: set {owner.key(settings.prefix)} instead."
            )
        if option in settings.options:
            raise ConfigError(
                f"{settings.key('URL')} query argument {option!r} is also given in "
                f"{settings.key('OPTIONS')}: give it once."
            )


def _warn_unknown_keys(config: Mapping[str, Any], prefix: str) -> None:
    """Warn about a near miss of one of our keys (``REDIS_MAX_CONECTIONS``).

    Only the part after the prefix is compared, so the shared prefix does not make
    another extension's keys look alike (Flask-Caching's ``CACHE_REDIS_HOST`` is no
    near miss of ``CACHE_REDIS_URL``).
    """
    names = [k.name for k in CONFIG_KEYS]
    for key in config:
        if not isinstance(key, str) or not key.startswith(prefix + "_"):
            continue
        rest = key[len(prefix) + 1 :]
        # JOBS_REDIS_URL seen with prefix JOBS: another instance's key, not a typo.
        if rest in names or any(rest.endswith("_" + name) for name in names):
            continue
        close = difflib.get_close_matches(rest, names, n=1, cutoff=0.8)
        if close:
            warnings.warn(
                f"{key} is not a flask-redispool setting; did you mean {prefix}_{close[0]}?",
                ConfigWarning,
                stacklevel=4,
            )


def redact_url(url: str) -> str:
    """Return ``url`` with every password in it replaced by ``***``.

    The host and port shown are the ones redis-py connects to: the authority ends at the
    first ``/``, ``?`` or ``#``, as :func:`urllib.parse.urlsplit` reads it. A URL with an
    ``@`` after that point (a password with an unencoded ``/``, ``?`` or ``#``) shows
    nothing before its last ``@``. A lone userinfo (``redis://secret@host``) is redacted
    too, since some write the password there. So is the value of each query argument
    whose name, decoded as the connection's options are (:func:`urllib.parse.parse_qs`),
    names a secret (``password``, ``%70assword``, ``ssl_password``,
    ``sentinel_password``...); the fragment, which redis-py ignores, is read the same
    way. A URL without a password is shown as typed, and so is ``host:port`` without a
    scheme.

    >>> redact_url("redis://:hunter2@localhost:6379/0")
    'redis://:***@localhost:6379/0'
    >>> redact_url("redis://:pa/ss@localhost:6379/0")
    'redis://***@localhost:6379/0'
    >>> redact_url("redis://localhost:6379/0?%70assword=hunter2")
    'redis://localhost:6379/0?%70assword=***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL: show a mistyped host:port, hide anything else (a password?)
        if "@" in url:
            return f"***@{url.rpartition('@')[2]}"
        return url if _HOST_PORT_RE.fullmatch(url) else "***"
    if "@" in _after_authority(rest):  # where the userinfo ends is anybody's guess: show only what follows
        rest = f"***@{rest.rpartition('@')[2]}"
    tail = _after_authority(rest)
    authority = rest[: len(rest) - len(tail)]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else f"***@{host}"
    # urlsplit's order: the fragment starts at the first '#', the query at the first '?' before it.
    before, hash_, fragment = tail.partition("#")
    path, question, query = before.partition("?")
    return f"{scheme}://{authority}{path}{question}{_redact_query(query)}{hash_}{_redact_query(fragment)}"


def _redact_query(query: str) -> str:
    """``query`` with the value of each argument that names a secret replaced by ``***``.

    Names are decoded as :func:`urllib.parse.parse_qs` decodes them for the options: ``+``
    is a space, then percent-decoding.
    """
    arguments = []
    for argument in query.split("&"):
        name, equals, _ = argument.partition("=")
        secret = equals and any(word in unquote_plus(name).lower() for word in _SECRET_WORDS)
        arguments.append(f"{name}=***" if secret else argument)
    return "&".join(arguments)
