"""What our connections need to know about a command before sending it.

Two questions, answered from the command's name with one dict look-up:

- **May it run twice?** A command whose reply was lost (a timeout, a dropped
  connection) may still have run on the server. Only a command that is safe to repeat
  is retried then: redis-py's own table of read-only commands (``READ_COMMANDS``, the
  one its cluster client uses to send reads to replicas) and the connection-level
  commands below. Everything else, scripts included, is sent at most once.
- **How long may it block on the server?** ``BLPOP key 5`` waits up to 5 s; with a
  socket timeout of 0.5 s it would fail with a bare ``TimeoutError``. Such a command
  is refused before it is sent, with a message naming ``redis_pool.blocking()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from redis.commands import READ_COMMANDS

__all__ = ["KINDS", "ONCE", "REPEATABLE", "Kind", "command_kind"]

#: Commands that change no data, beyond redis-py's read-only data commands: the
#: handshake, introspection, and the brackets of a transaction (a batch is repeatable
#: when every command in it is). ``CLIENT`` alone is how redis-py's handshake spells
#: ``CLIENT SETINFO`` (``"CLIENT", "SETINFO", …``); no ``CLIENT`` subcommand changes data.
_ALSO_REPEATABLE: Final = frozenset(
    {
        "AUTH", "HELLO", "SELECT", "PING", "ECHO", "QUIT", "RESET", "READONLY", "READWRITE",
        "CLIENT", "CLIENT SETNAME", "CLIENT GETNAME", "CLIENT SETINFO", "CLIENT ID", "CLIENT INFO", "CLIENT LIST",
        "INFO", "TIME", "ROLE", "LASTSAVE", "COMMAND", "COMMAND INFO", "COMMAND COUNT", "CONFIG GET",
        "MEMORY USAGE", "OBJECT ENCODING", "OBJECT FREQ", "OBJECT IDLETIME", "OBJECT REFCOUNT",
        "SLOWLOG GET", "SLOWLOG LEN", "PUBSUB CHANNELS", "PUBSUB NUMSUB", "PUBSUB NUMPAT",
        "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
        "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "XINFO STREAM", "XINFO GROUPS", "XINFO CONSUMERS",
    }
)  # fmt: skip
REPEATABLE: Final[frozenset[str]] = frozenset(READ_COMMANDS) | _ALSO_REPEATABLE


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

    repeatable: bool  #: safe to run twice
    blocking: Callable[[Sequence[Any]], float | None] | None  #: how long it may wait on the server


#: Commands that are sent at most once and do not block: most writes.
ONCE: Final = Kind(repeatable=False, blocking=None)
#: Every command name we know, as redis-py spells it (upper case), and its kind.
KINDS: Final[dict[str, Kind]] = {
    **{name: Kind(repeatable=True, blocking=None) for name in REPEATABLE},
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
