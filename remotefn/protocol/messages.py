"""Message kinds and their bodies: each one defined here, built and read only through here.

A body is a list of bytes-like items (see :mod:`.framing` for how it travels). Every kind has
one builder and, where the body holds anything, one reader; both are plain functions on lists
and tuples, cheap enough for every call.

========== ================= =======================================================
kind       direction         body
========== ================= =======================================================
HELLO      worker -> session JSON ``{version, protocol, pid, host}``
WELCOME    session -> worker the pickled ``init`` function, or empty
READY      worker -> session (empty): ``init`` is done
INIT_FAILED worker -> session the traceback text of ``init``
REJECT     session -> worker the reason text; the worker exits
TASK       session -> worker function digest, pickled function or empty, pickled arguments
TASKS      session -> worker an index of (call id, item count), then each TASK body
RESULT     worker -> session usage (start, end, peak memory, CPU seconds per rank), outcome
OUTPUT     worker -> session stream number (1 stdout, 2 stderr), text
SHUTDOWN   session -> worker (empty)
RELEASE    session -> worker ids of the worker's segments the session has copied out
========== ================= =======================================================

A RESULT's flags say what its outcome frames hold: a pickled value (none set), a pickled
``(exception, traceback text)`` (ERROR), or a text saying what failed to pickle (UNPICKLABLE).
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any, Callable, NamedTuple, Sequence

from .._version import __version__
from ..errors import RemoteError, RemoteTraceback, SerializationError
from . import pickling
from .segments import Pool

#: Bumped whenever a message's layout changes; workers of another protocol are refused.
PROTOCOL_VERSION = 6

Body = list[Any]
#: What running one call produced: RESULT flags and the outcome frames.
Outcome = tuple[int, list[Any]]


class Kind(enum.IntEnum):
    """Message kinds (see the table in the module docstring)."""

    HELLO = 1
    WELCOME = 2
    READY = 3
    INIT_FAILED = 4
    REJECT = 5
    TASK = 6
    RESULT = 7
    OUTPUT = 8
    SHUTDOWN = 11
    TASKS = 12
    RELEASE = 13


class Flag:
    """Header flags (plain ints: they are tested on every message)."""

    NONE = 0
    LAST = 1  # TASK: exit after this call
    ERROR = 2  # RESULT: the outcome is an exception
    UNPICKLABLE = 4  # RESULT: the outcome is a text describing what failed to pickle


# -- the handshake ----------------------------------------------------------------------------


class Hello(NamedTuple):
    version: str | None
    protocol: int | None
    pid: int | None
    host: str | None
    #: The GPUs each rank sees (its CUDA_VISIBLE_DEVICES split at commas; None where that
    #: is unset), in rank order.
    gpus: tuple[tuple[str, ...] | None, ...]


def hello(pid: int, host: str, gpus: Sequence[Sequence[str] | None] = (),
          version: str = __version__, protocol: int = PROTOCOL_VERSION) -> Body:
    """HELLO: who this worker is, which GPUs its ranks see and which remotefn it runs."""
    return [json.dumps({"version": version, "protocol": protocol, "pid": pid, "host": host,
                        "gpus": [None if ids is None else list(ids) for ids in gpus]}).encode()]


def read_hello(body: Sequence[Any]) -> Hello:
    fields = json.loads(bytes(body[0]))
    gpus = fields.get("gpus")
    if not isinstance(gpus, list):
        gpus = []
    return Hello(fields.get("version"), fields.get("protocol"), fields.get("pid"),
                 fields.get("host"), tuple(tuple(str(i) for i in ids) if isinstance(ids, list)
                                           else None for ids in gpus))


def welcome(init_payload: bytes) -> Body:
    """WELCOME: the pickled ``init`` function, empty when the pool has none."""
    return [init_payload]


def read_welcome(body: Sequence[Any]) -> Any:
    return body[0]


def text(message: str) -> Body:
    """INIT_FAILED and REJECT: one text."""
    return [message.encode("utf-8", "replace")]


def read_text(body: Sequence[Any]) -> str:
    return bytes(body[0]).decode("utf-8", "replace")


# -- calls --------------------------------------------------------------------------------------


def task(digest: bytes, function: bytes, arguments: Sequence[Any]) -> Body:
    """TASK: ``function`` is the pickled function, or b"" when the worker has it already."""
    return [digest, function, *arguments]


def read_task(body: Sequence[Any]) -> tuple[bytes, Any, list[Any]]:
    """``(digest, pickled function or b"", pickled arguments)``."""
    digest, function, *arguments = body
    return bytes(digest), function, arguments


_CALL_ENTRY = struct.Struct("!QH")


def tasks(calls: Sequence[tuple[int, Body]]) -> Body:
    """TASKS: several ``(call id, TASK body)`` in one message."""
    body: Body = [b"".join(_CALL_ENTRY.pack(call_id, len(items)) for call_id, items in calls)]
    for _, items in calls:
        body.extend(items)
    return body


def read_tasks(body: Sequence[Any]) -> list[tuple[int, Body]]:
    """The ``(call id, TASK body)`` pairs of a TASKS body; ``ValueError`` if malformed."""
    index = memoryview(body[0])
    if index.nbytes % _CALL_ENTRY.size:
        raise ValueError("malformed TASKS index")
    calls = []
    position = 1
    for offset in range(0, index.nbytes, _CALL_ENTRY.size):
        call_id, count = _CALL_ENTRY.unpack_from(index, offset)
        calls.append((call_id, list(body[position:position + count])))
        position += count
    if position != len(body):
        raise ValueError("malformed TASKS body")
    return calls


# -- results ------------------------------------------------------------------------------------

_USAGE = struct.Struct("!ddqH")
_ONE_CPU = struct.Struct("!d")


class Usage(NamedTuple):
    """What a call used, measured in the worker."""

    started: float  # wall-clock time.time() at the start
    finished: float
    peak_memory: int  # bytes above the worker's size at the start; -1 when not measured
    cpu_times: tuple[float, ...]  # CPU seconds, one per rank


def result(usage: Usage, outcome: Outcome) -> tuple[int, Body]:
    """RESULT: its flags and body, from what the call used and its outcome."""
    flags, frames = outcome
    cpu = usage.cpu_times
    head = _USAGE.pack(usage.started, usage.finished, usage.peak_memory, len(cpu))
    return flags, [head + struct.pack(f"!{len(cpu)}d", *cpu), *frames]


def read_result(body: Sequence[Any]) -> tuple[Usage, list[Any]]:
    """``(usage, outcome frames)``."""
    head = body[0]
    started, finished, peak, ranks = _USAGE.unpack_from(head)
    cpu = (_ONE_CPU if ranks == 1 else struct.Struct(f"!{ranks}d")).unpack_from(head, _USAGE.size)
    return Usage(started, finished, peak, cpu), list(body[1:])


def success(value: Any, pool: Pool | None = None) -> Outcome:
    """The outcome of a call that returned ``value`` (large buffers in segments of ``pool``);
    a value that does not pickle becomes an UNPICKLABLE outcome."""
    try:
        return Flag.NONE, pickling.dumps(value, pool)
    except BaseException as error:
        return unpicklable(f"the result ({type(value).__name__}) could not be pickled: "
                           f"{type(error).__name__}: {error}")


def failure(error: BaseException | None, text: str) -> Outcome:
    """The outcome of a call that raised ``error`` (None when it does not pickle)."""
    try:
        frames = pickling.dumps((error, text))
        pickling.loads(frames)  # an exception that pickles but does not unpickle
    except BaseException:
        frames = pickling.dumps((None, text))
    return Flag.ERROR, frames


def unpicklable(message: str) -> Outcome:
    """The outcome of a call whose function, arguments or result did not (un)pickle."""
    return Flag.UNPICKLABLE, [message.encode("utf-8", "replace")]


def read_failure(frames: Sequence[Any]) -> tuple[BaseException | None, str]:
    """The ``(exception or None, traceback text)`` of an ERROR outcome."""
    return pickling.loads(frames)


def read_outcome(flags: int, frames: Sequence[Any],
                 describe: Callable[[], str]) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, the exception to raise)``; ``describe()`` names the
    call in error messages."""
    if flags & Flag.UNPICKLABLE:
        return False, SerializationError(f"{describe()}: {read_text(frames)}")
    if flags & Flag.ERROR:
        try:
            error, traceback_text = read_failure(frames)
        except BaseException as unpickling:
            return False, RemoteError(f"{describe()} raised an exception that could not be "
                                      f"unpickled here: {unpickling}")
        if error is None:
            error = RemoteError(f"{describe()} raised an exception that could not be pickled:"
                                f"\n{traceback_text}")
        error.__cause__ = RemoteTraceback(traceback_text)
        return False, error
    try:
        return True, pickling.loads(frames)
    except BaseException as error:
        return False, SerializationError(f"the result of {describe()} could not be unpickled "
                                         f"here: {type(error).__name__}: {error}")


def release(ids: Sequence[int]) -> Body:
    """RELEASE: the ids of segments the session has copied out (their owner may reuse them)."""
    return [struct.pack(f"!{len(ids)}Q", *ids)]


def read_release(body: Sequence[Any]) -> list[int]:
    data = memoryview(body[0])
    return list(struct.unpack(f"!{data.nbytes // 8}Q", data[:data.nbytes - data.nbytes % 8]))


# -- output -------------------------------------------------------------------------------------


def output(stream: int, message: str) -> Body:
    """OUTPUT: what a call printed; ``stream`` 1 is stdout, 2 stderr."""
    return [bytes([stream]), message.encode("utf-8", "replace")]


def read_output(body: Sequence[Any]) -> tuple[int, str]:
    return bytes(body[0])[0], bytes(body[1]).decode("utf-8", "replace")
