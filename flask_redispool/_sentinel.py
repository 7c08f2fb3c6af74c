"""A Redis Sentinel service behind the same pools: ``redis+sentinel://`` URLs.

``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db][?option=value]``
names the sentinels to ask and the service; the credentials, database and options are
the master's and replicas' (the form Flask-Limiter's ``limits`` reads). The sentinels'
own credentials have keys of their own, ``SENTINEL_USERNAME`` and ``SENTINEL_PASSWORD``.
``rediss+sentinel://`` is the same over TLS (the ``SSL_*`` keys); the sentinels follow,
unless ``SENTINEL_SSL_ENABLED`` says otherwise.

Built on redis-py's :class:`~redis.sentinel.Sentinel` and its
:class:`~redis.sentinel.SentinelConnectionPool`, made **once** per app and prefix (redis-py's
``master_for()`` makes a new pool on every call): a counted pool for the master, which
``client`` uses, and one for the replicas, which ``replica_client`` uses and which falls
back to the master while no replica is up. A connection asks the sentinels where the
master is when it connects, and checks the server's role before it is lent; one
listener per process hears the sentinels announce a failover, and the pools stop lending
connections made before it at once (:mod:`~flask_redispool._sentinel_watch`). A write
that meets a demoted master's ``READONLY`` all the same is refused there, so it is retried
on the new master (it never ran).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import Connection, SSLConnection
from redis.exceptions import RedisError
from redis.sentinel import MasterNotFoundError, Sentinel

from ._asyncio import AsyncContextClient, CountedAsyncSentinelPool, async_connection_kwargs
from ._config import BACKOFF_BASE, BACKOFF_CAP, Settings
from ._connection import AsyncOnceRetry, ConnectionPolicy, OnceRetry, pool_connection_class
from ._errors import ConfigError
from ._pool import (
    CountedSentinelPool,
    check_connection_kwargs,
    check_query_options,
    connection_options,
    parse_addresses,
    side_client,
)
from ._sentinel_watch import (
    AsyncFollowingConnection,
    AsyncFollowingSentinel,
    AsyncFollowingSSLConnection,
    FollowingConnection,
    FollowingSentinel,
    FollowingSSLConnection,
    SentinelWatch,
)
from ._single import OneConnection, SingleServer
from ._url import parse_url

if TYPE_CHECKING:
    from ._asyncio import AsyncLoopClient
    from ._pool import CountedPool
    from ._stats import PoolCounters

__all__ = ["DEFAULT_SENTINEL_PORT", "SentinelService", "parse_sentinel_url"]

#: The port of a sentinel given without one.
DEFAULT_SENTINEL_PORT: Final = 26379


def parse_sentinel_url(settings: Settings) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """The sentinels' addresses, the service name, and the master's connection keyword
    arguments (credentials, ``db``, query options) of ``settings.url``.

    :raises ConfigError: the URL does not name sentinels and a service.
    """
    parts = urlsplit(settings.url)
    path = [part for part in parts.path.split("/") if part]
    try:
        sentinels = parse_addresses(parts.netloc.rpartition("@")[2], DEFAULT_SENTINEL_PORT, "sentinel")
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("the path must be the service name, then an optional database number: /mymaster/0")
        kwargs = parse_url(settings.url)  # the credentials, the database and the options of the master
    except ValueError as exc:
        raise ConfigError(
            f"{settings.key('URL')} is not a valid Sentinel URL ({settings.redacted_url}): {exc}"
        ) from None
    check_query_options(settings, kwargs)
    kwargs.pop("host", None)  # of the query string: the sentinels say where the master is
    kwargs.pop("port", None)
    return sentinels, unquote(path[0]), kwargs


@dataclass(frozen=True)
class _Service:
    """What the Sentinel pools were made from: the sentinels, sync and their addresses for
    the async ones, the service name, and the master's connection keyword arguments."""

    sentinel: Sentinel
    addresses: list[tuple[str, int]]
    name: str
    kwargs: dict[str, Any]
    #: What the sentinels announce, heard by one thread per process.
    watch: SentinelWatch


class SentinelService(SingleServer):
    """The :class:`~flask_redispool._topology.Topology` of a Sentinel service: a counted pool
    on the master (``client``) and one on the replicas (``replica_client``), both through
    one :class:`~redis.sentinel.Sentinel`, which closes with the app."""

    own_keys: ClassVar[tuple[str, ...]] = ("SENTINEL_USERNAME", "SENTINEL_PASSWORD", "SENTINEL_SSL_ENABLED")
    serves_what: ClassVar[str] = "a Sentinel service"
    url_form: ClassVar[str] = "redis+sentinel://host:port/service"
    _service: _Service

    def _make_pools(self, settings: Settings) -> tuple[ConnectionPolicy, Sequence[CountedPool], OneConnection]:
        """The master's and the replicas' counted pools of a Sentinel service, and the
        :class:`~redis.sentinel.Sentinel` that both ask. Does no network I/O."""
        sentinels, name, url_kwargs = parse_sentinel_url(settings)
        kwargs = connection_options(settings, url_kwargs)
        policy = ConnectionPolicy(settings)
        tls = settings.tls
        check_connection_kwargs(settings, pool_connection_class(SSLConnection if tls else Connection, policy), kwargs)
        connection_class = pool_connection_class(FollowingSSLConnection if tls else FollowingConnection, policy)
        watch = SentinelWatch(
            sentinels, name, _sentinel_kwargs(settings, AsyncOnceRetry), f"flask-redispool-sentinels-{settings.prefix}"
        )
        sentinel = FollowingSentinel(sentinels, watch, sentinel_kwargs=_sentinel_kwargs(settings))
        self._service = _Service(sentinel, sentinels, name, kwargs, watch)
        pools = [
            CountedSentinelPool(
                name,
                sentinel,
                is_master=role == "master",
                settings=settings,
                policy=policy,
                role=role,
                connection_class=connection_class,
                **kwargs,
            )
            for role in ("master", "replica")
        ]
        side = functools.partial(side_client, settings, connection_class, kwargs, (name, sentinel))
        return policy, pools, OneConnection(side)

    def _checked_async_kwargs(self) -> dict[str, Any]:
        """The async pools' connection keyword arguments (the master pool's). Not made into
        a connection now: a Sentinel connection needs its pool; the sync check made one
        with the same options."""
        twin = AsyncFollowingSSLConnection if self.settings.tls else AsyncFollowingConnection
        return async_connection_kwargs(self.pools, twin)

    def async_client(self, counters: PoolCounters) -> AsyncLoopClient:
        """One event loop's client on a counted pool on the master, and its ``replica`` on
        one on the replicas, with a ``redis.asyncio`` Sentinel of the loop's own (its
        connections to the sentinels belong to the loop too)."""
        pools, service, kwargs = self.pools, self._service, self._async_kwargs
        manager = AsyncFollowingSentinel(
            service.addresses, service.watch, sentinel_kwargs=_sentinel_kwargs(pools.settings, AsyncOnceRetry)
        )
        clients = [
            AsyncContextClient(
                connection_pool=CountedAsyncSentinelPool(
                    pools,
                    counters,
                    service_name=service.name,
                    sentinel_manager=manager,
                    **{**kwargs, "is_master": is_master},
                )
            )
            for is_master in (True, False)
        ]
        master, clients[0].replica = clients
        return master

    def nodes(self) -> list[Redis]:
        """A one-connection client per replica the sentinels list now (for ``CLIENT LIST``)."""
        service = self._service
        options = {name: value for name, value in service.kwargs.items() if name != "retry"}
        return [
            Redis(host=str(host), port=int(port), single_connection_client=True, ssl=self.settings.tls, **options)
            # discover_slaves: redis-py 8's discover_replicas is an alias that 7 lacks
            for host, port in service.sentinel.discover_slaves(service.name)
        ]

    def check(self) -> None:
        """Ask the sentinels where the master is, within ``worst_case_seconds`` in all (for
        :meth:`RedisPool.health() <flask_redispool.RedisPool.health>`, before it pings the
        master): the pools cannot connect anew while none answers.

        :raises MasterNotFoundError: no sentinel answered, naming each one's failure.
        """
        service = self._service
        deadline = time.monotonic() + self.settings.worst_case_seconds
        failures = []
        for client in list(service.sentinel.sentinels):
            try:
                if client.sentinel_get_master_addr_by_name(service.name):
                    return
                failures.append("one does not know the service")
            except RedisError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            if time.monotonic() >= deadline:
                break
        raise MasterNotFoundError(
            f"None of the {len(service.addresses)} sentinels told where the master of {service.name!r} is: "
            f"{'; '.join(failures)}"
        )

    def close(self) -> None:
        self._service.watch.close()
        _close_sentinels(self._service.sentinel)


def _sentinel_kwargs(settings: Settings, retry_class: type[Any] = OnceRetry) -> dict[str, Any]:
    """How to talk to the sentinels: the pools' timeouts, the sentinels' own credentials
    and TLS (``SENTINEL_SSL_ENABLED``, with the ``SSL_*`` keys), connections named
    ``<client name>:sentinel``."""
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_connect_timeout,
        "retry": retry_class(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries),
    }
    if settings.name_connections:
        kwargs["client_name"] = f"{settings.client_name}:sentinel"
    if settings.sentinel_username is not None:
        kwargs["username"] = settings.sentinel_username
    if settings.sentinel_password is not None:
        kwargs["password"] = settings.sentinel_password
    if settings.sentinel_tls:
        kwargs.update(ssl=True, **settings.tls_options())
    return kwargs


def _close_sentinels(sentinel: Sentinel) -> None:
    """Close the clients ``sentinel`` asks (redis-py 8's ``Sentinel.close()``, which 7 lacks)."""
    for client in sentinel.sentinels:
        client.close()
