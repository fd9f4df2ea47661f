"""Sending and receiving messages (lists of frames) over a ZeroMQ socket.

zmq itself is imported by the caller: a worker on a socket pair never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .framing import BULK

if TYPE_CHECKING:
    import zmq

#: libzmq's ZMQ_SNDMORE (fixed by its API).
_SNDMORE = 2


def send(socket: "zmq.Socket", frames: Sequence[Any], flags: int = 0) -> None:
    """Send a multipart message (pyzmq's send_multipart, without its per-frame overhead)."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        socket.send(frame, (flags | _SNDMORE) if index < last else flags,
                    copy=memoryview(frame).nbytes <= BULK)


def receive(socket: "zmq.Socket", flags: int = 0) -> list[Any]:
    """Receive a multipart message as zmq.Frame objects (no copies of large frames)."""
    frame = socket.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = socket.recv(flags, copy=False)
        frames.append(frame)
    return frames
