"""The connections our pools make: named, sent at most once unless safe, self-explaining.

Each pool gets its own subclass of the connection class its URL asks for (redis-py's
or fakeredis's, sync or ``redis.asyncio``), carrying the pool's :class:`ConnectionPolicy`.
The subclass changes four things, all through redis-py's public connection methods:

- **Names.** After the handshake it sends ``CLIENT SETNAME <client name>:<host>:<pid>``
  itself. A server that refuses it (``CLIENT`` renamed away, an ACL user without
  ``client|setname``) does not fail the connection: the pool logs one warning and makes
  unnamed connections from then on, without asking again.
- **Retries that never run a write twice.** Each send records whether it is safe to
  send again (:func:`flask_redispool._commands.judge_send`: the command, and the
  transaction its connection stands in; a batch, whoever packed it, is read from the
  bytes it sends). A failure after the bytes of an unsafe send
  may have left is marked, and :class:`OnceRetry` does not retry it; one that happened
  while connecting, before anything was sent, is retried as before.
- **Blocking commands** whose server-side wait outlasts the socket timeout are refused
  before sending, with a message that points at ``redis_pool.blocking()``.
- **Failures name our config keys**: a note is added to the exception (connection
  refused, timeout, credentials wanted). Only failure paths pay for it.
- **A circuit breaker** (:mod:`~flask_redispool._breaker`): each failure is told to it,
  each reply ends a streak, and while it is open a connect or send raises at once.
- **A bounded age** (``MAX_CONNECTION_AGE``): each connection takes a deadline when it
  connects, and a checkout that finds it past it reconnects it (:meth:`_Sending.outlived`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.retry import Retry
from redis.sentinel import SentinelManagedConnection

from ._breaker import Breakers, CircuitBreaker
from ._commands import KINDS, Kind, Transaction, command_kind, judge_send, packed_kinds, refused_whole
from ._errors import (
    BlockingCommandError,
    CircuitOpenError,
    MayHaveRunConnectionError,
    MayHaveRunError,
    MayHaveRunTimeoutError,
    WrongRoleError,
)
from ._stats import HOST
from ._topology import TLS_TWINS

if TYPE_CHECKING:
    from redis import Connection as _SyncBase
    from redis.asyncio import Connection as _AsyncBase

    from ._config import Settings
else:
    _AsyncBase = _SyncBase = object

__all__ = [
    "AGE_JITTER",
    "AsyncPoolConnection",
    "ConnectionPolicy",
    "OnceRetry",
    "PoolConnection",
    "add_note",
    "jittered_age",
    "may_have_run",
    "unsafe_failures",
]

logger = logging.getLogger("flask_redispool")
T = TypeVar("T")

#: Set on an exception raised after an unsafe command may have reached the server.
_MAY_HAVE_RUN: Final = "flask_redispool_may_have_run"
#: Set on an exception raised after a send that continued a transaction of its connection.
_IN_TRANSACTION: Final = "flask_redispool_in_transaction"
_NOTED: Final = "flask_redispool_noted"
# How redis-py says the server dropped a connection (as a TLS-only server drops a plain one).
_DROPPED: Final = ("reset by peer", "closed by server")
# What a server answers when it wants credentials it did not get, or refuses them.
_AUTH_WORDS: Final = ("NOAUTH", "WRONGPASS", "AUTH", "authenticated", "password")
#: How much earlier than ``MAX_CONNECTION_AGE`` a connection may be replaced, as a share
#: of it: each connection's own deadline is drawn between 90% and 100% of the age, so the
#: connections a process opened together (at its start, after a failover) do not all
#: reconnect at the same checkout.
AGE_JITTER: Final = 0.1
# Why a command that does not wait on purpose got no reply in time.
_STALLED: Final = (
    "the server is stalled or overloaded (a slow script, a large KEYS, a fork for persistence), or the network is."
)


# redis-py's errors as they are raised once an unsafe command may have run. Only these
# exact types: their subclasses mean something else (the pool is full, the server loads).
_MAY_HAVE_RUN_TYPES: Final[dict[type[BaseException], type[MayHaveRunError]]] = {
    ConnectionError: MayHaveRunConnectionError,
    TimeoutError: MayHaveRunTimeoutError,
}


# How many failures after an unsafe send this process has seen: only ever grows (an
# increment lost to a race still leaves it grown), so a change since a moment tells that
# such a failure happened in between (cluster pipelines ask, see _cluster).
_UNSAFE_FAILURES = [0]


def unsafe_failures() -> int:
    """A number that changes whenever a failure after an unsafe send is seen, anywhere
    in this process."""
    return _UNSAFE_FAILURES[0]


def may_have_run(error: BaseException) -> bool:
    """Whether ``error`` was raised after an unsafe command may have reached the server."""
    return isinstance(error, MayHaveRunError) or bool(getattr(error, _MAY_HAVE_RUN, False))


def _retryable(error: Exception) -> bool:
    return (
        not may_have_run(error)
        and not getattr(error, _IN_TRANSACTION, False)
        and not isinstance(error, BlockingCommandError | CircuitOpenError)
    )


def _also(is_retryable: Callable[[Exception], bool] | None) -> Callable[[Exception], bool]:
    if is_retryable is None:
        return _retryable
    return lambda error: _retryable(error) and is_retryable(error)


# Each runs on every command and every checkout (redis-py connects through the retry),
# so they call the base method directly rather than through super().


def _plain_to_tls(settings: Settings, error: BaseException) -> str:
    """A hint when a plain connection was dropped as a TLS-only server drops it."""
    if settings.tls or settings.scheme not in TLS_TWINS or not any(word in str(error) for word in _DROPPED):
        return ""
    return (
        f" A server that serves only TLS drops plain connections so: if it does, use {TLS_TWINS[settings.scheme]}://."
    )


class OnceRetry(Retry):
    """redis-py's :class:`~redis.retry.Retry`, except after an unsafe command may have run."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        checks = _retryable if is_retryable is None else _also(is_retryable)
        return Retry.call_with_retry(self, do, fail, checks, with_failure_count)


class AsyncOnceRetry(AsyncRetry):
    """:class:`OnceRetry` for ``redis.asyncio``."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        checks = _retryable if is_retryable is None else _also(is_retryable)
        return await AsyncRetry.call_with_retry(self, do, fail, checks, with_failure_count)


def jittered_age(age: float, draw: Callable[[], float] = random.random) -> float:
    """How long one connection may serve: ``age`` less up to :data:`AGE_JITTER` of it.

    :param draw: a number in [0, 1): :func:`random.random`, or a fixed one in tests.
    :returns: a number in ``((1 - AGE_JITTER) * age, age]``.
    """
    return age * (1.0 - AGE_JITTER * draw())


def add_note(error: BaseException, text: str) -> None:
    """``error.add_note(text)``, on Python 3.10 too (where it joins the message, on the
    same line: the CLI prints a failure as one line)."""
    if hasattr(error, "add_note"):
        error.add_note(text)
    elif error.args and isinstance(error.args[0], str):  # pragma: no cover - Python 3.10
        error.args = (f"{error.args[0]} {text}", *error.args[1:])


class ConnectionPolicy:
    """What every connection of one pool shares: its name, what the server refused,
    and the words that explain a failure in terms of the config keys."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Why the server refused ``CLIENT SETNAME``, once it has; connections are unnamed then.
        self.naming_refused: str | None = None
        self._rename_seen = False  # whether kept_name() has warned
        self._lock = threading.Lock()
        #: Why the pools are closed for good, once :meth:`RedisPool.close()
        #: <flask_redispool.RedisPool.close>` closed them: no connection of theirs connects
        #: again, and this is the message of the error raised instead.
        self.closed: str | None = None
        #: Open after repeated connection failures: told of each in :meth:`explain`. One
        #: for all connections, or one per node of a cluster.
        self.breakers = Breakers(settings, per_node=settings.scheme.endswith("+cluster"))

    def deadline(self) -> float | None:
        """When a connection that connects now is to be replaced (:func:`time.monotonic`),
        or ``None`` without ``MAX_CONNECTION_AGE``."""
        age = self.settings.max_connection_age
        return None if age is None else time.monotonic() + jittered_age(age)

    def check_open(self) -> None:
        """Let a connection connect only while its pools are open.

        :raises RuntimeError: the pools were closed (:attr:`closed` says by what).
        """
        if self.closed:
            raise RuntimeError(self.closed)

    def connection_name(self, suffix: str) -> str | None:
        """The name a new connection gives itself, or ``None`` when naming is off or refused."""
        settings = self.settings
        if not settings.name_connections or self.naming_refused is not None:
            return None
        return f"{settings.client_name}:{HOST}:{os.getpid()}{suffix}"

    def kept_name(self, name: str) -> None:
        """Something asked to rename a pooled connection to ``name``, and was not let: say so once."""
        with self._lock:
            if self._rename_seen:
                return
            self._rename_seen = True
        settings = self.settings
        logger.warning(
            "Something asked to rename a %s connection to %r with CLIENT SETNAME (RQ's Worker does): the "
            "pool's connections keep their names, so that 'flask redis-stats' can match them to processes. "
            "Give that consumer a RedisPool of its own (another config_prefix) instead of sharing %s's.",
            settings.prefix,
            name,
            settings.key("URL"),
        )

    def refuse_naming(self, error: ResponseError) -> None:
        """The server refused ``CLIENT SETNAME``: stop asking, and say so once."""
        with self._lock:
            if self.naming_refused is not None:
                return
            self.naming_refused = f"{type(error).__name__}: {error}"
        settings = self.settings
        logger.warning(
            "Redis at %s refused CLIENT SETNAME (%s): %s's connections stay unnamed, so "
            "'flask redis-stats' cannot match the server's CLIENT LIST to processes. "
            "Set %s = False to skip naming, or allow client|setname for this user.",
            settings.redacted_url,
            error,
            settings.prefix,
            settings.key("CLIENT_NAME"),
        )

    def check_blocking(self, args: Sequence[Any], wait: Callable[[Sequence[Any]], float | None], timeout: Any) -> None:
        """Refuse a blocking command that would outlast the connection's socket ``timeout``."""
        seconds = wait(args)
        if seconds is None or timeout is None or seconds < timeout:
            return
        settings = self.settings
        how_long = "forever (timeout 0)" if math.isinf(seconds) else f"up to {seconds:g} s"
        hint = "redis_pool.blocking(seconds)" if math.isinf(seconds) else f"redis_pool.blocking({math.ceil(seconds)})"
        raise BlockingCommandError(
            f"{args[0]} may wait {how_long} on the server, longer than {settings.key('SOCKET_TIMEOUT')}="
            f"{timeout:g} s allows, so it would fail with a timeout. Run it on a client made for waiting: "
            f"'with {hint} as client: client.{str(args[0]).lower()}(...)'."
        )

    def explain(
        self,
        error: BaseException,
        *,
        unsafe_sent: bool = False,
        in_transaction: bool = False,
        connection: _Sending | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """Mark ``error`` when an unsafe command may have run, or when what was sent
        continued a transaction of its connection (neither is retried), tell the circuit
        breaker (``breaker``, or ``connection``'s), and add one note naming our keys (and
        fitting the command ``connection`` last sent, when given)."""
        if unsafe_sent:
            setattr(error, _MAY_HAVE_RUN, True)
            _mark_may_have_run(error)
        if in_transaction:
            setattr(error, _IN_TRANSACTION, True)
        if getattr(error, _NOTED, False) or isinstance(error, CircuitOpenError):
            return
        setattr(error, _NOTED, True)
        if breaker is None:
            breaker = self.breakers.shared if connection is None else connection.breaker
        breaker.failed(error)  # once per error: here, after the check above
        note = self._note(error, connection)
        if isinstance(error, ConnectionError | TimeoutError):
            if unsafe_sent:
                note += (
                    " The command was not retried: it may already have run on the server "
                    f"({self.settings.key('RETRIES')} only repeats commands that are safe to run twice)."
                )
            elif in_transaction:
                note += (
                    " The command was not retried: it continued a transaction (MULTI or WATCH) sent "
                    "earlier on its connection, which a new connection would not have. Run the whole "
                    "transaction again."
                )
        add_note(error, note)

    def _note(self, error: BaseException, connection: _Sending | None = None) -> str:
        settings = self.settings
        where = f"{settings.key('URL')} ({settings.redacted_url})"
        if isinstance(error, AuthenticationError) or (
            isinstance(error, ResponseError) and any(word in str(error) for word in _AUTH_WORDS)
        ):
            return (
                f"flask-redispool: the server at {where} wants valid credentials: give them in "
                f"{settings.key('URL')} as redis://user:password@host:port/db (percent-encode the password)."
            )
        if isinstance(error, WrongRoleError):
            return (
                f"flask-redispool: the Sentinel service at {where} is failing over: the connection was "
                "closed before use, and the next one asks the sentinels again."
            )
        if isinstance(error, TimeoutError):
            return self._timeout_note(where, connection)
        if isinstance(error, ConnectionError):
            return (
                f"flask-redispool: could not reach Redis at {where}; a command gives up after at most "
                f"{settings.worst_case_seconds:g} s ({settings.key('SOCKET_CONNECT_TIMEOUT')}, "
                f"{settings.key('SOCKET_TIMEOUT')}, {settings.key('RETRIES')}).{_plain_to_tls(settings, error)}"
            )
        return f"flask-redispool: Redis at {where} refused the connection's set-up."

    def _timeout_note(self, where: str, connection: _Sending | None) -> str:
        """A reply that did not come in time: only a command that waits on the server on
        purpose belongs in ``blocking()``; after any other, the server (or the link) stalled."""
        settings = self.settings
        key = settings.key("SOCKET_TIMEOUT")
        timeout = getattr(connection, "socket_timeout", None) or settings.socket_timeout
        if timeout != settings.socket_timeout:  # raised for this connection, as in blocking()
            return f"flask-redispool: no answer from {where} within this connection's {timeout:g} s: {_STALLED}"
        within = f"flask-redispool: no answer from {where} within {key}={timeout:g} s"
        waiting = getattr(connection, "waiting", None)
        if waiting is not None:
            return (
                f"{within}. {waiting} waits on the server on purpose: run it in "
                "'with redis_pool.blocking(seconds) as client:', whose timeout covers the wait."
            )
        return f"{within}: {_STALLED} Raise {key} only if such pauses are normal for your server."


def _mark_may_have_run(error: BaseException) -> None:
    """Raise ``error`` (redis-py's own, as it is) as its :class:`MayHaveRunError` twin.

    Not only for the callers' ``except``: redis-py's cluster client retries a failed
    command when the error's type *is* ``ConnectionError`` or ``TimeoutError``
    (``RedisCluster.ERRORS_ALLOW_RETRY``), so a subclass is not retried there.
    ``tests/test_cluster.py`` pins that a write that timed out ran once.
    """
    _UNSAFE_FAILURES[0] += 1
    twin = _MAY_HAVE_RUN_TYPES.get(type(error))
    if twin is not None:
        error.__class__ = twin


def _refused_by_a_replica(error: BaseException) -> bool:
    """redis-py's Sentinel connections, sync and async, turn a demoted master's
    ``READONLY`` into a ``ConnectionError`` and disconnect: the command was refused, so
    it did not run and may be sent again, to the new master (the retry reconnects
    through ``connect()``, which asks the sentinels: see ``asks_sentinels``)."""
    return isinstance(error.__context__, ReadOnlyError)


class _Sending:
    """State and decisions shared by the sync and async mixins (no I/O)."""

    policy: ConnectionPolicy  # set on each pool's subclass
    #: The policy's shared breaker, on the class; a cluster node's, on the connection
    #: (:meth:`_init_breaker`): read on every send and reply.
    breaker: CircuitBreaker
    #: The bytes of a send that may change data may have left.
    unsafe_sent = False
    #: The name of the command last sent if it waits on the server on purpose (``BLPOP``), else None.
    waiting: Any = None
    #: The last send continued a transaction that an earlier send opened on this connection.
    sent_in_transaction = False
    #: What the last send carried (``None``: a batch of unknown commands).
    sent_kinds: Sequence[Kind] | None = None
    #: Where this connection stands in a transaction (``MULTI``, ``WATCH``) of its own.
    transaction = Transaction.NONE
    #: A Sentinel service's connection: it reconnects through ``connect()``, which asks the
    #: sentinels where the master is now. (redis-py's own send reconnects to the address it
    #: had: after a failover, the demoted master that refused the command.)
    asks_sentinels = False
    #: Whether the socket is open: set when redis-py runs the handshake on a socket it just
    #: opened (:meth:`on_connect_check_health`, on every socket, sync and async), cleared in
    #: :meth:`disconnect`, the only place redis-py closes one. Ours on every redis-py
    #: (``tests/test_inventory.py`` pins both moments), so a checkout connects only a closed
    #: connection and a pool counts the idle ones open to the server.
    socket_open = False
    #: When the socket was opened (:func:`time.monotonic`), and when a checkout is to
    #: reconnect it (``None``: never; ``MAX_CONNECTION_AGE``).
    connected_at: float | None = None
    deadline: float | None = None

    def _init_breaker(self) -> None:
        """A cluster node's connection takes its node's breaker (once it knows its address)."""
        breakers = self.policy.breakers
        if breakers.per_node:
            self.breaker = breakers.of(f"{self.host}:{self.port}")  # type: ignore[attr-defined]

    def _init_name(self, name_suffix: str) -> None:
        self.unsafe_sent = False
        self.name_suffix = name_suffix

    def _before_handshake(self) -> None:
        self.socket_open = True  # redis-py runs the handshake on a socket just opened
        self.transaction = Transaction.NONE  # a new connection: the server forgot the old one's
        self.connected_at = time.monotonic()
        self.deadline = self.policy.deadline()

    def outlived(self) -> bool:
        """Whether this open connection is past its deadline (``MAX_CONNECTION_AGE``) and
        in no transaction: a checkout then reconnects it, authenticating anew.

        Asked in :meth:`connect`, which redis-py's pools, sync and async, call on every
        checkout, and which nothing calls on an open connection in use: so a connection
        is never cut while lent, and one the server keeps a ``WATCH`` on is kept until it
        comes back (and its holder sends ``UNWATCH``, or teardown disconnects it)."""
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline and self.transaction is Transaction.NONE

    def _failed(self, error: BaseException) -> None:
        """Explain ``error``, raised by the last send or its reply: whether it may have run
        and may be sent again. The one decision of the sync and async connections."""
        self.policy.explain(
            error,
            unsafe_sent=self.unsafe_sent and not (_refused_by_a_replica(error) and refused_whole(self.sent_kinds)),
            in_transaction=self.sent_in_transaction,
            connection=self,
        )

    def _check_blocking(self, args: Sequence[Any], kind: Kind) -> None:
        assert kind.blocking is not None
        self.policy.check_blocking(args, kind.blocking, self.socket_timeout)  # type: ignore[attr-defined]

    def _packed_kinds(self, command: Any) -> list[Kind] | None:
        """The kinds of what ``send_packed_command`` sends: our :meth:`send_command` does not
        pass there, so it is what others packed (a pipeline's batch, a redis.asyncio cluster
        node's command), read from the bytes (:func:`~flask_redispool._commands.packed_kinds`)."""
        self.waiting = None
        return packed_kinds(command)


class PoolConnection(_Sending, _SyncBase):
    """Mixed into a redis-py (or fakeredis) connection class for one pool."""

    #: Whether it is checked out of its pool: a counted pool sets it as it lends the
    #: connection and clears it as it takes it back, so that it can count its idle
    #: connections open to the server (``CountedPool.connection_counts``).
    checked_out = False

    #: The send and read of the connection class this one is mixed into, found through the
    #: MRO once, when a class is made (:meth:`__init_subclass__`), as the pools' checkout
    #: is: every command calls both, and ``super()`` costs about 0.2 µs a call (CPython 3.11).
    _base_send_packed_command: Callable[..., None]
    _base_read_response: Callable[..., Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._base_send_packed_command = super().send_packed_command
        cls._base_read_response = super().read_response

    def __init__(self, *args: Any, name_suffix: str = "", **kwargs: Any) -> None:
        self._init_name(name_suffix)
        #: The keyword arguments it was made with: a redis-py pool passes its own to the
        #: connection class, and ours compares them with what it was given.
        self.made_with = kwargs
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._init_breaker()

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self._before_handshake()
        super().on_connect_check_health(check_health)
        name = self.policy.connection_name(self.name_suffix)
        if name is not None:
            self.send_command("CLIENT SETNAME", name, check_health=False)  # one name: repeatable
            try:
                self.read_response()
            except ResponseError as exc:
                self.policy.refuse_naming(exc)

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.socket_open = False
        super().disconnect(*args, **kwargs)  # type: ignore[no-untyped-call]

    def connect(self) -> None:
        # redis-py's pool calls connect() on every checkout; skip its retry machinery when
        # there is nothing to do (as fakeredis's connection does).
        if self.socket_open and self.deadline is not None and self.outlived():
            self.disconnect()
        if not self.socket_open:
            self.policy.check_open()  # first: a Sentinel connection asks the sentinels next
            self.breaker.refuse()
            super().connect()  # type: ignore[no-untyped-call]

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        kind = KINDS.get(args[0]) or command_kind(args[0])  # every command: one look-up
        if kind.blocking is not None:
            self._check_blocking(args, kind)
        self._send(self.pack_command(*args), kwargs.get("check_health", True), (kind,))  # type: ignore[no-untyped-call]
        self.waiting = args[0] if kind.blocking is not None else None  # after the handshake's own commands

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._send(command, check_health, self._packed_kinds(command))

    def _send(self, command: Any, check_health: bool, kinds: Sequence[Kind] | None) -> None:
        # Connect and check health first (their own commands set unsafe_sent for
        # themselves), then mark what is about to leave.
        if self.breaker.refusing:  # open: nothing leaves (the probe's own thread excepted)
            self.breaker.refuse()
        if not self.socket_open:
            self.policy.check_open()
            try:
                if self.asks_sentinels:
                    self.connect()
                else:
                    self.connect_check_health(check_health=False)
            except RedisError as exc:
                self.policy.explain(exc, breaker=self.breaker)
                raise
        if check_health and self.health_check_interval:  # redis-py's check_health() tests the same
            self.check_health()  # type: ignore[no-untyped-call]
        self.unsafe_sent, self.sent_in_transaction, self.transaction = judge_send(self.transaction, kinds)
        self.sent_kinds = kinds
        try:
            self._base_send_packed_command(command, False)
        except RedisError as exc:
            self._failed(exc)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = self._base_read_response(*args, **kwargs)
        except (ConnectionError, TimeoutError) as exc:
            self._failed(exc)
            raise
        if self.breaker.failing:  # the server answered: a streak of failures ends
            self.breaker.succeeded()
        return response


class AsyncPoolConnection(_Sending, _AsyncBase):
    """:class:`PoolConnection` for a ``redis.asyncio`` connection class."""

    def __init__(self, *args: Any, name_suffix: str = "", **kwargs: Any) -> None:
        self._init_name(name_suffix)
        super().__init__(*args, **kwargs)
        self._init_breaker()

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        self._before_handshake()
        await super().on_connect_check_health(check_health)
        name = self.policy.connection_name(self.name_suffix)
        if name is not None:
            await self.send_command("CLIENT SETNAME", name, check_health=False)  # one name: repeatable
            try:
                await self.read_response()
            except ResponseError as exc:
                self.policy.refuse_naming(exc)

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.socket_open = False  # first: a cancelled disconnect has closed the socket, or will
        await super().disconnect(*args, **kwargs)

    async def connect(self) -> None:
        if self.socket_open and self.deadline is not None and self.outlived():
            await self.disconnect()
        if not self.socket_open:
            self.policy.check_open()
            self.breaker.refuse()
            await super().connect()  # type: ignore[no-untyped-call]

    async def send_command(self, *args: Any, **kwargs: Any) -> None:
        kind = KINDS.get(args[0]) or command_kind(args[0])
        if kind.blocking is not None:
            self._check_blocking(args, kind)
        await self._send(self.pack_command(*args), kwargs.get("check_health", True), (kind,))
        self.waiting = args[0] if kind.blocking is not None else None  # after the handshake's own commands

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await self._send(command, check_health, self._packed_kinds(command))

    async def _send(self, command: Any, check_health: bool, kinds: Sequence[Kind] | None) -> None:
        if self.breaker.refusing:
            self.breaker.refuse()
        if not self.socket_open:
            self.policy.check_open()
            try:
                if self.asks_sentinels:
                    await self.connect()
                else:
                    await self.connect_check_health(check_health=False)
            except RedisError as exc:
                self.policy.explain(exc, breaker=self.breaker)
                raise
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        self.unsafe_sent, self.sent_in_transaction, self.transaction = judge_send(self.transaction, kinds)
        self.sent_kinds = kinds
        try:
            await super().send_packed_command(command, check_health=False)
        except RedisError as exc:
            self._failed(exc)
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)
        except (ConnectionError, TimeoutError) as exc:
            self._failed(exc)
            raise
        if self.breaker.failing:
            self.breaker.succeeded()
        return response


def pool_connection_class(base: type[Any], policy: ConnectionPolicy, *, asynchronous: bool = False) -> type[Any]:
    """A subclass of ``base`` (a redis-py or fakeredis connection class) for one pool."""
    mixin: type[Any] = AsyncPoolConnection if asynchronous else PoolConnection
    attributes = {
        "__module__": __name__,
        "policy": policy,
        "breaker": policy.breakers.shared,
        "base": base,
        "asks_sentinels": issubclass(base, SentinelManagedConnection | AsyncSentinelManagedConnection),
    }
    return type(f"Pool{base.__name__}", (mixin, base), attributes)
