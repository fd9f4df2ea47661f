"""The socket-pair link: messages of frames over a connected stream socket, the private line
between a session and a worker forked on its own host.

ZeroMQ hands every message to I/O threads on both sides; on a socket pair that only the two
processes hold, a message is one ``sendmsg`` and one ``recv``. Each message is
``count | sizes | frames``; large frames are received straight into a buffer of their own
(no extra copy, and writable). The frames are the same authenticated ones that travel over
ZeroMQ (see :mod:`.framing`), except that a :class:`~.segments.Segment` among them travels as
its descriptor (``SCM_RIGHTS``, with the message's first bytes) and its id, and arrives as a
:class:`~.segments.Received` copy.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from collections import deque
from typing import Any, Sequence

from . import segments

_COUNT = struct.Struct("!I")
_SIZE = struct.Struct("!Q")
#: Bytes one read takes, into a buffer each stream keeps (allocating one per read cost more
#: than the read).
_CHUNK = 1 << 16
#: Frames up to this size are cut out of the read buffer; larger ones get a buffer of their own.
_SMALL = 1 << 16
#: The most buffers one sendmsg takes (below every system's IOV_MAX).
_IOV = 512
_MAX_FRAMES = 1 << 16
#: A size with this bit set: the frame is a passed segment of that size; its 8 bytes on the
#: stream are the segment's id.
_PASSED = 1 << 63
_ID = struct.Struct("!Q")
_ANCILLARY = socket.CMSG_SPACE(segments.MAX_PASSED * array.array("i").itemsize)
_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class StreamClosed(Exception):
    """The other end closed the connection (or broke the stream's rules: see
    :class:`StreamBroken`)."""


class StreamBroken(StreamClosed):
    """The other end sent something that is not a message, or passed descriptors that are
    not the segments its messages name: nothing more can be read from it."""


class FrameStream:
    """One end of a stream socket carrying messages (lists of frames).

    Non-blocking use (the hub): :meth:`send` queues what the socket does not take at once,
    :meth:`flush` sends more when the socket is writable, :meth:`receive_ready` returns every
    complete message that has arrived. Blocking use (the worker): :meth:`send_all` and
    :meth:`receive`.
    """

    def __init__(self, sock: socket.socket, report_released: bool = False) -> None:
        self.socket = sock
        self.outgoing: deque[memoryview] = deque()
        #: The heads of queued messages that pass descriptors, with those descriptors.
        self._passing: deque[tuple[memoryview, list[int]]] = deque()
        #: Descriptors received and not yet matched with their frames.
        self._fds: deque[int] = deque()
        #: Ids of the peer's segments copied out here (when reported), for its RELEASE.
        self.released: list[int] | None = [] if report_released else None
        self._buffer = bytearray()
        self._chunk = memoryview(bytearray(_CHUNK))
        self._frames: list[Any] = []
        self._sizes: list[int] | None = None
        self._large: bytearray | None = None  # the large frame being filled
        self._filled = 0

    def fileno(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()
        self.discard_descriptors()

    def discard_descriptors(self) -> None:
        """Close the descriptors received and not yet read, and those not yet sent (the
        stream is done with)."""
        while self._fds:
            segments.close_quietly(self._fds.popleft())
        while self._passing:
            for fd in self._passing.popleft()[1]:
                segments.close_quietly(fd)

    # -- sending ---------------------------------------------------------------------------

    @staticmethod
    def encode(frames: Sequence[Any]) -> list[memoryview]:
        """The views that make up a message on the stream: its header, then each frame."""
        return FrameStream._encode(frames)[0]

    @staticmethod
    def _encode(frames: Sequence[Any]) -> tuple[list[memoryview], list[int]]:
        """:meth:`encode`, and the descriptors the message passes."""
        try:
            views = [memoryview(frame).cast("B") for frame in frames]
        except TypeError:  # a segment (which has no buffer of its own here) is among them
            return FrameStream._encode_passing(frames)
        head = _COUNT.pack(len(views)) + b"".join([_SIZE.pack(view.nbytes) for view in views])
        return [memoryview(head), *views], []

    @staticmethod
    def _encode_passing(frames: Sequence[Any]) -> tuple[list[memoryview], list[int]]:
        fds: list[int] = []
        views = []
        sizes = []
        for frame in frames:
            if type(frame) is segments.Segment:
                fds.append(frame.fd)
                views.append(memoryview(_ID.pack(frame.id)))
                sizes.append(_PASSED | frame.size)
            else:
                view = memoryview(frame).cast("B")
                views.append(view)
                sizes.append(view.nbytes)
        head = memoryview(_COUNT.pack(len(views)) + struct.pack(f"!{len(sizes)}Q", *sizes))
        return [head, *views], fds

    def _queue(self, frames: Sequence[Any]) -> None:
        views, fds = self._encode(frames)
        if fds:  # copies of the descriptors, so a segment closed meanwhile is still sent
            copies: list[int] = []
            try:
                for fd in fds:
                    copies.append(os.dup(fd))
            except OSError:  # no descriptor left: nothing of the message is queued
                for fd in copies:
                    os.close(fd)
                raise
            self._passing.append((views[0], copies))
        self.outgoing.extend(views)

    def send(self, frames: Sequence[Any]) -> bool:
        """Queue a message and send what the socket takes now; True when nothing is left."""
        self._queue(frames)
        return self.flush()

    def flush(self) -> bool:
        """Send queued bytes without blocking; True when nothing is left."""
        outgoing = self.outgoing
        passing = self._passing
        while outgoing:
            batch = [outgoing[i] for i in range(min(len(outgoing), _IOV))]
            ancillary = []
            if passing:  # descriptors go with their message's first bytes, and alone
                carried = passing[0][0] is batch[0]
                if carried:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  array.array("i", passing[0][1]))]
                if len(passing) > carried:
                    later = passing[int(carried)][0]
                    for index in range(1, len(batch)):
                        if batch[index] is later:
                            del batch[index:]
                            break
            try:
                sent = self.socket.sendmsg(batch, ancillary)
            except (BlockingIOError, InterruptedError):
                return False
            if ancillary:
                for fd in passing.popleft()[1]:
                    os.close(fd)
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
        self._queue(frames)
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
        chunk = self._chunk
        got, ancillary, flags, _ = self.socket.recvmsg_into([chunk], _ANCILLARY, _CLOEXEC)
        if ancillary:
            self._take_descriptors(ancillary, flags)
        self._buffer += chunk[:got]
        return got, got < _CHUNK

    def _take_descriptors(self, ancillary: list[tuple[int, int, bytes]], flags: int) -> None:
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        # At most the passed segments of the message being read and of the next one (whose
        # descriptors come with the read that ends this one) wait for their frames.
        if flags & socket.MSG_CTRUNC or len(self._fds) > 2 * segments.MAX_PASSED:
            self.discard_descriptors()
            raise StreamBroken("more descriptors arrived than a message may pass"
                               if flags & socket.MSG_CTRUNC else
                               "the peer passed descriptors that no frame names")

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
                    raise StreamBroken(f"a message of {count} frames is not a message")
                end = _COUNT.size + _SIZE.size * count
                if len(buffer) < end:
                    return
                self._sizes = list(struct.unpack_from(f"!{count}Q", buffer, _COUNT.size))
                del buffer[:end]
            sizes = self._sizes
            assert sizes is not None  # read above, or with the frames before a large one
            frames = self._frames
            while len(frames) < len(sizes):
                size = sizes[len(frames)]
                if size & _PASSED:
                    if len(buffer) < _ID.size:
                        return
                    frames.append(self._passed(size & ~_PASSED, _ID.unpack_from(buffer)[0]))
                    del buffer[:_ID.size]
                elif size <= _SMALL:
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

    def _passed(self, size: int, segment_id: int) -> segments.Received:
        """The copy of the next passed segment (whose descriptor came with its message)."""
        if not self._fds:
            raise StreamBroken("a message names a segment that was not passed")
        try:
            received = segments.receive(self._fds.popleft(), size)
        except ValueError as error:
            raise StreamBroken(str(error)) from None
        if self.released is not None:
            self.released.append(segment_id)
        return received
