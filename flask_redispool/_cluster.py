"""A Redis Cluster behind the same pools: ``redis+cluster://`` URLs.

``redis+cluster://[[user]:password@]host:port[,host:port…][?option=value]`` names some
nodes to ask for the slots (the seeds); the credentials and options are every node's.
:class:`~redis.cluster.RedisCluster`'s own options (``load_balancing_strategy``,
``require_full_coverage``, ...) go in ``OPTIONS`` beside the connection's.

Built on redis-py's :class:`~redis.cluster.RedisCluster`, made **once** per app and
prefix and on first use (its constructor asks the seeds for the slots: network I/O,
which ``init_app`` does not do). It keeps one pool per node; each is one of our counted
pools, made by the cluster client through its ``connection_pool_class``, so every node
has ``MAX_CONNECTIONS`` at most, and :meth:`~flask_redispool.RedisPool.stats` lists them
one by one. Redirects (``MOVED``, ``ASK``) are followed, and a command that failed is
retried ``RETRIES`` times only when it is safe to repeat: redis-py's cluster client
retries errors whose type *is* ``ConnectionError`` or ``TimeoutError``, and a failure
after an unsafe command was sent is raised as a
:class:`~flask_redispool.MayHaveRunError` subclass instead.

Async views get redis-py's :class:`redis.asyncio.cluster.RedisCluster`, one per event loop
(:class:`AsyncClusterClient`), with the same connections, retries and bounds.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio.cluster as aio_cluster
import redis.asyncio.connection as aio_connection
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, LoadBalancingStrategy, RedisCluster
from redis.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError, MaxConnectionsError, RedisClusterException, TimeoutError

from ._asyncio import remember_async
from ._breaker import NodeLeft
from ._client import held_here
from ._commands import command_kind
from ._config import BACKOFF_BASE, BACKOFF_CAP
from ._connection import (
    AsyncOnceRetry,
    ConnectionPolicy,
    OnceRetry,
    add_note,
    pool_connection_class,
    unsafe_failures,
)
from ._errors import ConfigError, MayHaveRunConnectionError, PoolExhaustedError
from ._events import PoolEvents
from ._pool import (
    CountedConnectionPool,
    SideConnectionPool,
    check_connection_kwargs,
    check_query_options,
    connection_options,
    parse_addresses,
)
from ._poolset import PoolSet
from ._url import parse_url
from ._wait import AsyncFairWait

if TYPE_CHECKING:
    from ._asyncio import LoopOwner
    from ._config import Settings
    from ._pool import CountedPool
    from ._snapshots import AnyClient
    from ._stats import PoolCounters

__all__ = [
    "DEFAULT_CLUSTER_PORT",
    "AsyncClusterClient",
    "Cluster",
    "ClusterClient",
    "LazyCluster",
    "parse_cluster_url",
]

T = TypeVar("T")
#: The port of a seed given without one.
DEFAULT_CLUSTER_PORT: Final = 6379
# What redis.asyncio's cluster client takes; our other connection options reach its
# connections through its connection_kwargs.
_ASYNC_CLUSTER_PARAMETERS: Final = frozenset(inspect.signature(aio_cluster.RedisCluster.__init__).parameters)
# Set while a pipeline of this task executes: the async cluster client's retries are 0.
_IN_PIPELINE: contextvars.ContextVar[bool] = contextvars.ContextVar("flask_redispool_in_pipeline", default=False)

if TYPE_CHECKING:
    _AsyncConnectionBase = aio_connection.Connection
else:
    _AsyncConnectionBase = object


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("True or False")
    return value


def _steps(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a whole number >= 0 (0: never refresh the slots on a MOVED alone)")
    return value


def _strategy(value: object) -> LoadBalancingStrategy:
    try:
        return LoadBalancingStrategy(value)
    except ValueError:
        names = ", ".join(repr(strategy.value) for strategy in LoadBalancingStrategy)
        raise ValueError(f"a redis.cluster.LoadBalancingStrategy or one of {names}") from None


def _replaced(value: object) -> object:
    raise ValueError(
        "left out: redis-py deprecates it. To read from replicas too, set "
        "'load_balancing_strategy': 'round_robin_replicas' (or 'random_replica')"
    )


def _remap(value: object) -> Callable[[tuple[str, int]], tuple[str, int]]:
    if not callable(value):
        raise ValueError("a function from (host, port) to (host, port)")
    return value


#: :class:`~redis.cluster.RedisCluster`'s own options that ``OPTIONS`` may hold behind
#: ``redis+cluster://``, and how each is checked.
CLUSTER_OPTIONS: Final[dict[str, Callable[[object], object]]] = {
    "read_from_replicas": _replaced,
    "require_full_coverage": _flag,
    "dynamic_startup_nodes": _flag,
    "reinitialize_steps": _steps,
    "load_balancing_strategy": _strategy,
    "address_remap": _remap,
}


def parse_cluster_url(settings: Settings) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seeds' addresses and every node's connection keyword arguments (credentials,
    query options) of ``settings.url``.

    :raises ConfigError: the URL does not name seeds, or names a database other than 0.
    """
    parts = urlsplit(settings.url)
    one_database = "a cluster has database 0 only: leave the path out, or write /0"
    try:
        seeds = parse_addresses(parts.netloc.rpartition("@")[2], DEFAULT_CLUSTER_PORT, "node")
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError(one_database)
        kwargs = parse_url(settings.url)  # the credentials and the options of every node
        if kwargs.pop("db", 0) != 0:
            raise ValueError(one_database)
    except ValueError as exc:
        raise ConfigError(
            f"{settings.key('URL')} is not a valid Redis Cluster URL ({settings.redacted_url}): {exc}"
        ) from None
    check_query_options(settings, kwargs)
    kwargs.pop("host", None)  # of the query string: each node's address is the cluster's
    kwargs.pop("port", None)
    return seeds, kwargs


def _cluster_options(settings: Settings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take :data:`CLUSTER_OPTIONS` out of ``kwargs``, checked."""
    chosen: dict[str, Any] = {}
    for name, check in CLUSTER_OPTIONS.items():
        if name not in kwargs:
            continue
        try:
            chosen[name] = check(kwargs.pop(name))
        except ValueError as exc:
            raise ConfigError(f"{settings.key('OPTIONS')}[{name!r}] must be {exc}") from None
    return chosen


class ClusterClient(RedisCluster):
    """redis-py's :class:`~redis.cluster.RedisCluster`, as :attr:`RedisPool.cluster_client
    <flask_redispool.RedisPool.cluster_client>` hands it out: a pubsub still open when the
    app context ends is closed at teardown, and a pipeline does not send a command again
    that may have run (see :meth:`pipeline`)."""

    #: Where the current context's :class:`~flask_redispool._client.Held` lives in ``g``.
    held_key = "_redispool_held"

    def __init__(self, *args: Any, held_key: str = held_key, **kwargs: Any) -> None:
        #: What its nodes' connections share: closed by :meth:`RedisPool.close()
        #: <flask_redispool.RedisPool.close>`.
        self.policy: ConnectionPolicy = kwargs["connection_class"].policy
        self.held_key = held_key
        super().__init__(*args, **kwargs)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """redis-py's, once the app's pools are known to be open: a closed app's client
        raises the "closed" :class:`RuntimeError` before it routes the command.

        redis-py 7's cluster client replaces an error raised by a node's checkout (a
        :class:`~flask_redispool.PoolExhaustedError`, a refused connection, an open circuit
        breaker, the "closed" error of an app closed while the command waited) with an
        ``AttributeError`` of its own, raised while it records the command's duration on
        no connection: that error is raised instead."""
        self.policy.check_open()
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except AttributeError as exc:
            lost = exc.__context__
            if isinstance(lost, ConnectionError | TimeoutError | RuntimeError):
                raise lost from None
            raise

    def pubsub(
        self, node: ClusterNode | None = None, host: str | None = None, port: int | None = None, **kwargs: Any
    ) -> ClusterPubSub:
        pubsub = super().pubsub(node=node, host=host, port=port, **kwargs)
        held = held_here(self.held_key)
        if held is not None:
            held.sync.add(pubsub)
        return pubsub

    def close(self) -> None:
        """Close the connections of every node's pool too: redis-py closes only the pools
        it made itself, and these were made for it. (A seed's pool that is no node's is
        closed by its owner: the app's pools, or the side connection.)"""
        nodes = self.get_nodes()  # type: ignore[no-untyped-call]
        super().close()
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()

    def pipeline(self, transaction: bool | None = None, shard_hint: Any = None) -> ClusterPipeline:
        """redis-py's cluster pipeline, which never sends a write twice (:class:`_WriteOnce`).

        A pipeline (not a transaction) gets a retry of its own that never retries
        (``set_retry``), so that redis-py does not send its batch again as a whole; a
        transaction keeps the client's, which retries only what is safe to repeat."""
        pipe: ClusterPipeline = super().pipeline(transaction=transaction, shard_hint=shard_hint)  # type: ignore[no-untyped-call]
        if not transaction:
            pipe.set_retry(OnceRetry(NoBackoff(), 0))
        _WriteOnce(pipe)
        return pipe


class _WriteOnce:
    """Keeps a cluster pipeline (not a transaction) from running a write twice.

    redis-py's pipeline sends each command that met a redirect or a connection failure
    again, one by one, and then, while an error of that kind is left, the whole batch
    again, up to the client's retries. Here:

    - the batch is never sent again as a whole: the pipeline's own retry never retries
      (:meth:`ClusterClient.pipeline`), and neither does a command it sends again;
    - a command sent again on its own is sent when it is safe to repeat, or when no
      connection failed after an unsafe send during this ``execute()``, that is, when
      it met a redirect (``MOVED``, ``ASK``), so it did not run; otherwise its result is
      a :class:`~flask_redispool.MayHaveRunError`, which ``execute()`` raises.

    A transaction (``transaction=True``) retries through redis-py's ``Retry``, which is
    already ours. ``tests/test_cluster.py`` pins both.
    """

    def __init__(self, pipe: ClusterPipeline) -> None:
        self._execute = pipe.execute
        self._send = pipe.parent_execute_command
        self._failures_before = 0
        pipe.execute = self.execute  # type: ignore[method-assign]
        pipe.parent_execute_command = self.send_again

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._failures_before = unsafe_failures()
        return self._execute(raise_on_error)

    def send_again(self, *args: Any, **kwargs: Any) -> Any:
        """One command of the batch, sent again on its own after a redirect or a failure."""
        if unsafe_failures() != self._failures_before and not command_kind(args[0]).repeatable:
            raise MayHaveRunConnectionError(
                f"{args[0]} was not sent again: a connection of the pipeline failed after sending "
                "a command that is not safe to repeat, so it may have run."
            )
        return self._send(*args, **kwargs)  # type: ignore[no-untyped-call]


class LazyCluster:
    """The app's one :class:`ClusterClient`, made at first use, then shared by every thread.

    :param make: builds the client (asks the seeds for the slots).
    """

    def __init__(self, make: Callable[[], ClusterClient]) -> None:
        self._make = make
        self._client: ClusterClient | None = None
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> ClusterClient:
        """The client, made now if need be.

        :raises RedisClusterException: no seed answered (the cause says why).
        """
        client = self._client
        if client is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("this Redis Cluster client was closed with its app")
                if self._client is None:
                    self._client = self._make()
                client = self._client
        return client

    def role_of(self, address: str | None) -> str:
        """``"primary"`` or ``"replica"``: what the node at ``address`` is now, as the
        client last learnt; ``"node"`` before the client knows it."""
        client = self._client
        node = client.get_node(node_name=address) if client is not None and address else None  # type: ignore[no-untyped-call]
        return str(node.server_type) if node is not None and node.server_type else "node"

    def lists(self, address: str) -> bool:
        """Whether the client knows a node at ``address`` now (true before it is made)."""
        client = self._client
        return client is None or client.get_node(node_name=address) is not None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Forget the client; a later :meth:`get` raises. Its connections are those of the
        nodes' pools, which the :class:`~flask_redispool._poolset.PoolSet` closes (leaving a
        command in flight in another thread undisturbed, which ``client.close()`` would not)."""
        with self._lock:
            self._client, self._closed = None, True


class CountedNodePool(CountedConnectionPool):
    """A counted pool for one cluster node, whose role is the cluster's view of it
    (``cluster``)."""

    def __init__(self, *args: Any, cluster: LazyCluster, **kwargs: Any) -> None:
        self.cluster = cluster
        super().__init__(*args, **kwargs)

    @property
    def role(self) -> str:
        return self.cluster.role_of(self.address)

    @role.setter
    def role(self, value: str) -> None:
        """Set by :class:`CountedPool`'s constructor; the cluster says better."""


class _ClusterOnly:
    """What :attr:`RedisPool.client` and the other accessors of one server's client are
    behind ``redis+cluster://``: any use raises, pointing at ``cluster_client``."""

    def __init__(self, settings: Settings) -> None:
        self._message = (
            f"{settings.key('URL')} is a Redis Cluster ({settings.redacted_url}): use "
            "redis_pool.cluster_client, a redis.cluster.RedisCluster (its pipeline() and pubsub() too; "
            "async_cluster_client in async views; "
            "read from replicas with OPTIONS={'load_balancing_strategy': 'round_robin_replicas'}). redis_pool.client, "
            "replica_client, connection(), pipeline() and blocking() are for one server or Sentinel."
        )

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(self._message)


class _ClusterConnection:
    """The :class:`~flask_redispool._topology.SideConnection` of a cluster: a cluster client
    with one connection per node, outside the counted pools, which it owns and closes.

    :param make: makes a cluster client whose nodes get their pools from the callable given.
    """

    def __init__(self, settings: Settings, options: dict[str, Any], make: Callable[..., ClusterClient]) -> None:
        self._settings, self._options = settings, options
        self._make = make
        self._pools: dict[int, list[SideConnectionPool]] = {}  # per open client: the pools made for it

    def open(self, **options: Any) -> ClusterClient:
        pools: list[SideConnectionPool] = []

        def side_pool(**given: Any) -> SideConnectionPool:
            pool = _side_pool(self._settings, {**self._options, **options}, **given)
            pools.append(pool)
            return pool

        client = self._make(side_pool)
        self._pools[id(client)] = pools
        return client

    def close(self, client: AnyClient) -> None:
        """Close ``client`` and the connections of every node's pool made for it (a seed's
        too, which the client's own nodes may not list)."""
        client.close()
        for pool in self._pools.pop(id(client), []):
            pool.disconnect()


class Cluster:
    """The :class:`~flask_redispool._topology.Topology` of a Redis Cluster: one counted pool
    per node, made as the app's one cluster client (:class:`LazyCluster`) finds the nodes.
    Does no network I/O until that client is first used."""

    own_keys: ClassVar[tuple[str, ...]] = ()
    serves_what: ClassVar[str] = "a Redis Cluster"
    url_form: ClassVar[str] = "redis+cluster://host:port,host:port"
    async_accessors: ClassVar[tuple[str, ...]] = ("async_cluster_client",)

    def __init__(self, settings: Settings, *, owner: str, held_key: str, loops: LoopOwner) -> None:
        self.settings = settings
        self._owner = owner
        seeds, url_kwargs = parse_cluster_url(settings)
        options = connection_options(settings, url_kwargs)
        chosen = _cluster_options(settings, options)
        options.pop("retry")  # each node's own does not retry: the cluster client's does
        retry = OnceRetry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries)
        policy = ConnectionPolicy(settings)
        base = SSLConnection if settings.tls else Connection  # rediss+cluster://: TLS to every node
        options["connection_class"] = connection_class = pool_connection_class(base, policy)
        check_connection_kwargs(
            settings, connection_class, {k: v for k, v in options.items() if k != "connection_class"}
        )
        self._seeds, self._options = seeds, {**options, **chosen}
        make = functools.partial(_make_cluster, settings, seeds, self._options, retry)
        self._node_options = options
        self.side = _ClusterConnection(settings, options, make)
        self._cluster = LazyCluster(functools.partial(make, self._node_pool, held_key=held_key))
        self.client = self.replica_client = cast(Redis, _ClusterOnly(settings))
        self.pools = PoolSet(settings, policy, (), self, loops, held_key)
        policy.breakers.probe_nodes_with(self._node_probe)

    def _node_pool(self, **given: Any) -> CountedNodePool:
        """A node's counted pool, as redis-py's cluster client asks for it: the node's address
        and the client's hooks (``given``) over our options, some of which the client drops
        before it calls (``health_check_interval``).

        One pool per address: the client asks again for a node it first knew as a seed, or
        after a failure, and both of its clients share the pool, so ``MAX_CONNECTIONS`` holds
        per node."""
        pools = self.pools
        address = f"{given.get('host')}:{given.get('port')}"
        for pool in pools.pools:
            if isinstance(pool, CountedNodePool) and pool.address == address:
                return pool
        pool = CountedNodePool(
            cluster=self._cluster, settings=pools.settings, policy=pools.policy, **{**self._node_options, **given}
        )
        pools.add(pool, weakly=True)
        return pool

    def _node_probe(self, address: str) -> Callable[[], object]:
        """The probe of the circuit breaker of the node at ``address``: a PING on a
        connection of its own to that node alone, outside the pools, closed after; none
        once the cluster client lists the node no more (it left the cluster).

        :raises NodeLeft: the node left the cluster."""
        host, _, port = address.rpartition(":")

        def ping() -> object:
            if not self._cluster.lists(address):
                raise NodeLeft(address)
            pool = _side_pool(self.settings, self._node_options, host=host, port=int(port))
            try:
                return Redis(connection_pool=pool).ping()
            finally:
                pool.disconnect()

        return ping

    def cluster_client(self) -> ClusterClient:
        return self._cluster.get()

    def pool(self) -> CountedPool:
        raise RuntimeError(
            f"{self._owner} has one pool per node of a Redis Cluster: see stats()['pools'], "
            "or cluster_client.get_nodes(); a library sharing the app's connections takes "
            "get_cluster_client(app)."
        )

    def async_client(self, counters: PoolCounters) -> AsyncClusterClient:
        return _async_cluster_client(self.pools, self._seeds, self._options, counters)

    def reader(self) -> ClusterClient:
        return self._cluster.get()

    def connect(self, client: AnyClient) -> None:
        """Nothing to do: a cluster client connected when it was made."""

    def client_lists(self, client: AnyClient) -> list[dict[str, Any]]:
        """``CLIENT LIST`` of every node ``client`` knows now; a node gone meanwhile is left out."""
        lists = _ask_each_node(client, lambda cluster, node: cluster.client_list(target_nodes=node))
        return [entry for entries in lists.values() for entry in entries]

    def server_info(self, client: AnyClient, section: str) -> dict[str, dict[str, Any]]:
        """``INFO section`` of every node ``client`` knows now, by address."""
        return _ask_each_node(client, lambda cluster, node: cluster.info(section, target_nodes=node))

    def close(self) -> None:
        """Forget the cluster client (:meth:`LazyCluster.close`)."""
        self._cluster.close()


def _ask_each_node(client: AnyClient, ask: Callable[[RedisCluster, ClusterNode], T]) -> dict[str, T]:
    """``ask`` of every node ``client`` knows now, by address; a node gone meanwhile is left out."""
    cluster = cast(RedisCluster, client)
    answers: dict[str, T] = {}
    for node in cluster.get_nodes():  # type: ignore[no-untyped-call]
        try:
            answers[str(node.name)] = ask(cluster, node)
        except (ConnectionError, TimeoutError):
            continue
    return answers


def _make_cluster(
    settings: Settings,
    seeds: list[tuple[str, int]],
    kwargs: dict[str, Any],
    retry: Any,
    pool_class: Callable[..., Any],
    held_key: str = ClusterClient.held_key,
) -> ClusterClient:
    """Ask the seeds for the slots: a client whose nodes get their pools from ``pool_class``.

    redis-py uses ``connection_pool_class`` for a client made from a URL: the first seed
    is given as one, the others as further startup nodes.
    """
    (host, port), *others = seeds
    try:
        return ClusterClient(
            url=f"redis://{host}:{port}",
            startup_nodes=[ClusterNode(other_host, other_port) for other_host, other_port in others],  # type: ignore[no-untyped-call]
            connection_pool_class=pool_class,
            retry=retry,
            held_key=held_key,
            **kwargs,
        )
    except RedisClusterException as exc:
        add_note(
            exc,
            f"flask-redispool: no node of {settings.key('URL')} ({settings.redacted_url}) told the slots: "
            "check that they run in cluster mode and that this host can reach them.",
        )
        raise


def _side_pool(settings: Settings, options: dict[str, Any], **given: Any) -> SideConnectionPool:
    """One connection per node outside the counted pools, for the publisher and health checks."""
    return SideConnectionPool(settings=settings, **{**options, **given, "name_suffix": ":stats"})


#: redis-py 8 added ``pubsub()`` to the ``redis.asyncio`` cluster client.
ASYNC_CLUSTER_PUBSUB: Final = hasattr(aio_cluster.RedisCluster, "pubsub")


class _PipelineAwareRetry(AsyncOnceRetry):
    """The async cluster client's retry: none while a pipeline of this task executes, so
    that redis-py does not send the pipeline again as a whole (redis.asyncio's pipeline
    asks its client's retry, not one of its own); one that never repeats an unsafe
    command otherwise. Transactions retry through their own copy's ``call_with_retry``,
    which this does not change."""

    def get_retries(self) -> int:
        return 0 if _IN_PIPELINE.get() else super().get_retries()


class _Operation:
    """One command or pipeline of an :class:`AsyncClusterClient` in flight.

    redis.asyncio's cluster nodes lend their connections without a pool, so the client
    counts them itself, through the same events as a pool (:mod:`~flask_redispool._events`):
    a connection is checked out when a command, or one node's part of a pipeline, is sent
    on it (:class:`_CountedSends`). A task holds one node's connection at a time (redis-py
    sends to several nodes from a task each), so what counts in use is a task that has
    sent, until it ends or, for the task that runs the command or pipeline, until that
    returns: then the connection is back, and the client's first waiter tries to take
    one. A command sent again after a redirect stays one connection in use.
    """

    __slots__ = ("_client", "_holders", "_task", "_token", "final")

    def __init__(self, client: AsyncClusterClient) -> None:
        self._client = client
        self._holders: set[asyncio.Task[Any]] = set()
        #: Whether it may not run again after a node was full: a task other than the one
        #: running the operation has sent something (a pipeline's node, one of the nodes a
        #: command is sent to at once), or a pipeline's WATCH is gone.
        self.final = False

    def __enter__(self) -> _Operation:
        self._task = asyncio.current_task()
        self._token = _OPERATION.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _OPERATION.reset(self._token)
        holders, self._holders = self._holders, set()  # a node's task still running no longer counts
        self._client.gave_back(len(holders))

    def took_connection(self) -> None:
        client = self._client
        for checkout in client.events.checkout:
            checkout()
        task = asyncio.current_task()
        holders = self._holders
        if task is None or task in holders:  # the same task sends again: the same slot
            return
        holders.add(task)
        client.lent += 1
        if task is not self._task:  # a node's task of a pipeline, or of a command sent to several
            self.final = True
            task.add_done_callback(self._task_ended)

    def gave_back(self) -> None:
        """The running task holds no connection now (it waits for one)."""
        self._task_ended(asyncio.current_task())

    def _task_ended(self, task: asyncio.Task[Any] | None) -> None:
        """``task`` holds no connection any more: a node's task gave it back before it ended."""
        if task in self._holders:
            self._holders.discard(task)
            self._client.gave_back(1)


#: Seconds after which the first command or pipeline waiting for a node's connection looks
#: again, woken or not.
RECHECK: Final = 0.05
#: Why an operation that may not run again after finding a node full did not wait.
_NO_WAIT: Final = (
    "a pipeline that WATCHes keys, or a command sent to several nodes at once, does not wait "
    "(part of it may have been sent)"
)
#: Why a pipeline that found a node full was not run again.
_NOT_AGAIN: Final = (
    "the pipeline was not run again: it holds commands that were not queued through "
    "execute_command() (mset_nonatomic(), ...), which could not be queued again"
)

# The command or pipeline this task runs for an AsyncClusterClient; the tasks a pipeline
# starts, one per node, inherit it.
_OPERATION: contextvars.ContextVar[_Operation | None] = contextvars.ContextVar(
    "flask_redispool_operation", default=None
)


class _CountedSends(_AsyncConnectionBase):
    """Mixed over an async cluster client's connection class: each command or batch a
    node sends counts one checkout of the connection (its own set-up and health checks
    do not pass here)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        operation = _OPERATION.get()
        if operation is not None:
            operation.took_connection()
        await super().send_packed_command(command, check_health)


class AsyncClusterClient(aio_cluster.RedisCluster):
    """redis-py's :class:`redis.asyncio.cluster.RedisCluster` for one event loop, as
    :attr:`RedisPool.async_cluster_client <flask_redispool.RedisPool.async_cluster_client>`
    hands it out.

    Its connections are ours (named, never sending an unsafe command twice, explaining
    their failures): redis-py's async cluster client takes no connection class, so it is
    set in the client's ``connection_kwargs``, from which every node it finds makes its
    connections, and on the startup nodes, before the first command. A command that
    finds a node's ``max_connections`` all busy waits up to ``POOL_TIMEOUT`` (redis-py
    raises at once), first come first served (:class:`~flask_redispool._wait.AsyncFairWait`);
    so does a pipeline. Every connection a command or a pipeline takes from a node is
    counted in the app's async figures (:class:`_Operation`), as a pool counts checkouts.
    """

    loop: asyncio.AbstractEventLoop
    held_key = ClusterClient.held_key

    def __init__(
        self,
        *,
        pools: PoolSet,
        counters: PoolCounters,
        connection_class: type[Any],
        connection_options: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connection_kwargs.update(connection_options, connection_class=connection_class)
        for node in self.startup_nodes:  # redis-py made them anew, from host and port alone
            node.connection_class = connection_class
            node.connection_kwargs.update(connection_options)
        self._pools = pools
        settings = pools.settings
        #: Who listens to this loop's checkouts, waits and timeouts: the app's async counters.
        self.events = PoolEvents(counters)
        #: Connections taken from the nodes by this loop's commands and pipelines in flight.
        self.lent = 0
        self._wait = AsyncFairWait(settings, pools.policy, self.events, settings.max_connections, self.in_use)
        # A transaction's WATCH and a pubsub take node connections outside any command
        # (_Operation), and give them back unseen: the first waiter looks again anyway.
        self._wait.recheck = RECHECK

    async def initialize(self, *args: Any, **kwargs: Any) -> AsyncClusterClient:
        """Ask for the slots (redis-py's), then close the idle connection that asked: redis-py
        keeps the startup nodes beside the nodes it found, a second set of connections to
        the same servers that ``max_connections`` does not cover.

        Its connections count as taken until it returns, not until the command that
        needed the slots does."""
        with _Operation(self):
            await super().initialize(*args, **kwargs)
        manager = self.nodes_manager
        for name, node in list(manager.startup_nodes.items()):
            if manager.nodes_cache.get(name) is not node:
                await node.disconnect_free_connections()
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _Operation(self) as operation:
            return await self._waiting(operation, functools.partial(super().execute_command, *args, **kwargs))

    async def _waiting(self, operation: _Operation, run: Callable[[], Awaitable[T]]) -> T:
        """``await run()``; when a node's connections are all out (redis-py raises
        ``MaxConnectionsError`` before it sends on one), wait in this loop's line
        (:class:`~flask_redispool._wait.AsyncFairWait`) for a connection to come back, and
        run it again: up to ``POOL_TIMEOUT``, then :class:`~flask_redispool.PoolExhaustedError`.

        What another task of the operation sent (a pipeline's other nodes, a command's
        other nodes) may have run: then the error is raised as it came, never sent again.
        """
        ran = await self._try(operation, run)
        if ran is None:
            ran = await self._wait.take(functools.partial(self._try, operation, run))
        return ran[0]

    async def _try(self, operation: _Operation, run: Callable[[], Awaitable[T]]) -> tuple[T] | None:
        """``(await run(),)``, or ``None`` when a node had no free connection."""
        try:
            return (await run(),)
        except PoolExhaustedError:  # a command of the pipeline, sent again on its own, waited already
            raise
        except MaxConnectionsError:
            if operation.final:
                raise self._wait.exhausted(_NO_WAIT) from None
        operation.gave_back()  # sent before, then redirected: it holds nothing while it waits
        return None

    def gave_back(self, connections: int) -> None:
        """``connections`` came back to their nodes: the first waiter tries to take one."""
        if connections:
            self.lent -= connections
            for released in self.events.release:
                for _ in range(connections):
                    released()
            if self._wait.waiters:
                self._wait.wake_first()

    def pipeline(self, transaction: bool | None = None, shard_hint: Any = None) -> aio_cluster.ClusterPipeline:
        """redis-py's pipeline, which waits for a node's connection as a command does
        (:class:`WaitingClusterPipeline`), and is never sent again as a whole."""
        return WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]  # redis-py's typing

    def pubsub(self, *args: Any, **kwargs: Any) -> Any:
        if not ASYNC_CLUSTER_PUBSUB:
            raise NotImplementedError(
                "redis-py 7's redis.asyncio RedisCluster has no pubsub(): install redis>=8, "
                "or use redis_pool.cluster_client.pubsub() (sync)"
            )
        return remember_async(self, super().pubsub(*args, **kwargs))

    def bind(self, loop: asyncio.AbstractEventLoop, held_key: str) -> None:
        self.loop, self.held_key = loop, held_key

    def in_use(self) -> int:
        """Connections taken from the nodes by this loop's commands and pipelines in flight."""
        return self.lent

    async def close_pool(self) -> None:
        """Close every node's connections, on this loop. redis-py's ``aclose()`` alone
        closes nothing while the client means to ask for the slots again (after a
        connection failure), so the nodes are closed here too."""
        await self.aclose()
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")


class WaitingClusterPipeline(aio_cluster.ClusterPipeline):
    """redis-py's async cluster pipeline, waiting for a node's connection as a command does.

    redis-py raises ``MaxConnectionsError`` when a node's connections are all out, and
    empties the pipeline. When nothing was sent yet (no node's task sent its share), the
    pipeline waits in its client's line and runs again with the commands it had, queued
    again through its public methods; never a batch other than the one given (a command
    queued past them, as ``mset_nonatomic()`` does, makes it raise instead). A pipeline
    that sent part of its batch, or that WATCHes keys (the watch ended with the reset),
    raises :class:`~flask_redispool.PoolExhaustedError` without a second try.
    """

    def __init__(self, client: AsyncClusterClient, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        #: The client whose line this pipeline waits in, and whose figures it adds to.
        self.owner = client
        self._requeue: list[Callable[[], object]] = []  # how to queue the commands again
        self._watching = False

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._requeue.append(functools.partial(super().execute_command, *args, **kwargs))
        return super().execute_command(*args, **kwargs)

    def multi(self) -> None:
        self._requeue.append(super().multi)
        super().multi()  # type: ignore[no-untyped-call]

    async def watch(self, *names: Any) -> Any:  # type: ignore[override]  # redis-py's typing
        """redis-py's; a node found full raises at once (a WATCH does not wait)."""
        self._watching = True
        try:
            return await super().watch(*names)  # type: ignore[no-untyped-call]
        except PoolExhaustedError:
            raise
        except MaxConnectionsError:
            raise self.owner._wait.exhausted(_NO_WAIT) from None

    async def reset(self) -> None:  # type: ignore[override]  # redis-py's typing
        self._requeue, self._watching = [], False
        await super().reset()  # type: ignore[no-untyped-call]

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        requeue, self._requeue = self._requeue, []
        watching, self._watching = self._watching, False
        size, first = len(self), True
        execute = super().execute

        async def run() -> list[Any]:
            nonlocal first
            if not first:  # redis-py emptied it after the try that found a node full
                for queue in requeue:
                    queue()
                if len(self) != size:  # never run a batch other than the one given
                    await self.reset()
                    raise self.owner._wait.exhausted(_NOT_AGAIN)
            first = False
            return await execute(raise_on_error, allow_redirections)

        token = _IN_PIPELINE.set(True)
        try:
            with _Operation(self.owner) as operation:
                operation.final = watching  # a watch does not survive the reset: no second try
                return await self.owner._waiting(operation, run)
        finally:
            _IN_PIPELINE.reset(token)


def _async_cluster_client(
    pools: PoolSet, seeds: list[tuple[str, int]], options: dict[str, Any], counters: PoolCounters
) -> AsyncClusterClient:
    """One event loop's async cluster client, with every node's connections ours."""
    settings = pools.settings
    kwargs = {name: value for name, value in options.items() if name in _ASYNC_CLUSTER_PARAMETERS}
    others = {name: value for name, value in options.items() if name not in kwargs and name != "connection_class"}
    base = aio_connection.SSLConnection if settings.tls else aio_connection.Connection
    ours = pool_connection_class(base, pools.policy, asynchronous=True)
    connection_class = type(ours.__name__, (_CountedSends, ours), {"__module__": __name__})
    return AsyncClusterClient(
        pools=pools,
        counters=counters,
        connection_class=connection_class,
        connection_options=others,
        startup_nodes=[aio_cluster.ClusterNode(host, port) for host, port in seeds],
        max_connections=settings.max_connections,
        retry=_PipelineAwareRetry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), settings.retries),
        ssl=settings.tls,  # the ssl_* options of kwargs reach the connections
        **kwargs,
    )
