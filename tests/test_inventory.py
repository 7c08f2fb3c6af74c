"""What flask-redispool borrows from the packages it builds on, beyond their public API.

:data:`INVENTORY` lists every name or behaviour of redis-py, Flask, Werkzeug, Quart and
fakeredis that the package (``flask_redispool/``) relies on and that their documentation
does not present as public, each with what we use it for, the tests that pin the behaviour
we rely on (they fail on a release that changed it), and the public way that would
replace it where one is known. ``docs/design.rst`` ("What we borrow from others") lists
the same entries; a test keeps the two equal.

What counts as public: what the package's documentation presents (for redis-py, its
pages and the API reference they render, and the classes ``redis`` and ``redis.asyncio``
export; a ``redis.asyncio`` twin of a documented name counts too), used as presented:
calling a documented method, passing a documented argument, overriding a documented
method of an exported class. Everything else is listed: ``_private`` names, names the
documentation does not show, and documented names used in ways it does not promise
(an override redis-py must call at a given moment, a method called unbound to skip an
override, an exception's class changed under redis-py's feet).

How a new one is caught:

- :func:`scan` reads the package's source (``ast``). Every ``_private`` name imported
  from those packages, and every ``obj._name`` whose ``_name`` the package does not
  define itself, is a private use: it must be an entry's ``seen_as``
  (:data:`DOCUMENTED_UNDERSCORE` holds the few underscored names that are documented).
- Every method the package overrides on a class of theirs is an entry or one of
  :data:`PUBLIC_OVERRIDES` (found at run time, through each class's MRO).
- Undocumented names that are not underscored are curated: each entry says how the scan
  sees it (``seen_as``), so an entry whose use is gone fails until it is removed.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster as aio_cluster
import redis.asyncio.connection as aio_connection
import redis.asyncio.sentinel as aio_sentinel
from redis.backoff import NoBackoff
from redis.client import Monitor, Pipeline
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import AbstractConnection, Connection, ConnectionPool
from redis.exceptions import ConnectionError, ReadOnlyError, RedisError, TimeoutError
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

import flask_redispool
from flask_redispool._commands import READS, command_kind, packed_kinds
from flask_redispool._connection import _refused_by_a_replica, pool_connection_class
from flask_redispool._errors import MayHaveRunConnectionError, MayHaveRunTimeoutError
from flask_redispool.testing import RedisClusterServers, RedisServer

from .conftest import StubSentinel

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_redispool"
#: The packages whose undocumented names we track.
OTHERS = ("redis", "flask", "werkzeug", "quart", "fakeredis")
REDIS_8 = hasattr(AbstractConnection, "is_connected")


@dataclass(frozen=True)
class Borrowed:
    """One thing we use that its package does not document as public."""

    package: str  #: whose it is
    name: str  #: what we use, spelled as its package spells it
    why: str  #: what we use it for
    pins: tuple[str, ...]  #: ``tests/<file>.py::<test>``: what fails when a release changes it
    seen_as: tuple[str, ...]  #: how :func:`scan` sees the use (any one of them)
    instead: str = ""  #: the public way that would replace it, where one is known


def _here(*tests: str) -> tuple[str, ...]:
    return tuple(f"tests/test_inventory.py::{test}" for test in tests)


INVENTORY: tuple[Borrowed, ...] = (
    # redis-py: connections
    Borrowed(
        "redis",
        "AbstractConnection.on_connect_check_health(check_health)",
        "The handshake hook, sync and async: a new connection names itself (CLIENT SETNAME, falling back to "
        "unnamed when refused) after AUTH, HELLO and SELECT, and forgets its old transaction state. It "
        "also says that the socket is open (disconnect() says it is closed): a checkout connects only a "
        "closed connection, and a pool counts its idle connections open to the server. A Sentinel "
        "connection asks its server's ROLE there, before it is lent.",
        _here(
            "test_pin_the_handshake_calls_on_connect_check_health_once_per_socket",
            "test_pin_redis_py_opens_a_socket_for_the_handshake_and_closes_it_in_disconnect",
        ),
        (
            "def PoolConnection.on_connect_check_health",
            "def AsyncPoolConnection.on_connect_check_health",
            "def FollowingConnection.on_connect_check_health",
            "def AsyncFollowingConnection.on_connect_check_health",
        ),
        "The client_name connection option (redis-py names the connection itself), plus a CLIENT SETNAME "
        "refusal handled at the first command instead of in the handshake.",
    ),
    Borrowed(
        "redis",
        "AbstractConnection.connect_check_health(check_health=False)",
        "Connect before a send without redis-py's health-check PING (our send checks health itself).",
        _here("test_pin_connect_check_health_connects_without_a_ping"),
        (".connect_check_health",),
        "connect(), which redis-py documents, but it retries the handshake RETRIES times itself: inside "
        "a command's own retries, a server that accepts but does not answer then holds the command "
        "(RETRIES + 1) times longer than SOCKET_TIMEOUT allows (worst_case_seconds).",
    ),
    Borrowed(
        "redis",
        "AbstractConnection.send_packed_command(command, check_health)",
        "Every send, a command or a pipeline's batch, passes here: it is where write-once is decided "
        "(whether what leaves may be sent again). What others send here is whole commands in the Redis "
        "protocol, which we read.",
        _here("test_pin_every_batch_passes_send_packed_command_as_whole_commands"),
        ("def PoolConnection.send_packed_command", "def AsyncPoolConnection.send_packed_command"),
        "A Retry(supported_errors=...) that is told the command (redis-py does not tell it), or a client "
        "subclass that judges execute_command and pipelines.",
    ),
    Borrowed(
        "redis",
        "SentinelManagedConnection.read_response: READONLY becomes ConnectionError",
        "A demoted master's READONLY reaches us as a ConnectionError raised while handling the "
        "ReadOnlyError (__context__): the write did not run, so it may be sent to the new master.",
        (
            *_here("test_pin_a_sentinel_connection_turns_readonly_into_connection_error"),
            "tests/test_sentinel.py::test_a_write_refused_by_a_demoted_master_runs_once_on_the_new_one",
        ),
        ("error.__context__",),
        "None in redis-py; catching ReadOnlyError in our own read_response before redis-py's would do.",
    ),
    Borrowed(
        "redis",
        "exception.__class__ = MayHaveRun*Error (RedisCluster.ERRORS_ALLOW_RETRY)",
        "A failure after an unsafe send gets our subclass as its class: redis-py's cluster client retries "
        "only errors whose type is exactly ConnectionError or TimeoutError, so it does not retry a write.",
        (
            *_here("test_pin_our_error_twins_escape_the_cluster_clients_retry"),
            "tests/test_cluster.py::test_a_write_that_times_out_runs_once",
        ),
        ("error.__class__",),
        "One retry decision of our own: the cluster client's retries set to 0 and our Retry wrapping its "
        "execute_command, or Retry(supported_errors=...) once redis-py asks the retry per error.",
    ),
    # redis-py: pools
    Borrowed(
        "redis",
        "ConnectionPool.owns_connection(connection)",
        "The release asks it; the Sentinel pool's own override disowns a connection to a former master "
        "and drops it (and its slot, before redis-py 8.1): we call ConnectionPool's, skipping it, and "
        "disconnect such a connection instead.",
        _here("test_pin_release_asks_owns_connection"),
        (
            "def _KeepsSlotAfterFailover.owns_connection",
            "ConnectionPool.owns_connection",
        ),
        "Nothing needed from redis-py 8.1 on (redis-py#4187 keeps the slot).",
    ),
    Borrowed(
        "redis",
        "SentinelConnectionPool.master_address, .is_master; Connection.host, .port",
        "Whether a released connection served a former master (its host and port against the master "
        "address the pool last learnt), and the master pool's address in stats.",
        _here("test_pin_a_sentinel_pool_knows_the_master_it_connects_to"),
        (
            "_KeepsSlotAfterFailover: self.master_address",
            "_KeepsSlotAfterFailover: self.is_master",
            "CountedSentinelPool: self.is_master",
        ),
        "Sentinel.discover_master() (a network round trip) for the address.",
    ),
    Borrowed(
        "redis",
        "Sentinel.discover_master(), .discover_slaves(): what a Sentinel pool's connection asks",
        "A Sentinel pool's connection, sync and async, asks its pool's sentinel_manager where to connect "
        "through these two documented methods, each time it connects: ours correct a sentinel that has "
        "not heard of a failover yet with what the sentinels' events said.",
        _here("test_pin_a_sentinel_connection_asks_discover_master_and_discover_slaves"),
        (
            "def FollowingSentinel.discover_master",
            "def FollowingSentinel.discover_slaves",
            "def AsyncFollowingSentinel.discover_master",
            "def AsyncFollowingSentinel.discover_slaves",
        ),
        "A pool option for an address resolver, which redis-py does not have.",
    ),
    Borrowed(
        "redis",
        "Pipeline.connection, Monitor.connection, Redis.connection",
        "The connection a holder keeps (None when it has none): teardown gives back exactly that one, "
        "disconnected, without a round trip (a pipeline's reset() sends UNWATCH on it, a single-connection "
        "client's close() gives it back connected). A pubsub needs none of it: its close() and aclose() "
        "disconnect before they give back.",
        (
            *_here("test_pin_holders_keep_their_connection_in_connection"),
            "tests/test_extension.py::test_teardown_returns_every_connection",
            "tests/test_asyncio.py::test_every_async_connection_holder_is_given_back_when_the_view_raises",
        ),
        (
            "release_holder: holder.connection",
            "release_async: holder.connection",
            "HeldMonitor: self.connection",
        ),
        "Closing the holder (pipe.reset(), pubsub.close(), client.close()), which may talk to the server.",
    ),
    Borrowed(
        "redis",
        "Pipeline(connection_pool, response_callbacks, transaction, shard_hint), Monitor(connection_pool)",
        "Our pipeline and monitor classes are built directly with redis-py's constructors, with the "
        "client's response_callbacks.",
        _here("test_pin_pipelines_and_monitors_built_directly_behave_as_the_clients"),
        (
            "ContextClient: self.response_callbacks",
            "class HeldMonitor(Monitor)",
            "class AsyncHeldMonitor(Monitor)",
            "class HeldPipeline(Pipeline)",
        ),
        "Wrap what client.pipeline() and client.monitor() return instead of subclassing.",
    ),
    Borrowed(
        "redis",
        "Sentinel.sentinels, SentinelConnectionPool.sentinel_manager",
        "Close the clients of the sentinels, sync and async, on redis-py 7, which has no Sentinel.close().",
        _here("test_pin_a_sentinel_keeps_a_client_per_sentinel"),
        ("_close_sentinels: sentinel.sentinels", "CountedAsyncSentinelPool: self.sentinel_manager.sentinels"),
        "Sentinel.close() and aclose() from redis-py 8 on.",
    ),
    # redis-py: client-side cache
    Borrowed(
        "redis",
        "CacheInterface as a cache proxy's cache; CacheConfig.should_cache(command, keys)",
        "REDIS_CLIENT_CACHE counts what redis-py's cache does: each connection gets a CacheInterface of ours around "
        "redis-py's own cache, in its cache proxy. redis-py asks the config's should_cache() once per "
        "read that may be answered from the cache, sets an IN_PROGRESS entry for each one sent to the server, "
        "and deletes by Redis key only for the server's invalidations: lookups less misses are the hits.",
        (
            "tests/test_client_cache.py::test_hits_misses_and_invalidations_are_counted",
            "tests/test_client_cache.py::test_max_size_evicts_and_counts",
        ),
        tuple(
            f"def {name}"
            for name in (
                "CountedCache.collection",
                "CountedCache.config",
                "CountedCache.eviction_policy",
                "CountedCache.size",
                "CountedCache.get",
                "CountedCache.set",
                "CountedCache.delete_by_cache_keys",
                "CountedCache.delete_by_redis_keys",
                "CountedCache.flush",
                "CountedCache.is_cachable",
                "_CountingConfig.should_cache",
            )
        ),
        "Hit, miss and invalidation counts of redis-py's own cache (it records them in OpenTelemetry only).",
    ),
    Borrowed(
        "redis",
        "CacheProxyConnection(conn, cache, pool_lock)",
        "REDIS_CLIENT_CACHE gives each connection a cache of its own: our pools put redis-py's cache proxy "
        "before each connection they make, with its own cache and lock, instead of redis-py's one cache per "
        "pool, whose hits read the socket of the connection that filled the entry while another thread may "
        "wait there for its reply. Relied on: the proxy drains only the connection that filled an entry (its "
        "own), takes the lock only for that, flushes its cache at disconnect and reconnect, and enables "
        "tracking at each connect.",
        (
            "tests/test_client_cache.py::test_eight_threads_on_ten_connections_get_their_own_fresh_replies_while_"
            "another_client_writes",
            "tests/test_client_cache.py::test_each_connection_caches_for_itself_and_the_figures_add_up",
            "tests/test_client_cache.py::test_a_killed_connection_flushes_the_cache",
        ),
        ("redis.connection.CacheProxyConnection",),
        "A cache per connection in redis-py's pools (cache_factory= called per connection), or a hit that "
        "never reads another connection's socket.",
    ),
    # redis-py: cluster
    Borrowed(
        "redis",
        "ClusterPipeline.parent_execute_command",
        "redis-py's cluster pipeline (7 and 8) sends a failed command again, one by one, through it: we "
        "refuse to send a write again there.",
        (
            *_here("test_pin_a_cluster_pipeline_sends_a_command_again_through_parent_execute_command"),
            "tests/test_cluster.py::test_a_pipeline_that_times_out_sends_no_write_again",
        ),
        (".parent_execute_command",),
        "None in redis-py: a retry that is asked per command, told the command, would do.",
    ),
    Borrowed(
        "redis",
        "RedisCluster(connection_pool_class=<callable>)",
        "The cluster client makes each node's pool through it: ours, counted and bounded, one per address.",
        _here("test_pin_the_cluster_client_makes_node_pools_through_connection_pool_class"),
        ("connection_pool_class=",),
        "None in redis-py: RedisCluster takes no documented pool factory.",
    ),
    Borrowed(
        "redis",
        "redis.asyncio RedisCluster.connection_kwargs, .startup_nodes; ClusterNode.connection_class, "
        ".connection_kwargs",
        "The async cluster client takes no connection class: every node it finds makes its connections "
        "from the client's connection_kwargs, so ours go there; it makes its startup nodes anew from the "
        "seeds' host and port alone (redis-py 8.2), so they get ours before the first command.",
        _here("test_pin_the_async_cluster_client_makes_connections_from_its_connection_kwargs"),
        (
            "AsyncClusterClient: self.connection_kwargs.update",
            "AsyncClusterClient: self.startup_nodes",
            "AsyncClusterClient: node.connection_class",
        ),
        "None in redis-py: a connection_class argument of the async RedisCluster.",
    ),
    Borrowed(
        "redis",
        "redis.asyncio NodesManager: nodes_manager, .startup_nodes, .nodes_cache, .aclose(attr)",
        "After asking for the slots, close the seeds' idle connections that duplicate the nodes found; "
        "at close, close both sets of nodes.",
        _here("test_pin_the_async_cluster_client_makes_connections_from_its_connection_kwargs"),
        (".nodes_cache", "manager.startup_nodes", "self.nodes_manager.aclose"),
        "RedisCluster.aclose() alone, if it closed the seeds' connections too.",
    ),
    Borrowed(
        "redis",
        "redis.asyncio RedisCluster reads its retry.get_retries() per command and pipeline",
        "The async cluster client's retry answers 0 while a pipeline of the task executes, so that redis-py "
        "does not send the pipeline again as a whole (its pipeline asks the client's retry: it has none of "
        "its own, unlike the sync one, which gets a retry that never retries through set_retry()).",
        (
            *_here("test_pin_the_async_cluster_client_asks_its_retry_how_often_per_call"),
            "tests/test_cluster.py::test_async_writes_that_time_out_run_once_and_close_leaves_nothing",
        ),
        ("def _PipelineAwareRetry.get_retries",),
        "The one retry decision (issue), told whether a pipeline is running, or a retry of the pipeline's own.",
    ),
    Borrowed(
        "redis",
        "get_pool_name() reads the pool's connection_kwargs['host']",
        "redis-py's own OpenTelemetry figures name a Sentinel pool '<service>/<role>' through the host of its "
        "connection_kwargs, which a Sentinel connection does not use (it asks the sentinels where to connect).",
        ("tests/test_telemetry.py::test_sentinel_pools_are_named_by_service_and_role_and_counted_once_each",),
        ("name_sentinel_pool: pool.connection_kwargs",),
        "A pool-name hook in redis-py's observability, if it gets one.",
    ),
    Borrowed(
        "redis",
        "redis.asyncio ClusterNode sends once per connection it takes",
        "The async cluster client counts a checkout per send on a node's connection: a command, or one node's "
        "share of a pipeline, in a task of its own that gives the connection back before it ends.",
        (
            "tests/test_figures.py::test_cluster_checkouts_are_counted_alike_sync_and_async",
            "tests/test_figures.py::test_async_cluster_connections_count_in_use_while_a_command_or_pipeline_holds_them",
        ),
        ("_CountedSends: super().send_packed_command",),
        "A pool per node in redis.asyncio's cluster client, which it does not have.",
    ),
)

#: Underscored names that their package documents: not private uses.
DOCUMENTED_UNDERSCORE = {
    "_get_current_object": "werkzeug's LocalProxy; Flask's 'The Application Context' page shows it",
}

#: Methods we override on a class of theirs that their documentation presents, and where.
PUBLIC_OVERRIDES = {
    "AppClient.client_setname": "a Redis command method (CLIENT SETNAME), in the commands reference",
    "AppClient.monitor": "Redis.monitor(), shown in redis-py's 'Advanced Features'",
    "ContextClient.monitor": "Redis.monitor(), shown in redis-py's 'Advanced Features'",
    "AsyncContextClient.monitor": "the redis.asyncio twin of Redis.monitor()",
    "ContextClient.pipeline": "Redis.pipeline(), in the API reference",
    "AsyncContextClient.pipeline": "redis.asyncio.Redis.pipeline(), in the API reference",
    "ContextClient.pubsub": "Redis.pubsub(), in the API reference",
    "AsyncContextClient.pubsub": "redis.asyncio.Redis.pubsub(), in the API reference",
    "ClusterClient.close": "RedisCluster.close(), the twin of the documented async one",
    "ClusterClient.execute_command": "RedisCluster.execute_command(), in the API reference",
    "ClusterClient.pipeline": "RedisCluster.pipeline(), in the API reference",
    "ClusterClient.pubsub": "RedisCluster.pubsub(), in the API reference",
    "AsyncClusterClient.execute_command": "redis.asyncio RedisCluster.execute_command(), in the API reference",
    "AsyncClusterClient.initialize": "redis.asyncio RedisCluster.initialize(), in the API reference",
    "AsyncClusterClient.pipeline": "redis.asyncio RedisCluster.pipeline(), in the API reference",
    "AsyncClusterClient.pubsub": "redis.asyncio RedisCluster.pubsub(), in the API reference (redis-py 8 on)",
    "WaitingClusterPipeline.execute_command": "redis.asyncio ClusterPipeline.execute_command(), in the API reference",
    "WaitingClusterPipeline.execute": "redis.asyncio.cluster.ClusterPipeline.execute(), in the API reference",
    "WaitingClusterPipeline.multi": "redis.asyncio.cluster.ClusterPipeline.multi(), in the API reference",
    "WaitingClusterPipeline.watch": "redis.asyncio.cluster.ClusterPipeline.watch(), in the API reference",
    "WaitingClusterPipeline.reset": "redis.asyncio.cluster.ClusterPipeline.reset(), in the API reference",
    "OnceRetry.call_with_retry": "Retry.call_with_retry(), in the API reference ('Retry Helpers')",
    "AsyncOnceRetry.call_with_retry": "the redis.asyncio twin of Retry.call_with_retry()",
    "CountedPool.get_connection": "ConnectionPool.get_connection(), in the API reference",
    "CountedPool.release": "ConnectionPool.release(), in the API reference",
    "CountedPool.make_connection": "ConnectionPool.make_connection(), in the API reference",
    "CountedPool.ensure_connection": "ConnectionPool.ensure_connection(), in the API reference (redis-py 8 on)",
    "CountedSentinelPool.get_connection": "ConnectionPool.get_connection(), in the API reference",
    "CountedSentinelPool.release": "ConnectionPool.release(), in the API reference",
    "SidePool.get_connection": "ConnectionPool.get_connection(), in the API reference",
    "SidePool.release": "ConnectionPool.release(), in the API reference",
    "SideSentinelPool.release": "ConnectionPool.release(), in the API reference",
    "SideSentinelPool.get_connection": "ConnectionPool.get_connection(), in the API reference",
    "CountedAsyncSentinelPool.get_connection": "redis.asyncio ConnectionPool.get_connection(), in the API reference",
    "CountedAsyncSentinelPool.release": "redis.asyncio ConnectionPool.release(), in the API reference",
    "CountedAsyncPool.get_connection": "redis.asyncio ConnectionPool.get_connection(), in the API reference",
    "CountedAsyncPool.release": "redis.asyncio ConnectionPool.release(), in the API reference",
    "CountedAsyncPool.make_connection": "the redis.asyncio twin of ConnectionPool.make_connection()",
    "CountedAsyncPool.aclose": "redis.asyncio ConnectionPool.aclose(), in the API reference",
    "CountedAsyncSentinelPool.aclose": "redis.asyncio ConnectionPool.aclose(), in the API reference",
    "PoolConnection.connect": "a connection's connect(), shown in redis-py's guides",
    "PoolConnection.disconnect": "a connection's disconnect(), shown in redis-py's guides",
    "AsyncPoolConnection.disconnect": "the redis.asyncio twin of disconnect()",
    "AsyncPoolConnection.connect": "the redis.asyncio twin of connect()",
    "PoolConnection.send_command": "a connection's send_command(), shown in redis-py's guides",
    "AsyncPoolConnection.send_command": "the redis.asyncio twin of send_command()",
    "PoolConnection.read_response": "a connection's read_response(), shown in redis-py's guides",
    "AsyncPoolConnection.read_response": "the redis.asyncio twin of read_response()",
}

#: Methods of ours that share their name with an undocumented method of theirs and borrow
#: nothing from it: they do not call it (no ``super()``, checked) and build what they return
#: from documented constructor arguments, and the package they shadow never calls them.
#: Users find the method they know; a release that changes or drops theirs changes nothing.
SHADOWED = {
    "ContextClient.client": "Redis.client(): ours is Redis(connection_pool=, single_connection_client=True)",
    "AsyncContextClient.client": "the redis.asyncio twin, built from the same documented arguments",
}

#: Overrides of methods that some supported releases lack.
NOT_ON_EVERY_RELEASE = frozenset(
    {"AsyncClusterClient.pubsub", "_CountingConfig.should_cache", "CountedPool.ensure_connection"}
)


# --- the scan --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found in some modules."""

    #: Every fact about a use, as ``seen_as`` spells it, and where it was seen.
    facts: dict[str, list[str]]
    #: The facts that are private uses of another package's names.
    private: dict[str, list[str]]


def _package_sources() -> dict[str, str]:
    return {f"flask_redispool/{path.name}": path.read_text() for path in sorted(PACKAGE.glob("*.py"))}


def _defined_names(trees: dict[str, ast.Module]) -> set[str]:
    """Every name the scanned code defines itself: functions, classes, arguments,
    assigned names and attributes, import aliases. Its own ``_private`` names are these."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return names


class _Facts(ast.NodeVisitor):
    """Collects the facts of one module: imports from other packages, attributes (by name,
    as written, and within their class or function), methods, class bases, call keywords."""

    def __init__(self, where: str, scope: str, ours: set[str], scan: Scan) -> None:
        self.where, self.scopes, self.ours, self.scan = where, [scope], ours, scan
        self.classes: list[str] = []

    def note(self, fact: str, node: ast.AST, *, private: bool = False) -> None:
        place = f"{self.where}:{getattr(node, 'lineno', 0)}"
        self.scan.facts.setdefault(fact, []).append(place)
        if private:
            self.scan.private.setdefault(fact, []).append(place)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0 and module.split(".")[0] in OTHERS:
            for alias in node.names:
                parts = [*module.split("."), alias.name]
                self.note(f"import {'.'.join(parts)}", node, private=any(p.startswith("_") for p in parts))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] in OTHERS:
                self.note(f"import {alias.name}", node, private=any(p.startswith("_") for p in parts))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name, written = node.attr, ast.unparse(node)
        private = (
            name.startswith("_")
            and not name.startswith("__")
            and name not in self.ours
            and name not in DOCUMENTED_UNDERSCORE
        )
        self.note(f".{name}", node, private=private)
        self.note(written, node)
        self.note(f"{self.scopes[-1]}: {written}", node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None:
            self.note(f"{node.arg}=", node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = ", ".join(ast.unparse(base) for base in node.bases)
        self.note(f"class {node.name}({bases})", node)
        self.scopes.append(node.name)
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()
        self.scopes.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if self.classes and self.scopes[-1] == self.classes[-1]:
            self.note(f"def {self.classes[-1]}.{node.name}", node)
        if not self.classes:  # a module-level function is its own scope
            self.scopes.append(node.name)
            self.generic_visit(node)
            self.scopes.pop()
        else:
            self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)


def scan(sources: dict[str, str]) -> Scan:
    """The facts of ``sources`` (file name: Python source), and which are private uses."""
    trees = {where: ast.parse(source, where) for where, source in sources.items()}
    ours = _defined_names(trees)
    found = Scan(facts={}, private={})
    for where, tree in trees.items():
        _Facts(where, Path(where).stem, ours, found).visit(tree)
    return found


@pytest.fixture(scope="module")
def package_scan() -> Scan:
    return scan(_package_sources())


def _seen(entry: Borrowed) -> set[str]:
    return set(entry.seen_as)


def test_every_private_name_the_package_uses_is_in_the_inventory(package_scan: Scan) -> None:
    listed = set().union(*map(_seen, INVENTORY))
    unlisted = {fact: places for fact, places in package_scan.private.items() if fact not in listed}
    assert not unlisted, (
        "flask_redispool uses private names of the packages it builds on that INVENTORY "
        f"(tests/test_inventory.py) does not list: {unlisted}. Use their public API instead, or add an "
        "entry with the reason, the seen_as above, a test that pins the behaviour relied on, and a line in "
        "docs/design.rst ('What we borrow from others')."
    )


def test_every_inventory_entry_is_still_used(package_scan: Scan) -> None:
    stale = [entry.name for entry in INVENTORY if not _seen(entry) & package_scan.facts.keys()]
    assert not stale, (
        f"flask_redispool no longer uses {stale}: remove these entries from INVENTORY "
        "(tests/test_inventory.py), their pins, and their lines in docs/design.rst."
    )


def test_each_seen_as_is_seen(package_scan: Scan) -> None:
    """Every way an entry says it is seen matches something (a typo would hide a use)."""
    unseen = [(entry.name, fact) for entry in INVENTORY for fact in entry.seen_as if fact not in package_scan.facts]
    assert not unseen, f"these seen_as match nothing in flask_redispool/: {unseen}"


def test_the_scan_catches_a_new_private_use() -> None:
    source = """
from redis.connection import ConnectionPool
from flask.globals import _cv_request
import werkzeug._internal


class Ours(ConnectionPool):
    def __init__(self) -> None:
        self._mine = 0

    def peek(self) -> int:
        return len(self._in_use_connections) + self._mine + len(_cv_request.get().url)
"""
    found = scan({"new.py": source})
    assert set(found.private) == {
        "._in_use_connections",
        "import flask.globals._cv_request",
        "import werkzeug._internal",
    }
    assert found.private["._in_use_connections"] == ["new.py:12"]
    assert "Ours: self._in_use_connections" in found.facts  # where an entry would say it is seen


def test_our_own_private_names_and_documented_underscores_are_not_flagged() -> None:
    source = """
from flask import current_app


class Publisher:
    _lent = None

    def start(self) -> object:
        self._thread = 1
        return self._thread, self._lent, current_app._get_current_object()
"""
    assert scan({"ours.py": source}).private == {}


# --- overrides, found through the MRO --------------------------------------------------


def _our_classes() -> set[type]:
    modules = [
        importlib.import_module(f"flask_redispool.{info.name}")
        for info in pkgutil.iter_modules(flask_redispool.__path__)
    ]
    classes = {
        value
        for module in modules
        for value in vars(module).values()
        if inspect.isclass(value) and value.__module__.startswith("flask_redispool")
    }
    # The connection mixins meet redis-py's classes only in the classes made per pool.
    from fakeredis import FakeAsyncRedisConnection, FakeRedisConnection

    from flask_redispool._asyncio import _ASYNC_TWINS

    for base in (*_ASYNC_TWINS, FakeRedisConnection):
        classes.add(pool_connection_class(base, _OpenPolicy()))  # type: ignore[arg-type]
    for base in (*_ASYNC_TWINS.values(), FakeAsyncRedisConnection):
        classes.add(pool_connection_class(base, _OpenPolicy(), asynchronous=True))  # type: ignore[arg-type]
    return classes


def _is_method(value: object) -> bool:
    return inspect.isfunction(value) or isinstance(value, property | staticmethod | classmethod)


def _overrides() -> dict[str, str]:
    """``Ours.method``: whose method it overrides, for every method (dunders aside) that one
    of our classes defines and a class of theirs later in its MRO defines too."""
    found: dict[str, str] = {}
    for cls in _our_classes():
        mro = cls.__mro__
        for index, own in enumerate(mro):
            if not own.__module__.startswith("flask_redispool"):
                continue
            for name, value in vars(own).items():
                if (name.startswith("__") and name.endswith("__")) or not _is_method(value):
                    continue
                for other in mro[index + 1 :]:
                    if other.__module__.split(".")[0] in OTHERS and name in vars(other):
                        found[f"{own.__qualname__}.{name}"] = f"{other.__module__}.{other.__qualname__}"
                        break
    return found


def test_every_override_of_their_methods_is_listed() -> None:
    overrides = _overrides()
    in_inventory = {fact[len("def ") :] for entry in INVENTORY for fact in entry.seen_as if fact.startswith("def ")}
    listed = in_inventory | PUBLIC_OVERRIDES.keys() | SHADOWED.keys()
    unlisted = {name: whose for name, whose in overrides.items() if name not in listed}
    assert not unlisted, (
        f"flask_redispool overrides methods of the packages it builds on that are not listed: {unlisted}. "
        "If their docs present the method, add it to PUBLIC_OVERRIDES with where; otherwise add an INVENTORY "
        "entry (reason, pin, docs/design.rst)."
    )
    gone = listed - overrides.keys() - NOT_ON_EVERY_RELEASE
    assert not gone, f"listed as overrides but no longer overriding anything: {sorted(gone)}"


def test_shadowed_methods_borrow_nothing_from_the_method_they_shadow() -> None:
    classes = {cls.__qualname__: cls for cls in _our_classes()}
    for name in SHADOWED:
        owner, _, method = name.partition(".")
        source = inspect.getsource(vars(classes[owner])[method])
        assert "super(" not in source, f"{name} calls the method it shadows: list it in INVENTORY instead"
    # redis-py calls no client() of its own clients: it would reach ours.
    for module in (redis.client, redis.asyncio.client):
        assert ".client()" not in inspect.getsource(module)


# --- the inventory's own checks ----------------------------------------------------------


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_each_entry_names_pins_that_exist() -> None:
    missing = []
    for entry in INVENTORY:
        assert entry.pins, f"{entry.name} has no pin"
        for pin in entry.pins:
            file, _, test = pin.partition("::")
            if not (ROOT / file).is_file() or test not in _test_names(ROOT / file):
                missing.append((entry.name, pin))
    assert not missing, f"pins that do not exist: {missing}"


def test_every_pin_here_pins_an_entry() -> None:
    pins = {pin.partition("::")[2] for entry in INVENTORY for pin in entry.pins}
    here = {name for name in _test_names(Path(__file__)) if name.startswith("test_pin_")}
    assert here <= pins, f"pins no entry names: {sorted(here - pins)}"


def test_entries_are_distinct_and_of_the_packages_we_track() -> None:
    names = [entry.name for entry in INVENTORY]
    assert len(names) == len(set(names))
    assert {entry.package for entry in INVENTORY} <= set(OTHERS)
    assert all(entry.why and entry.instead for entry in INVENTORY)


def _design_section() -> str:
    text = (ROOT / "docs" / "design.rst").read_text()
    start = text.index("What we borrow from others")
    after = re.search(r"\n[^\n]+\n-{3,}\n", text[start + 60 :])  # the next section's title
    return text[start : start + 60 + after.start()] if after else text[start:]


def test_the_design_page_lists_the_inventory_and_its_count() -> None:
    section = _design_section()
    assert f"**{len(INVENTORY)}**" in section, f"docs/design.rst must say the count: **{len(INVENTORY)}**"
    missing = [entry.name for entry in INVENTORY if f"``{entry.name}``" not in section]
    assert not missing, f"docs/design.rst ('What we borrow from others') does not list: {missing}"
    listed = re.findall(r"^- ``(.+?)``", section, flags=re.MULTILINE)
    assert len(listed) == len(INVENTORY), "the page lists something the inventory does not"


# --- the pins: connections -----------------------------------------------------------------


def _address(redis_server: RedisServer) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": redis_server.port, "socket_timeout": 5}


class _OpenPolicy:
    """What our connection classes ask of their pool's policy, with nothing to say."""

    naming_refused = None
    breakers = SimpleNamespace(
        per_node=False, shared=SimpleNamespace(refusing=False, failing=False, refuse=lambda: None)
    )

    def check_open(self) -> None:
        pass

    def connection_name(self, suffix: str) -> None:
        return None

    def deadline(self) -> None:
        return None

    def explain(self, error: BaseException, **why: Any) -> None:
        pass


def _sock_assignments(cls: type) -> set[str]:
    return {
        name
        for name, member in vars(cls).items()
        if inspect.isfunction(member) and "self._sock = " in inspect.getsource(member)
    }


def test_pin_redis_py_opens_a_socket_for_the_handshake_and_closes_it_in_disconnect(
    redis_server: RedisServer,
) -> None:
    """What our connections' ``socket_open`` follows, sync and async: a socket is set only
    to run the handshake on it, and dropped only in disconnect()."""
    import redis.connection

    assert inspect.getsource(redis.connection).count("self._sock = ") == 3
    assert _sock_assignments(AbstractConnection) == {"__init__", "connect_check_health", "disconnect"}
    source = inspect.getsource(AbstractConnection.connect_check_health)
    assert source.index("self._sock = sock") < source.index("self.on_connect_check_health(")
    # Ours agree with the socket through a failed handshake, a server that drops the
    # connection, and a reconnect.
    make = pool_connection_class(Connection, _OpenPolicy())  # type: ignore[arg-type]
    refused = make(db=99, **_address(redis_server))  # SELECT 99 is refused
    with pytest.raises(RedisError):
        refused.connect()
    assert (refused.socket_open, refused._sock) == (False, None)
    connection = make(**_address(redis_server))
    try:
        connection.connect()
        assert connection.socket_open
        connection.send_command("CLIENT", "ID")
        _kill(redis_server, connection.read_response())
        connection.send_command("PING")
        with pytest.raises(ConnectionError):
            connection.read_response()
        assert (connection.socket_open, connection._sock) == (False, None)
        connection.send_command("PING")  # reconnects
        assert connection.read_response() == b"PONG"
        assert connection.socket_open
        assert connection._sock is not None
    finally:
        connection.disconnect()
    assert asyncio.run(_async_socket_open_follows_the_socket(redis_server)) == [False, True, False, True, False]


def _kill(redis_server: RedisServer, client_id: int) -> None:
    with redis.Redis(**_address(redis_server)) as admin:
        admin.client_kill_filter(_id=client_id)


async def _async_socket_open_follows_the_socket(redis_server: RedisServer) -> list[bool]:
    """The async twin: ``socket_open`` says what redis-py's own ``is_connected`` says."""
    make = pool_connection_class(aio_connection.Connection, _OpenPolicy(), asynchronous=True)  # type: ignore[arg-type]
    seen: list[bool] = []

    def agree(connection: Any) -> None:
        assert connection.socket_open is connection.is_connected
        seen.append(connection.socket_open)

    refused = make(db=99, **_address(redis_server))
    with pytest.raises(RedisError):
        await refused.connect()
    agree(refused)
    connection = make(**_address(redis_server))
    try:
        await connection.connect()
        agree(connection)
        await connection.send_command("CLIENT", "ID")
        _kill(redis_server, await connection.read_response())
        await connection.send_command("PING")
        with pytest.raises(ConnectionError):
            await connection.read_response()
        agree(connection)
        await connection.send_command("PING")  # reconnects
        assert await connection.read_response() == b"PONG"
        agree(connection)
    finally:
        await connection.disconnect()
    agree(connection)
    return seen


class _Recording(Connection):
    """Records what redis-py calls on a connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self.calls.append(("on_connect_check_health", check_health))
        super().on_connect_check_health(check_health)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("send_command", *args[:2]))
        super().send_command(*args, **kwargs)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.calls.append(("send_packed_command", check_health, packed_kinds(command)))
        super().send_packed_command(command, check_health)


class _AsyncRecording(aio_connection.Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        self.calls.append(("on_connect_check_health", check_health))
        await super().on_connect_check_health(check_health)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.calls.append(("send_packed_command", check_health, packed_kinds(command)))
        await super().send_packed_command(command, check_health)


def test_pin_the_handshake_calls_on_connect_check_health_once_per_socket(redis_server: RedisServer) -> None:
    pool = ConnectionPool(connection_class=_Recording, **_address(redis_server))
    client = redis.Redis(connection_pool=pool)
    try:
        client.ping()
        client.ping()
        (connection,) = pool._get_free_connections()
        assert [call for call in connection.calls if call[0] == "on_connect_check_health"] == [
            ("on_connect_check_health", True)
        ]
    finally:
        pool.disconnect()

    async def handshake() -> list[tuple[Any, ...]]:
        async_pool = aio_connection.ConnectionPool(connection_class=_AsyncRecording, **_address(redis_server))
        async_client = redis.asyncio.Redis(connection_pool=async_pool)
        try:
            await async_client.ping()
            await async_client.ping()
            connection = await async_pool.get_connection()
            await async_pool.release(connection)
            return [call for call in connection.calls if call[0] == "on_connect_check_health"]
        finally:
            await async_pool.aclose()

    assert asyncio.run(handshake()) == [("on_connect_check_health", True)]


def test_pin_connect_check_health_connects_without_a_ping(redis_server: RedisServer) -> None:
    for cls in (AbstractConnection, aio_connection.AbstractConnection):
        assert "check_health" in inspect.signature(cls.connect_check_health).parameters
    connection = _Recording(health_check_interval=1, **_address(redis_server))
    try:
        connection.connect_check_health(check_health=False)
        assert connection._sock is not None
        assert ("on_connect_check_health", False) in connection.calls
        assert ("send_command", "PING") not in connection.calls
    finally:
        connection.disconnect()

    async def connect() -> list[tuple[Any, ...]]:
        async_connection = _AsyncRecording(health_check_interval=1, **_address(redis_server))
        try:
            await async_connection.connect_check_health(check_health=False)
            assert async_connection.is_connected
            return async_connection.calls
        finally:
            await async_connection.disconnect()

    assert ("on_connect_check_health", False) in asyncio.run(connect())


#: A value past redis-py's buffer cutoff (6000 bytes): packed as a chunk of its own.
_LARGE = "x" * 7000
#: What a pipeline's batch of ``incr``, ``set`` (a large value) and ``get`` sends, read from its bytes.
_BATCH = [command_kind(name) for name in ("MULTI", "INCRBY", "SET", "GET", "EXEC")]


def test_pin_every_batch_passes_send_packed_command_as_whole_commands(redis_server: RedisServer) -> None:
    """A command passes send_command (ours sends it without send_packed_command); a
    pipeline's batch passes send_packed_command, as whole commands of the Redis protocol,
    cut only around a large value, whose names :func:`packed_kinds` reads."""
    pool = ConnectionPool(connection_class=_Recording, **_address(redis_server))
    client = redis.Redis(connection_pool=pool)
    try:
        client.ping()  # the handshake's own sends first
        (connection,) = pool._get_free_connections()
        connection.calls.clear()
        client.set("pin", "1")
        with client.pipeline() as pipe:
            pipe.incr("pin")
            pipe.set("large", _LARGE)
            pipe.get("pin")
            pipe.execute()
        assert connection.calls == [
            ("send_command", "SET", "pin"),
            ("send_packed_command", True, [command_kind("SET")]),  # redis-py's send_command
            ("send_packed_command", True, _BATCH),
        ]
    finally:
        client.delete("pin", "large")
        pool.disconnect()

    async def sends() -> list[tuple[Any, ...]]:
        async_pool = aio_connection.ConnectionPool(connection_class=_AsyncRecording, **_address(redis_server))
        async_client = redis.asyncio.Redis(connection_pool=async_pool)
        try:
            await async_client.ping()
            connection = await async_pool.get_connection()
            await async_pool.release(connection)
            connection.calls.clear()
            await async_client.set("pin", "1")
            async with async_client.pipeline() as pipe:
                pipe.incr("pin")
                pipe.set("large", _LARGE)
                pipe.get("pin")
                await pipe.execute()
            await async_client.delete("pin", "large")
            calls: list[tuple[Any, ...]] = connection.calls[:2]
            return calls
        finally:
            await async_pool.aclose()

    assert asyncio.run(sends()) == [
        ("send_packed_command", True, [command_kind("SET")]),
        ("send_packed_command", True, _BATCH),
    ]


def test_pin_a_sentinel_connection_turns_readonly_into_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class MasterPool:
        is_master = True

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError("You can't write against a read only replica.")

    async def refuse_async(*args: Any, **kwargs: Any) -> Any:
        refuse()

    monkeypatch.setattr(AbstractConnection, "read_response", refuse)
    monkeypatch.setattr(aio_connection.AbstractConnection, "read_response", refuse_async)
    with pytest.raises(ConnectionError) as raised:
        SentinelManagedConnection(connection_pool=MasterPool()).read_response()
    assert isinstance(raised.value.__context__, ReadOnlyError)
    assert _refused_by_a_replica(raised.value)

    async def read() -> None:
        await aio_sentinel.SentinelManagedConnection(connection_pool=MasterPool()).read_response()

    with pytest.raises(ConnectionError) as raised:
        asyncio.run(read())
    assert isinstance(raised.value.__context__, ReadOnlyError)
    assert _refused_by_a_replica(raised.value)


def test_pin_our_error_twins_escape_the_cluster_clients_retry() -> None:
    for error_class, twin in ((ConnectionError, MayHaveRunConnectionError), (TimeoutError, MayHaveRunTimeoutError)):
        error = error_class("lost")
        error.__class__ = twin  # what _connection does; Python refuses it when the layouts differ
        assert isinstance(error, error_class)
        assert str(error) == "lost"
        for client_class in (RedisCluster, aio_cluster.RedisCluster):
            assert error_class in client_class.ERRORS_ALLOW_RETRY
            assert type(error) not in client_class.ERRORS_ALLOW_RETRY  # the exact type decides
    source = inspect.getsource(RedisCluster)
    assert "type(e) in" in source
    assert "ERRORS_ALLOW_RETRY" in source


# --- the pins: pools -----------------------------------------------------------------------


def test_pin_release_asks_owns_connection(redis_server: RedisServer) -> None:
    asked: list[object] = []

    class Asking(ConnectionPool):
        def owns_connection(self, connection: Any) -> Any:
            asked.append(connection)
            return ConnectionPool.owns_connection(self, connection)

    pool = Asking(**_address(redis_server))
    try:
        connection = pool.get_connection()
        assert ConnectionPool.owns_connection(pool, connection)
        pool.release(connection)
        assert asked == [connection]
        assert pool._get_free_connections() == [connection]
        assert SentinelConnectionPool.owns_connection is not ConnectionPool.owns_connection  # what we skip
    finally:
        pool.disconnect()


def test_pin_a_sentinel_pool_knows_the_master_it_connects_to(redis_server: RedisServer) -> None:
    pool = SentinelConnectionPool("pinned", StubSentinel(redis_server.port), is_master=True, socket_timeout=5)
    try:
        assert pool.is_master is True
        assert pool.master_address is None
        connection = pool.get_connection()
        assert pool.master_address == ("127.0.0.1", redis_server.port)
        assert (connection.host, connection.port) == pool.master_address
        pool.release(connection)
    finally:
        pool.disconnect()
    replicas = SentinelConnectionPool("pinned", StubSentinel(redis_server.port), is_master=False)
    assert replicas.is_master is False


def test_pin_a_sentinel_connection_asks_discover_master_and_discover_slaves(redis_server: RedisServer) -> None:
    class Asked(StubSentinel):
        def __init__(self, port: int) -> None:
            super().__init__(port)
            self.asked: list[str] = []

        def discover_master(self, service: str) -> tuple[str, int]:
            self.asked.append("master")
            return self.address

        def discover_slaves(self, service: str) -> list[tuple[str, int]]:
            self.asked.append("replicas")
            return [self.address]

    sentinel = Asked(redis_server.port)
    for is_master, asked in ((True, "master"), (False, "replicas")):
        pool = SentinelConnectionPool("pinned", sentinel, is_master=is_master, socket_timeout=5)
        try:
            pool.release(pool.get_connection())
            assert sentinel.asked[-1] == asked
        finally:
            pool.disconnect()

    class AsyncAsked(aio_sentinel.Sentinel):
        asked: ClassVar[list[str]] = []

        async def discover_master(self, service_name: str) -> tuple[str, int]:
            self.asked.append("master")
            return sentinel.address

        async def discover_slaves(self, service_name: str) -> list[tuple[str, int]]:
            self.asked.append("replicas")
            return [sentinel.address]

    async def connect() -> None:
        manager = AsyncAsked([])
        for is_master, asked in ((True, "master"), (False, "replicas")):
            pool = aio_sentinel.SentinelConnectionPool("pinned", manager, is_master=is_master, socket_timeout=5)
            try:
                await pool.release(await pool.get_connection())
                assert manager.asked[-1] == asked
            finally:
                await pool.disconnect()

    asyncio.run(connect())


def test_pin_holders_keep_their_connection_in_connection(redis_server: RedisServer) -> None:
    pool = ConnectionPool(**_address(redis_server))
    client = redis.Redis(connection_pool=pool)
    try:
        pipe = client.pipeline()
        assert pipe.connection is None
        pipe.watch("pin")
        assert pipe.connection is not None
        pipe.reset()
        assert pipe.connection is None
        monitor = client.monitor()
        assert monitor.connection is not None  # taken when the monitor is made
        pool.release(monitor.connection)
        pinned = client.client()
        assert pinned.connection is not None
        pinned.close()
        assert pinned.connection is None
    finally:
        pool.disconnect()

    async def held() -> None:
        async_pool = aio_connection.ConnectionPool(**_address(redis_server))
        async_client = redis.asyncio.Redis(connection_pool=async_pool)
        try:
            pipe = async_client.pipeline()
            assert pipe.connection is None
            await pipe.watch("pin")
            assert pipe.connection is not None
            await pipe.aclose()
            async with async_client.monitor() as monitor:
                assert monitor.connection is not None
        finally:
            await async_pool.aclose()

    asyncio.run(held())


def test_pin_pipelines_and_monitors_built_directly_behave_as_the_clients(redis_server: RedisServer) -> None:
    assert list(inspect.signature(Pipeline.__init__).parameters)[1:5] == [
        "connection_pool",
        "response_callbacks",
        "transaction",
        "shard_hint",
    ]
    assert list(inspect.signature(redis.asyncio.client.Pipeline.__init__).parameters)[1:5] == [
        "connection_pool",
        "response_callbacks",
        "transaction",
        "shard_hint",
    ]
    client = redis.Redis(**_address(redis_server), decode_responses=True)
    try:
        with Pipeline(client.connection_pool, client.response_callbacks, True, None) as pipe:
            pipe.set("pin", "1")
            pipe.get("pin")
            assert pipe.execute() == [True, "1"]
        monitor = Monitor(client.connection_pool)
        with monitor:
            assert monitor.connection is not None
    finally:
        client.delete("pin")
        client.connection_pool.disconnect()
    assert list(inspect.signature(redis.asyncio.client.Monitor.__init__).parameters)[1:] == ["connection_pool"]


def test_pin_a_sentinel_keeps_a_client_per_sentinel() -> None:
    addresses = [("127.0.0.1", 1), ("127.0.0.1", 2)]
    sentinel = Sentinel(addresses)
    assert [client.connection_pool.connection_kwargs["port"] for client in sentinel.sentinels] == [1, 2]

    async def async_sentinels() -> None:
        manager = aio_sentinel.Sentinel(addresses)
        assert [client.connection_pool.connection_kwargs["port"] for client in manager.sentinels] == [1, 2]
        pool = aio_sentinel.SentinelConnectionPool("pinned", manager)
        assert pool.sentinel_manager is manager
        for client in manager.sentinels:
            await client.aclose()

    asyncio.run(async_sentinels())
    for client in sentinel.sentinels:
        client.close()


# --- the pins: cluster ---------------------------------------------------------------------


def test_pin_the_cluster_client_makes_node_pools_through_connection_pool_class(
    redis_cluster: RedisClusterServers,
) -> None:
    made: list[dict[str, Any]] = []

    def pool_class(**kwargs: Any) -> ConnectionPool:
        made.append(kwargs)
        return ConnectionPool(**kwargs)

    first, second = redis_cluster.nodes[:2]
    client = RedisCluster(
        url=f"redis://127.0.0.1:{first.port}",
        startup_nodes=[ClusterNode("127.0.0.1", second.port)],
        connection_pool_class=pool_class,
        socket_timeout=5,
    )
    try:
        client.ping(target_nodes=RedisCluster.ALL_NODES)
        assert {("127.0.0.1", kwargs["port"]) for kwargs in made} >= {
            (node.host, node.port) for node in client.get_nodes()
        }
        assert all(isinstance(node, ClusterNode) for node in client.startup_nodes)
        assert {node.port for node in client.startup_nodes} >= {second.port}
    finally:
        client.close()
        for node in client.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


def test_pin_a_cluster_pipeline_sends_a_command_again_through_parent_execute_command(
    redis_cluster: RedisClusterServers,
) -> None:
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port, socket_timeout=5)
    try:
        pipe = client.pipeline()
        assert pipe.parent_execute_command.__func__ is RedisCluster.execute_command
    finally:
        client.close()


class _Marked(aio_connection.Connection):
    """A connection class the async cluster client is given through its kwargs."""


def test_pin_the_async_cluster_client_makes_connections_from_its_connection_kwargs(
    redis_cluster: RedisClusterServers,
) -> None:
    async def cluster() -> None:
        client = aio_cluster.RedisCluster(
            startup_nodes=[aio_cluster.ClusterNode("127.0.0.1", redis_cluster.nodes[0].port)], socket_timeout=5
        )
        client.connection_kwargs.update(connection_class=_Marked)
        for node in client.startup_nodes:
            node.connection_class = _Marked
            assert isinstance(node.connection_kwargs, dict)
        try:
            await client.initialize()
            manager = client.nodes_manager
            assert isinstance(manager.startup_nodes, dict)
            assert isinstance(manager.nodes_cache, dict)
            assert all(node.connection_class is _Marked for node in manager.nodes_cache.values())
            await client.set("{pin}b", "1")
            assert await client.get("{pin}b") == b"1"
            await client.delete("{pin}b")
            for name, node in list(manager.startup_nodes.items()):
                if manager.nodes_cache.get(name) is not node:
                    await node.disconnect_free_connections()
        finally:
            await client.aclose()
            await client.nodes_manager.aclose()
            await client.nodes_manager.aclose("startup_nodes")

    asyncio.run(cluster())


def test_pin_the_async_cluster_client_asks_its_retry_how_often_per_call(redis_cluster: RedisClusterServers) -> None:
    from redis.asyncio.retry import Retry as AsyncRetry

    asked: list[int] = []

    class Counting(AsyncRetry):
        def get_retries(self) -> int:
            asked.append(1)
            return super().get_retries()

    async def cluster() -> tuple[int, int]:
        client = aio_cluster.RedisCluster(
            host="127.0.0.1", port=redis_cluster.nodes[0].port, retry=Counting(NoBackoff(), 1), socket_timeout=5
        )
        try:
            await client.set("{pin}c", "1")
            after_command = len(asked)
            async with client.pipeline() as pipe:
                pipe.get("{pin}c")
                pipe.delete("{pin}c")
                await pipe.execute()
            return after_command, len(asked)
        finally:
            await client.aclose()

    after_command, after_pipeline = asyncio.run(cluster())
    assert 0 < after_command < after_pipeline


# --- the pins: commands and OpenTelemetry -----------------------------------------------------


#: Reads redis-py 8.2 lists and redis-py 7 did not: sent again on every release we support.
_READS_SINCE_REDIS_8 = frozenset({"SDIFFCARD", "SUNIONCARD", "FT.ALIASLIST"})


def test_our_table_of_reads_is_redis_pys() -> None:
    """:data:`~flask_redispool._commands.READS` is redis-py 8.2's ``READ_COMMANDS``, which
    its cluster client sends to replicas. What matters for a write never running twice is
    one way: every command we send again is one redis-py reads as read-only too (a release
    that drops one from its table fails here, to be looked at). A read that a later
    release adds is sent once until it is added here: safe, and no reason to fail."""
    from redis.commands import READ_COMMANDS

    assert READS - READ_COMMANDS <= _READS_SINCE_REDIS_8
    if REDIS_8:
        assert READS <= READ_COMMANDS
    assert {"GET", "MGET", "HGETALL", "SCAN", "EXISTS", "TTL"} <= READS
    assert not {"SET", "INCR", "DEL", "EVAL", "EXPIRE", "LPUSH"} & READS
