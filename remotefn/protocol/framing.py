"""Framing and authentication: how a message becomes frames, and how frames are checked.

A message is one head frame followed by one frame per large body item::

    head = header | item count | item lengths | small items | MAC
    header = protocol version, kind, flags, per-direction sequence number, call id

Large items (over 64 KiB) travel as frames of their own, without copies, and enter the MAC
through their SHA-256. On a socket pair, a shared-memory segment (:mod:`.segments`) travels as
its descriptor: the kernel vouches for the only peer that can pass one, so it enters the MAC
by its marker and its size, not its bytes. The MAC is a keyed BLAKE2b over the direction, the
worker's identity and every frame, with the session's fresh secret as key. A receiver checks
the MAC and that the sequence number grows before it looks at, let alone unpickles, anything
else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any, Sequence

from .messages import PROTOCOL_VERSION, Kind
from .segments import MAX_PASSED, Received, Segment

HEADER = struct.Struct("!BBBxQQ")
MAC_SIZE = 32
KEY_SIZE = 32
#: Frames larger than this enter the MAC through their SHA-256, which is faster for bulk data.
BULK = 1 << 16
TO_WORKER = b"S"
TO_SESSION = b"W"


class AuthenticationError(Exception):
    """A message failed its MAC, its sequence check or its layout; it was dropped unread."""


class ProtocolMismatch(AuthenticationError):
    """An authentic message (its MAC holds) of another protocol ``version``: the peer runs
    another remotefn."""

    def __init__(self, version: int) -> None:
        super().__init__(f"protocol {version}, expected {PROTOCOL_VERSION}")
        self.version = version


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
        kind = type(frame)
        if kind is Segment or kind is Received:  # passed: the head's marker says so
            digest.update(_size(frame).to_bytes(8, "little"))
            continue
        view = memoryview(frame).cast("B")
        digest.update(view.nbytes.to_bytes(8, "little"))
        digest.update(_bulk_digest(view))
    return digest.digest()


def _size(frame: Any) -> int:
    return frame.size if type(frame) is Segment else len(frame)


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
_LENGTHS: dict[int, struct.Struct] = {}


def _lengths(count: int) -> struct.Struct:
    """The layout of a body's ``count`` item lengths."""
    layout = _LENGTHS.get(count)
    if layout is None:
        layout = struct.Struct(f"!{count}I")
        if count <= 256:
            _LENGTHS[count] = layout
    return layout
#: A body item's length field with this value means: the item is the next bulk frame.
_IN_BULK = 0xFFFFFFFF
#: ... the item is the next bulk frame, a segment passed over the socket pair.
_PASSED = 0xFFFFFFFE
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
             flags: int = 0, passing: bool = False) -> list[Any]:
        """The frames of a message carrying ``body`` (a list of bytes-like items and
        :class:`~.segments.Segment` s). With ``passing`` (a socket pair) segments stay
        segments, to be passed as descriptors; otherwise they are sent as their bytes."""
        self.sent += 1
        parts = [HEADER.pack(PROTOCOL_VERSION, kind, flags, self.sent, call_id),
                 len(body).to_bytes(2, "big")]
        small: list[Any] = []
        bulk: list[Any] = []
        passed = 0
        for item in body:
            if type(item) is Segment:
                if passing and passed < MAX_PASSED:
                    passed += 1
                    parts.append(_LENGTH.pack(_PASSED))
                    bulk.append(item)
                    continue
                item = item.view()
            size = memoryview(item).nbytes
            if size > BULK:
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
            raise ProtocolMismatch(version)
        if kind not in _KINDS:
            raise AuthenticationError(f"unknown message kind {kind}")
        count = int.from_bytes(head[HEADER.size:HEADER.size + 2], "big")
        offset = HEADER.size + 2 + 4 * count
        if offset > len(head):
            raise AuthenticationError("malformed body")
        body: list[Any] = []
        next_bulk = 0
        for size in _lengths(count).unpack_from(head, HEADER.size + 2):
            if size >= _PASSED:  # _PASSED or _IN_BULK: the next bulk frame
                if next_bulk >= len(bulk):
                    raise AuthenticationError("missing bulk frame")
                frame = bulk[next_bulk]
                if (type(frame) is Received) != (size == _PASSED):
                    raise AuthenticationError("a frame passed otherwise than its head says")
                body.append(frame)
                next_bulk += 1
            else:
                end = offset + size
                body.append(head[offset:end])
                offset = end
        if offset != len(head) or next_bulk != len(bulk):
            raise AuthenticationError("malformed body")
        return _KINDS[kind], flags, call_id, body


