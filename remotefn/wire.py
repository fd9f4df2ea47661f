"""Messages between a session and its workers: framing, authentication and pickling.

Every message is a list of ZeroMQ frames ``[header, *body, mac]``. The header holds the protocol
version, the message kind, flags, a per-direction sequence number and a call id. The MAC is a
keyed BLAKE2b over the direction, the worker's identity and every frame (large frames enter it
through their SHA-256), with the session's fresh secret as key. A receiver checks the MAC and that
the sequence number grows before it looks at, let alone unpickles, anything else.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import pickle
import struct
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import zmq

from ._version import PROTOCOL_VERSION

HEADER = struct.Struct("!BBBxQQ")
MAC_SIZE = 32
KEY_SIZE = 32
#: Frames larger than this enter the MAC through their SHA-256, which is faster for bulk data.
_BULK = 1 << 16


class Kind(enum.IntEnum):
    """Message kinds; the direction each one travels is in its comment."""

    HELLO = 1  # worker -> session: json version, pid, host
    WELCOME = 2  # session -> worker: pickled init function (or empty)
    READY = 3  # worker -> session: init done
    INIT_FAILED = 4  # worker -> session: json error text
    REJECT = 5  # session -> worker: reason text, the worker exits
    TASK = 6  # session -> worker: function digest, function bytes or b"", pickled (args, kwargs)
    RESULT = 7  # worker -> session: timing struct, pickled value or error
    OUTPUT = 8  # worker -> session: stream number, text
    PING = 9  # worker heartbeat -> session
    PONG = 10  # session -> worker heartbeat
    SHUTDOWN = 11  # session -> worker
    TASKS = 12  # session -> worker: several TASK bodies behind an index (see pack_calls)


class Flag:
    """Header flags (plain ints: they are tested on every message)."""

    NONE = 0
    LAST = 1  # TASK: exit after this call
    ERROR = 2  # RESULT: the payload is an exception
    UNPICKLABLE = 4  # RESULT: the payload is a text describing what failed to pickle


#: How a session tells a worker where it is and who it is (environment variables, removed by
#: the worker at start so that its secret never reaches user code).
ENV_ADDRESS = "REMOTEFN_ADDRESS"
ENV_KEY = "REMOTEFN_KEY"
ENV_WORKER = "REMOTEFN_WORKER"
ENV_CORES = "REMOTEFN_CORES"
ENV_RANKS = "REMOTEFN_RANKS"
ENV_GPUS = "REMOTEFN_GPUS"  # GPU ids per rank: "0,1;2,3"
ENV_PMI = "REMOTEFN_PMI"  # the PMI mode the launcher was asked for, for error messages
ENV_STATUS_FD = "REMOTEFN_STATUS_FD"  # where a worker writes the ids of finished calls
ENV_CONNECTION_FD = "REMOTEFN_CONNECTION_FD"  # a socket pair to the session, instead of ZeroMQ
ENV_NESTED = "REMOTEFN_NESTED"  # "flux": the worker runs in its own Flux instance

TO_WORKER = b"S"
TO_SESSION = b"W"


class AuthenticationError(Exception):
    """A message failed its MAC, its sequence check or its layout; it was dropped unread."""


def new_key() -> bytes:
    import secrets  # only sessions make keys; workers start faster without it

    return secrets.token_bytes(KEY_SIZE)


def _mac_prefix(key: bytes, direction: bytes, identity: bytes) -> Any:
    """A keyed BLAKE2b that has seen the direction and the identity; copied per message."""
    digest = hashlib.blake2b(key=key, digest_size=MAC_SIZE)
    digest.update(direction)
    digest.update(len(identity).to_bytes(2, "little"))
    digest.update(identity)
    return digest


def _mac(prefix: Any, head: Any, bulk: Sequence[Any]) -> bytes:
    digest = prefix.copy()
    digest.update(head)
    for frame in bulk:
        view = memoryview(frame).cast("B")
        digest.update(view.nbytes.to_bytes(8, "little"))
        digest.update(_bulk_digest(view))
    return digest.digest()


#: Frames larger than this are hashed in pieces of _PIECE bytes on several threads (hashlib
#: lets go of the GIL), and enter the MAC through the SHA-256 of the pieces' digests.
_PARALLEL = 16 << 20
_PIECE = 4 << 20
_hashing_pool: Any = None


def _bulk_digest(view: memoryview) -> bytes:
    if view.nbytes <= _PARALLEL:
        return hashlib.sha256(view).digest()
    global _hashing_pool
    if _hashing_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _hashing_pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1),
                                           thread_name_prefix="remotefn-hash")
    pieces = [view[start:start + _PIECE] for start in range(0, view.nbytes, _PIECE)]
    digests = _hashing_pool.map(lambda piece: hashlib.sha256(piece).digest(), pieces)
    return hashlib.sha256(b"".join(digests)).digest()


_LENGTH = struct.Struct("!I")
#: A body item's length field with this value means: the item is the next bulk frame.
_IN_BULK = 0xFFFFFFFF
_KINDS = {kind.value: kind for kind in Kind}


class Channel:
    """One authenticated direction pair between the session and one worker identity.

    A message is one head frame, ``header | item lengths | small items | MAC``, followed by
    one frame per large item (out-of-band buffers travel without copies). Most messages are a
    single frame.
    """

    __slots__ = ("identity", "outgoing", "incoming", "sent", "received")

    def __init__(self, key: bytes, identity: bytes, *, session_side: bool) -> None:
        self.identity = identity
        self.outgoing = _mac_prefix(key, TO_WORKER if session_side else TO_SESSION, identity)
        self.incoming = _mac_prefix(key, TO_SESSION if session_side else TO_WORKER, identity)
        self.sent = 0
        self.received = 0

    def seal(self, kind: Kind, body: Sequence[Any] = (), call_id: int = 0,
             flags: int = 0) -> list[Any]:
        """The frames of a message carrying ``body`` (a list of bytes-like items)."""
        self.sent += 1
        parts = [HEADER.pack(PROTOCOL_VERSION, kind, flags, self.sent, call_id),
                 len(body).to_bytes(2, "big")]
        small: list[Any] = []
        bulk: list[Any] = []
        for item in body:
            size = memoryview(item).nbytes
            if size > _BULK:
                parts.append(_LENGTH.pack(_IN_BULK))
                bulk.append(item)
            else:
                parts.append(_LENGTH.pack(size))
                small.append(item)
        head = b"".join([*parts, *small])
        return [head + _mac(self.outgoing, head, bulk), *bulk]

    def open(self, frames: Sequence[Any]) -> tuple[Kind, int, int, list[Any]]:
        """Check a received message; return ``(kind, flags, call_id, body)``.

        Raises :class:`AuthenticationError` without unpickling anything when the message is
        malformed, forged, replayed or of another protocol version.
        """
        if not frames:
            raise AuthenticationError("empty message")
        message = memoryview(frames[0])
        if message.nbytes < HEADER.size + 2 + MAC_SIZE:
            raise AuthenticationError("message too short")
        head, mac = message[:-MAC_SIZE], message[-MAC_SIZE:]
        bulk = frames[1:]
        if not hmac.compare_digest(mac, _mac(self.incoming, head, bulk)):
            raise AuthenticationError("bad MAC")
        version, kind, flags, seq, call_id = HEADER.unpack_from(head)
        if seq <= self.received:
            raise AuthenticationError(f"replayed message (sequence {seq} after {self.received})")
        self.received = seq
        if version != PROTOCOL_VERSION:
            raise AuthenticationError(f"protocol {version}, expected {PROTOCOL_VERSION}")
        if kind not in _KINDS:
            raise AuthenticationError(f"unknown message kind {kind}")
        count = int.from_bytes(head[HEADER.size:HEADER.size + 2], "big")
        offset = HEADER.size + 2 + 4 * count
        body: list[Any] = []
        next_bulk = 0
        for index in range(count):
            (size,) = _LENGTH.unpack_from(head, HEADER.size + 2 + 4 * index)
            if size == _IN_BULK:
                if next_bulk >= len(bulk):
                    raise AuthenticationError("missing bulk frame")
                body.append(bulk[next_bulk])
                next_bulk += 1
            else:
                body.append(head[offset:offset + size])
                offset += size
        if offset != len(head) or next_bulk != len(bulk):
            raise AuthenticationError("malformed body")
        return _KINDS[kind], flags, call_id, body


_CALL_ENTRY = struct.Struct("!QH")


def pack_calls(calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Any]:
    """The body of a TASKS message: an index of (call id, item count), then each call's
    TASK body in turn."""
    body: list[Any] = [b"".join(_CALL_ENTRY.pack(call_id, len(items))
                                for call_id, items in calls)]
    for _, items in calls:
        body.extend(items)
    return body


def unpack_calls(body: Sequence[Any]) -> list[tuple[int, list[Any]]]:
    """The ``(call id, TASK body)`` pairs of a TASKS body."""
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


_PLAIN = frozenset([int, float, str, bytes, bool, type(None), complex])


def _plain(obj: Any, depth: int = 0) -> bool:
    """True for data the standard pickler handles exactly as cloudpickle does: scalars and
    small containers of them (anything else may need pickling by value)."""
    kind = type(obj)
    if kind in _PLAIN:
        return True
    if depth >= 2:
        return False
    if kind is tuple or kind is list:
        if len(obj) > 16:
            return False
        for item in obj:
            if type(item) not in _PLAIN and not _plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        if len(obj) > 16:
            return False
        for name, item in obj.items():
            if type(name) is not str or (type(item) not in _PLAIN
                                         and not _plain(item, depth + 1)):
                return False
        return True
    return False


#: libzmq's ZMQ_SNDMORE and ZMQ_DONTWAIT (fixed by its API); a worker on a socket pair never
#: imports zmq at all.
_SNDMORE = 2
_NOBLOCK = 1


def send(socket: "zmq.Socket", frames: Sequence[Any], flags: int = 0) -> None:
    """Send a multipart message (pyzmq's send_multipart, without its per-frame overhead)."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        socket.send(frame, (flags | _SNDMORE) if index < last else flags,
                    copy=memoryview(frame).nbytes <= _BULK)


def receive(socket: "zmq.Socket", flags: int = 0) -> list[Any]:
    """Receive a multipart message as zmq.Frame objects (no copies of large frames)."""
    frame = socket.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = socket.recv(flags, copy=False)
        frames.append(frame)
    return frames


def dumps(obj: Any) -> list[Any]:
    """Pickle ``obj``; large buffers (numpy arrays) become extra frames.

    Those buffers are copied here, once: what is sent is the value at this moment, even if
    the caller changes its arrays while ZeroMQ is still sending them.
    """
    if _plain(obj):
        return [pickle.dumps(obj, protocol=5)]
    import cloudpickle  # imported on first need: a worker starts faster without it

    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [data, *(bytes(buffer.raw()) for buffer in buffers)]


def loads(frames: Sequence[Any]) -> Any:
    """Unpickle what :func:`dumps` produced. Arrays use the received frames' memory, which
    is writable; read-only buffers are copied so that arrays always arrive writable."""
    buffers = [frame if not memoryview(frame).readonly else bytearray(frame)
               for frame in frames[1:]]
    return pickle.loads(frames[0], buffers=buffers)


#: RESULT's first frame: wall-clock start and end of the call in the worker.
TIMING = struct.Struct("!dd")
