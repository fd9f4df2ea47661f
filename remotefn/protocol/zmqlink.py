"""ZeroMQ: the session's sockets as CURVE servers, workers' sockets as CURVE clients, and
sending and receiving messages (lists of frames).

CURVE makes a peer that does not know the session's public key (which travels only where the
secret does) fail the ZeroMQ handshake, so nothing it sends is read, let alone buffered. zmq
itself is imported by the caller: a worker on a socket pair never imports it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

from .framing import BULK

if TYPE_CHECKING:
    import zmq

#: libzmq's ZMQ_SNDMORE (fixed by its API).
_SNDMORE = 2
#: Seconds between two ZMTP heartbeats on a connection, each way (see remotefn.worker.watchdog).
HEARTBEAT_INTERVAL = 1.0
#: The longest time libzmq accepts (ms): the session never drops a worker for silence.
_NEVER = 2**31 - 1


def server_keys() -> tuple[bytes, bytes]:
    """A fresh CURVE key pair for a session: ``(public, secret)``, Z85 text."""
    import zmq

    return zmq.curve_keypair()


def listen(socket: "zmq.Socket", address: str, secret: bytes) -> str:
    """Bind ``socket`` to ``address`` (a tcp address without a port gets a free one) as a
    CURVE server with the session's secret key, so that it accepts only peers that complete
    the handshake; returns the address bound. ``ValueError`` when it cannot bind."""
    import zmq

    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
    # Heartbeats from the session's side: its I/O thread sends them even while the session
    # reads nothing from a connection (a full pipe stops ZeroMQ reading it, and the worker's
    # own PINGs with it), so a worker never takes a busy session for a gone one. The session
    # learns of dead workers from their processes, never from silence.
    socket.setsockopt(zmq.HEARTBEAT_IVL, int(HEARTBEAT_INTERVAL * 1000))
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _NEVER)
    try:
        if address.startswith("tcp://") and address.count(":") == 1:
            socket.bind_to_random_port(address)
        else:
            socket.bind(address)
    except zmq.ZMQError as error:
        raise ValueError(f"the session cannot listen on {address}: {error}") from None
    if address.startswith("ipc://"):  # the user's alone, as its 0700 directory is
        os.chmod(address[len("ipc://"):], 0o600)
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)


def connect_curve(socket: "zmq.Socket", server_public: bytes) -> None:
    """Make ``socket`` (before it connects) a CURVE client of the session with that public
    key, under a key pair of its own."""
    import zmq

    public, secret = zmq.curve_keypair()
    socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)


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
