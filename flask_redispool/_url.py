"""What a Redis URL says: the redis-py connection keyword arguments it gives.

:func:`parse_url` reads the URLs of every scheme in
:data:`~flask_redispool._topology.TOPOLOGIES` as redis-py's ``from_url`` reads a
``redis://``, ``rediss://`` or ``unix://`` URL: the credentials, the server or socket,
the database and the query string's options, typed as redis-py types them. The topologies
check the shape of their own URLs (a Sentinel service's path, a cluster's one database)
and the sentinels' or nodes' addresses before they read the rest here.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from redis import SSLConnection, UnixDomainSocketConnection, exceptions

from ._config import check_database

__all__ = ["parse_url"]

# What redis-py reads as false in a query argument; anything else is true.
_FALSE: Final = frozenset({"0", "F", "FALSE", "N", "NO", "OFF"})
# The schemes whose authority is one server's host and port.
_ONE_SERVER: Final = frozenset({"redis", "rediss", "fakeredis"})


def _flag(value: str) -> bool:
    return value.upper() not in _FALSE


def _names(value: str) -> list[str]:
    """``A,B`` or ``[A, B]``: the names of a list given as one query argument."""
    return [name.strip() for name in value.replace("[", "").replace("]", "").split(",")]


def _exception_classes(value: str) -> list[type[Exception]]:
    """``ConnectionError,TimeoutError``: redis-py's exception classes of those names."""
    classes: list[type[Exception]] = []
    for name in _names(value):
        error = getattr(exceptions, name, None)
        if not (isinstance(error, type) and issubclass(error, Exception)):
            raise ValueError("not a redis-py exception")
        classes.append(error)
    return classes


def _verify_flags(value: str) -> list[ssl.VerifyFlags]:
    """``VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN``: :class:`ssl.VerifyFlags` members."""
    try:
        return [ssl.VerifyFlags[name] for name in _names(value)]
    except KeyError:
        raise ValueError("not an ssl.VerifyFlags member") from None


#: The query arguments that redis-py (8.2) converts from text, and how; any other stays text.
_QUERY_TYPES: Final[dict[str, Callable[[str], object]]] = {
    "db": int,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_read_size": int,
    "socket_keepalive": _flag,
    "retry_on_timeout": _flag,
    "retry_on_error": _exception_classes,
    "max_connections": int,
    "health_check_interval": int,
    "ssl_check_hostname": _flag,
    "ssl_validate_ocsp": _flag,
    "ssl_validate_ocsp_stapled": _flag,
    "ssl_include_verify_flags": _verify_flags,
    "ssl_exclude_verify_flags": _verify_flags,
    "ssl_min_version": int,
    "timeout": float,
    "protocol": int,
    "legacy_responses": _flag,
}


def parse_url(url: str) -> dict[str, Any]:
    """The redis-py connection keyword arguments of ``url``, a URL of one of the schemes
    of :data:`~flask_redispool._topology.TOPOLOGIES`.

    - ``username`` and ``password``: the user information, percent-decoded (one given in
      the query string too gives way to it);
    - ``redis://``, ``rediss://``, ``fakeredis://``: ``host`` and ``port``, when given;
      ``unix://``: the socket's ``path``. ``rediss://`` and ``unix://`` give redis-py's
      ``connection_class`` for them. A Sentinel or cluster URL names several servers: their
      addresses are for the caller to read;
    - ``db``: the ``db`` query argument, else the path's number (a Sentinel URL's second
      segment: ``/mymaster/0``), when given;
    - each query argument: its first value, percent-decoded once, typed as redis-py types
      it (``socket_keepalive=true`` is ``True``); others stay text.

    :raises ValueError: a query argument, the port or the database is not a value that
        redis-py or the server takes. The message names the argument, never its value.
    """
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {}
    for name, values in parse_qs(parts.query).items():
        convert = _QUERY_TYPES.get(name, str)
        try:
            kwargs[name] = convert(values[0])
        except (TypeError, ValueError):
            raise ValueError(f"Invalid value for {name!r} in connection URL.") from None
    username, _, password = parts.netloc.rpartition("@")[0].partition(":")
    if username:
        kwargs["username"] = unquote(username)
    if password:
        kwargs["password"] = unquote(password)
    scheme = parts.scheme
    if scheme == "unix":
        if parts.path:
            kwargs["path"] = unquote(parts.path)
        kwargs["connection_class"] = UnixDomainSocketConnection
    elif scheme in _ONE_SERVER:
        if parts.hostname:
            kwargs["host"] = unquote(parts.hostname)
        if parts.port is not None:
            kwargs["port"] = parts.port
        if scheme == "rediss":
            kwargs["connection_class"] = SSLConnection
    number = kwargs.get("db", _path_database(scheme, parts.path))
    if number != "":
        check_database(number)
        kwargs["db"] = int(number)
    return kwargs


def _path_database(scheme: str, path: str) -> str:
    """The database number that ``path`` gives, as text; ``""`` when it gives none."""
    if scheme == "unix":  # the socket's path
        return ""
    if scheme in ("redis+sentinel", "rediss+sentinel"):  # /service/db
        segments = [segment for segment in path.split("/") if segment]
        return unquote(segments[1]) if len(segments) > 1 else ""
    return unquote(path).strip("/")
