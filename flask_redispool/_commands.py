"""What our connections need to know about a command before sending it.

Two questions, answered from the command's name with one dict look-up:

- **May it run twice?** A command whose reply was lost (a timeout, a dropped
  connection) may still have run on the server. Only a command that is safe to repeat
  is retried then: the read-only data commands (:data:`READS`, redis-py 8.2's table of
  the reads its cluster client sends to replicas) and the connection-level commands
  below. Everything else, scripts included, is sent at most once. A
  transaction's brackets (``MULTI``, ``EXEC``, ``WATCH``…) depend on what was sent
  before them on the same connection: :func:`judge_send` has the rule.
- **How long may it block on the server?** ``BLPOP key 5`` waits up to 5 s; with a
  socket timeout of 0.5 s it would fail with a bare ``TimeoutError``. Such a command
  is refused before it is sent, with a message naming ``redis_pool.blocking()``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

__all__ = [
    "KINDS",
    "ONCE",
    "READS",
    "REPEATABLE",
    "Kind",
    "Send",
    "Transaction",
    "command_kind",
    "judge_send",
    "packed_kinds",
]

#: The read-only data commands: redis-py 8.2's ``READ_COMMANDS``, frozen here (redis-py
#: does not document it as public). ``tests/test_inventory.py`` compares it with redis-py's.
READS: Final = frozenset(
    {
        "BITCOUNT", "BITFIELD_RO", "BITPOS", "DBSIZE", "DIGEST", "DUMP", "EVALSHA_RO", "EVAL_RO", "EXISTS",
        "EXPIRETIME", "FCALL_RO", "FT.ALIASLIST", "FT.EXPLAIN", "FT.INFO", "FT.PROFILE", "FT.SEARCH", "GEODIST",
        "GEOHASH", "GEOPOS", "GEOSEARCH", "GET", "GETBIT", "GETRANGE", "HEXISTS", "HEXPIRETIME", "HGET", "HGETALL",
        "HKEYS", "HLEN", "HMGET", "HPEXPIRETIME", "HPTTL", "HRANDFIELD", "HSCAN", "HSTRLEN", "HTTL", "HVALS",
        "JSON.ARRINDEX", "JSON.ARRLEN", "JSON.GET", "JSON.MGET", "JSON.OBJKEYS", "JSON.OBJLEN", "JSON.RESP",
        "JSON.STRLEN", "JSON.TYPE", "KEYS", "LCS", "LINDEX", "LLEN", "LPOS", "LRANGE", "MGET", "PEXPIRETIME", "PTTL",
        "RANDOMKEY", "SCAN", "SCARD", "SDIFF", "SDIFFCARD", "SINTER", "SINTERCARD", "SISMEMBER", "SMEMBERS",
        "SMISMEMBER", "SRANDMEMBER", "SSCAN", "STRLEN", "SUNION", "SUNIONCARD", "TTL", "TYPE", "XLEN", "XPENDING",
        "XRANGE", "XREAD", "XREVRANGE", "ZCARD", "ZCOUNT", "ZDIFF", "ZINTER", "ZINTERCARD", "ZLEXCOUNT", "ZMSCORE",
        "ZRANDMEMBER", "ZRANGE", "ZRANGEBYLEX", "ZRANGEBYSCORE", "ZRANK", "ZREVRANGE", "ZREVRANGEBYLEX",
        "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN", "ZSCORE", "ZUNION",
    }
)  # fmt: skip
#: Commands that change no data, beyond the read-only data commands (:data:`READS`): the
#: handshake and introspection. ``CLIENT`` alone is how redis-py's handshake spells
#: ``CLIENT SETINFO`` (``"CLIENT", "SETINFO", …``); no ``CLIENT`` subcommand changes data.
#: A transaction's brackets are in :data:`_BRACKETS`.
_ALSO_REPEATABLE: Final = frozenset(
    {
        "AUTH", "HELLO", "SELECT", "PING", "ECHO", "QUIT", "READONLY", "READWRITE",
        "CLIENT", "CLIENT SETNAME", "CLIENT GETNAME", "CLIENT SETINFO", "CLIENT ID", "CLIENT INFO", "CLIENT LIST",
        "INFO", "TIME", "ROLE", "LASTSAVE", "COMMAND", "COMMAND INFO", "COMMAND COUNT", "CONFIG GET",
        "MEMORY USAGE", "OBJECT ENCODING", "OBJECT FREQ", "OBJECT IDLETIME", "OBJECT REFCOUNT",
        "SLOWLOG GET", "SLOWLOG LEN", "PUBSUB CHANNELS", "PUBSUB NUMSUB", "PUBSUB NUMPAT",
        "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
        "XINFO STREAM", "XINFO GROUPS", "XINFO CONSUMERS",
    }
)  # fmt: skip
#: The commands that open or close a transaction on their connection. They change no
#: data themselves; what they mean for sending again is :func:`judge_send`'s.
_BRACKETS: Final = frozenset({"MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "RESET"})
REPEATABLE: Final[frozenset[str]] = READS | _ALSO_REPEATABLE | _BRACKETS


def _last(args: Sequence[Any]) -> float:
    return _seconds(args[-1])


def _first(args: Sequence[Any]) -> float:
    return _seconds(args[1])


def _last_ms(args: Sequence[Any]) -> float:
    return _seconds(args[-1]) / 1000


def _block_option(args: Sequence[Any]) -> float | None:
    for index, arg in enumerate(args[:-1]):
        if isinstance(arg, str | bytes) and arg.upper() in ("BLOCK", b"BLOCK"):
            return _seconds(args[index + 1]) / 1000
    return None  # XREAD without BLOCK does not wait


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0  # the server will refuse it; nothing to wait for
    return math.inf if seconds == 0 else seconds  # 0 waits forever


#: Blocking commands: how to find the longest they may wait on the server.
_BLOCKING: Final[dict[str, Callable[[Sequence[Any]], float | None]]] = {
    "BLPOP": _last,
    "BRPOP": _last,
    "BRPOPLPUSH": _last,
    "BLMOVE": _last,
    "BZPOPMIN": _last,
    "BZPOPMAX": _last,
    "BLMPOP": _first,
    "BZMPOP": _first,
    "XREAD": _block_option,
    "XREADGROUP": _block_option,
    "WAIT": _last_ms,
    "WAITAOF": _last_ms,
}


class Kind(NamedTuple):
    """What a command is, for sending it."""

    repeatable: bool  #: safe to run twice (by itself: see :func:`judge_send`)
    blocking: Callable[[Sequence[Any]], float | None] | None  #: how long it may wait on the server
    bracket: str | None = None  #: its name, when it opens or closes a transaction (``MULTI``, ``EXEC``…)


#: Commands that are sent at most once and do not block: most writes.
ONCE: Final = Kind(repeatable=False, blocking=None)
#: Every command name we know, as redis-py spells it (upper case), and its kind.
KINDS: Final[dict[str, Kind]] = {
    **{name: Kind(repeatable=True, blocking=None) for name in REPEATABLE},
    **{name: Kind(repeatable=True, blocking=None, bracket=name) for name in _BRACKETS},
    **{name: Kind(repeatable=name in REPEATABLE, blocking=how) for name, how in _BLOCKING.items()},
}


def command_kind(name: object) -> Kind:
    """The :class:`Kind` of the command called ``name`` (``args[0]`` of ``send_command``).

    redis-py spells names in upper case, so one dict look-up answers; other spellings
    are normalised on a miss.
    """
    kind: Kind | None = KINDS.get(name)  # type: ignore[call-overload]
    if kind is not None:
        return kind
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return KINDS.get(str(name).upper(), ONCE)


#: :data:`KINDS` by the bytes that name a command on the wire (``b"GET"``).
_WIRE_KINDS: Final = {name.encode(): kind for name, kind in KINDS.items()}
#: Commands whose first argument names a subcommand in :data:`KINDS` (``CONFIG GET``).
_CONTAINERS: Final = frozenset(name.split()[0].encode() for name in KINDS if " " in name)


def packed_kinds(packed: Any) -> list[Kind] | None:
    """The kinds of the commands in ``packed``, read from the Redis protocol (RESP) as a
    connection's ``send_packed_command`` is given it: one ``bytes``, or a list of chunks.

    What the server will read is what is judged, whoever packed it: a pipeline of ours or
    of a library sharing the pool, a transaction, redis-py's async cluster client sending
    one command. ``None`` when it is not whole commands of that protocol, or when a
    command's name is cut between chunks (redis-py cuts only before and after a large
    value): unknown commands, sent at most once (:func:`judge_send`).
    """
    chunks: Iterable[Any] = (packed,) if isinstance(packed, bytes | bytearray | memoryview) else packed
    kinds: list[Kind] = []
    args = 0  # arguments of the current command still to pass
    skip = 0  # bytes still to pass (a value and its CRLF) before the next header
    try:
        for chunk in chunks:
            size = len(chunk)
            if skip >= size:
                skip -= size
                continue
            position, skip = skip, 0
            find = chunk.find  # a memoryview (a large value) has none: not a header
            while position < size:
                if not args:  # *<arguments>, then the name
                    end = find(b"\r\n", position)
                    args = int(chunk[position + 1 : end])
                    if chunk[position] != 42 or args < 1 or end < 0:
                        return None
                    position, word = _value(chunk, end + 2)
                    args -= 1
                    kind, word = _kind_of(word)
                    if args and word in _CONTAINERS:  # its subcommand tells (CONFIG GET)
                        position, sub = _value(chunk, position)
                        args -= 1
                        kind = _WIRE_KINDS.get(word + b" " + sub.upper()) or kind
                    kinds.append(kind)
                    continue
                end = find(b"\r\n", position)  # $<length>: a value to pass
                length = int(chunk[position + 1 : end])
                if chunk[position] != 36 or end < 0 or length < 0:
                    return None
                position = end + 4 + length
                args -= 1
                if position > size:
                    skip = position - size
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return kinds if kinds and not args and not skip else None


def _value(chunk: bytes, position: int) -> tuple[int, bytes]:
    """Where the bulk string at ``position`` of ``chunk`` ends (past its CRLF), and its bytes.

    :raises ValueError: it is not one, or it does not end in ``chunk``.
    """
    end = chunk.find(b"\r\n", position)
    length = int(chunk[position + 1 : end])
    start = end + 2
    after = start + length
    if chunk[position] != 36 or end < 0 or length < 0 or after > len(chunk):  # $
        raise ValueError(position)
    return after + 2, bytes(chunk[start:after])


def _kind_of(name: bytes) -> tuple[Kind, bytes]:
    """The :class:`Kind` of the command named ``name`` on the wire, and the name as
    :data:`KINDS` spells it (upper case)."""
    kind = _WIRE_KINDS.get(name)
    if kind is None:
        name = name.upper()
        kind = _WIRE_KINDS.get(name, ONCE)
    return kind, name


class Transaction(enum.IntEnum):
    """Where a connection stands in a transaction, as the commands sent on it tell."""

    NONE = 0  #: nothing a new connection would lack
    WATCHING = 1  #: ``WATCH`` was sent: the next ``EXEC`` runs only if the keys did not change
    QUEUING = 2  #: ``MULTI`` was sent: commands are queued until ``EXEC`` or ``DISCARD``
    QUEUED_A_WRITE = 3  #: as ``QUEUING``, and a queued command is not safe to run twice


class Send(NamedTuple):
    """What one send on a connection (a command, or a pipeline's batch) means if its reply is lost."""

    may_write: bool  #: it may have changed data on the server: a lost reply is a ``MayHaveRunError``
    in_transaction: bool  #: it continues a transaction an earlier send opened on this connection
    transaction: Transaction  #: where the connection stands after it

    @property
    def repeatable(self) -> bool:
        """Whether it may be sent again, on a new connection."""
        return not (self.may_write or self.in_transaction)


# Looked up once: an enum member read through its class costs more than the rest of a
# plain command's judgement.
_NONE, _WATCHING, _QUEUING, _QUEUED_A_WRITE = Transaction
_PLAIN: Final = (Send(True, False, _NONE), Send(False, False, _NONE))


def refused_whole(kinds: Sequence[Kind] | None) -> bool:
    """Whether a replica's ``READONLY`` in reply to the send of ``kinds`` means that none
    of it ran: it was one command, or one ``MULTI`` … ``EXEC`` transaction (a refused
    queued command aborts its ``EXEC``). In any other batch, the commands before the
    refused one ran (a ``PUBLISH``, say): the batch may not be sent again."""
    if kinds is None:
        return False
    return len(kinds) == 1 or (kinds[0].bracket == "MULTI" and kinds[-1].bracket == "EXEC")


def judge_send(transaction: Transaction, kinds: Sequence[Kind] | None) -> Send:
    """What sending ``kinds`` means on a connection that stands at ``transaction``.

    A send is one command, or a pipeline's batch written at once (``kinds`` is ``None``
    when the commands are unknown: sent at most once). A send whose reply was lost is
    sent again, on a new connection, only when it is safe to run twice and does not
    depend on the connection it was sent on. The rule:

    - A command that changes data runs once: it is sent at most once, and a lost reply
      means it may have run (``may_write``).
    - ``MULTI``, ``EXEC``, ``DISCARD``, ``WATCH`` and ``UNWATCH`` change no data
      themselves. **Inside one send** they repeat with it: redis-py's transaction
      pipeline (``MULTI`` … ``EXEC`` in one batch) is sent again whole, and runs again
      whole, only when every queued command is safe to run twice; otherwise its
      ``EXEC`` may have run the writes.
    - **Sent alone** (a single-connection client, a raw connection, redis-py's pipeline
      in watch mode), they leave state on the connection that a new connection would not
      have. After ``MULTI``, commands are queued and ``EXEC`` runs them: a queued command
      sent again on a new connection would run at once, outside the transaction, and an
      ``EXEC`` sent again would fail with ``EXEC without MULTI`` after the first one ran
      the writes. After ``WATCH``, the next ``EXEC`` runs only if the watched keys did not
      change; on a new connection nothing is watched, and the check would be lost.
      So every send that continues a transaction of an earlier send, up to and including
      the ``EXEC``, ``DISCARD``, ``UNWATCH`` or ``RESET`` that ends it, is sent at most
      once (``in_transaction``). Of these, an ``EXEC`` that runs a queued write is one
      that may have run (``may_write``); a queued command itself has not run (the server
      drops the transaction with the connection).
    """
    if kinds is None:
        return Send(True, transaction is not _NONE, transaction)
    if not transaction and len(kinds) == 1 and kinds[0].bracket is None:
        return _PLAIN[kinds[0].repeatable]  # most commands
    in_transaction = transaction is not _NONE
    may_write = False
    for kind in kinds:
        if kind.bracket is None:
            if kind.repeatable:
                continue
            if transaction >= _QUEUING:
                transaction = _QUEUED_A_WRITE  # runs at EXEC
            else:
                may_write = True
        else:
            may_write = may_write or (kind.bracket == "EXEC" and transaction is _QUEUED_A_WRITE)
            transaction = _after_bracket(transaction, kind.bracket)
    return Send(may_write, in_transaction, transaction)


def _after_bracket(transaction: Transaction, bracket: str) -> Transaction:
    """Where a connection stands after ``bracket`` (the server refuses a nested ``MULTI``,
    a ``WATCH`` inside ``MULTI``, an ``EXEC`` or ``DISCARD`` without ``MULTI``; it queues an
    ``UNWATCH`` inside ``MULTI``)."""
    if bracket == "MULTI":
        return _QUEUING if transaction < _QUEUING else transaction
    if bracket == "WATCH":
        return _WATCHING if transaction is _NONE else transaction
    if bracket == "UNWATCH":
        return _NONE if transaction is _WATCHING else transaction
    if bracket in ("EXEC", "DISCARD"):
        return _NONE if transaction >= _QUEUING else transaction
    return _NONE  # RESET
