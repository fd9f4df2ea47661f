"""The socket-pair link: messages of frames over a connected stream socket, the private line
between a session and a worker forked on its own host.

ZeroMQ hands every message to I/O threads on both sides; on a socket pair that only the two
processes hold, a message is one ``sendmsg`` and one ``recv``. Each message is
``count | sizes | frames``; large frames are received straight into a buffer of their own
(no extra copy, and writable). The frames are the same authenticated ones that travel over
ZeroMQ (see :mod:`.framing`).
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from typing import Any, Sequence

_COUNT = struct.Struct("!I")
_SIZE = struct.Struct("!Q")
_CHUNK = 1 << 18
#: Frames up to this size are cut out of the read buffer; larger ones get a buffer of their own.
_SMALL = 1 << 16
#: The most buffers one sendmsg takes (below every system's IOV_MAX).
_IOV = 512
_MAX_FRAMES = 1 << 16


class StreamClosed(Exception):
    """The other end closed the connection (or sent something that is not a message)."""


class FrameStream:
    """One end of a stream socket carrying messages (lists of frames).

    Non-blocking use (the hub): :meth:`send` queues what the socket does not take at once,
    :meth:`flush` sends more when the socket is writable, :meth:`receive_ready` returns every
    complete message that has arrived. Blocking use (the worker): :meth:`send_all` and
    :meth:`receive`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.outgoing: deque[memoryview] = deque()
        self._buffer = bytearray()
        self._frames: list[Any] = []
        self._sizes: list[int] | None = None
        self._large: bytearray | None = None  # the large frame being filled
        self._filled = 0

    def fileno(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()

    # -- sending ---------------------------------------------------------------------------

    @staticmethod
    def encode(frames: Sequence[Any]) -> list[memoryview]:
        """The views that make up a message on the stream: its header, then each frame."""
        views = [memoryview(frame).cast("B") for frame in frames]
        head = _COUNT.pack(len(views)) + b"".join(_SIZE.pack(view.nbytes) for view in views)
        return [memoryview(head), *views]

    def send(self, frames: Sequence[Any]) -> bool:
        """Queue a message and send what the socket takes now; True when nothing is left."""
        self.outgoing.extend(self.encode(frames))
        return self.flush()

    def flush(self) -> bool:
        """Send queued bytes without blocking; True when nothing is left."""
        outgoing = self.outgoing
        while outgoing:
            batch = [outgoing[i] for i in range(min(len(outgoing), _IOV))]
            try:
                sent = self.socket.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                return False
            while sent:
                first = outgoing[0]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    outgoing.popleft()
                else:
                    outgoing[0] = first[sent:]
                    sent = 0
        return True

    def send_all(self, frames: Sequence[Any]) -> None:
        """Send a message on a blocking socket."""
        self.outgoing.extend(self.encode(frames))
        while not self.flush():
            pass

    # -- receiving -------------------------------------------------------------------------

    def receive_ready(self) -> list[list[Any]]:
        """Every complete message that can be read without blocking. Raises
        :class:`StreamClosed` once the other end has closed and nothing complete is left."""
        messages: list[list[Any]] = []
        while True:
            try:
                got, drained = self._read()
            except (BlockingIOError, InterruptedError):
                return messages
            if not got:
                if messages:
                    return messages
                raise StreamClosed("the worker closed its connection")
            self._parse(messages)
            if drained:  # a short read: nothing more now (poll reports what comes later)
                return messages

    def receive(self) -> list[Any]:
        """The next message, waiting for it (blocking socket)."""
        messages: list[list[Any]] = []
        self._parse(messages, limit=1)  # what an earlier read brought
        while not messages:
            if not self._read()[0]:
                raise StreamClosed("the session closed its connection")
            self._parse(messages, limit=1)
        return messages[0]

    def _read(self) -> tuple[int, bool]:
        """Read what is there: the byte count, and whether it was less than asked for."""
        large = self._large
        if large is not None:
            with memoryview(large) as view:
                wanted = len(large) - self._filled
                got = self.socket.recv_into(view[self._filled:])
            self._filled += got
            return got, got < wanted
        data = self.socket.recv(_CHUNK)
        self._buffer += data
        return len(data), len(data) < _CHUNK

    def _parse(self, messages: list[list[Any]], limit: int = 0) -> None:
        buffer = self._buffer
        while not limit or len(messages) < limit:
            if self._large is not None:
                if self._filled < len(self._large):
                    return
                self._frames.append(self._large)
                self._large = None
            elif self._sizes is None:
                if len(buffer) < _COUNT.size:
                    return
                (count,) = _COUNT.unpack_from(buffer)
                if count > _MAX_FRAMES:
                    raise StreamClosed(f"a message of {count} frames is not a message")
                end = _COUNT.size + _SIZE.size * count
                if len(buffer) < end:
                    return
                self._sizes = list(struct.unpack_from(f"!{count}Q", buffer, _COUNT.size))
                del buffer[:end]
            sizes = self._sizes
            frames = self._frames
            while len(frames) < len(sizes):
                size = sizes[len(frames)]
                if size <= _SMALL:
                    if len(buffer) < size:
                        return
                    frames.append(bytes(buffer[:size]))
                    del buffer[:size]
                else:
                    large = bytearray(size)
                    taken = min(size, len(buffer))
                    large[:taken] = buffer[:taken]
                    del buffer[:taken]
                    if taken < size:
                        self._large, self._filled = large, taken
                        return
                    frames.append(large)
            messages.append(frames)
            self._frames = []
            self._sizes = None
