"""The hub's ends of the links to its workers, and the check of every message that arrives.

One ZeroMQ ROUTER socket serves every worker that connects over the network; a forked local
worker has a socket pair of its own. Workers on ZeroMQ keep their connection alive with ZMTP
heartbeats, which libzmq's I/O thread answers (see :mod:`remotefn.worker.watchdog`). A message
from a peer that is not one of this session's workers, or that fails its MAC, is counted and
dropped unread; anything else goes to ``deliver``.
"""

from __future__ import annotations

import logging
import signal
from functools import partial
from typing import Any, Callable, Sequence

import zmq

from ..protocol import zmqlink
from ..protocol.framing import AuthenticationError, ProtocolMismatch
from ..protocol.messages import Kind, release
from ..protocol.socketpair import FrameStream, StreamBroken, StreamClosed
from .events import POLLIN, POLLOUT, EventLoop
from .records import WorkerRecord

logger = logging.getLogger("remotefn.hub")
_NOBLOCK = int(zmq.NOBLOCK)

#: ``deliver(worker, kind, flags, call_id, body)``: an authenticated message from a worker.
Deliver = Callable[[WorkerRecord, Kind, int, int, list[Any]], None]


class Links:
    """Sends sealed messages to workers and checks what they send."""

    def __init__(self, loop: EventLoop, address: str, deliver: Deliver) -> None:
        self.loop = loop
        self.deliver = deliver
        #: ``on_mismatch(worker, version)``: an authentic message of another protocol.
        self.on_mismatch: Callable[[WorkerRecord, int], None] | None = None
        self.zmq = zmq.Context()
        self._dropped = 0
        #: The CURVE key pair of the session's sockets; workers get the public key.
        self.server_public, server_secret = zmqlink.server_keys()
        self.router = self.zmq.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            #: The address workers connect to.
            self.address = zmqlink.listen(self.router, address, server_secret)
        except ValueError:
            self.close()
            raise
        loop.watch(self.router, self._on_router)
        #: ZeroMQ identity -> worker.
        self.channels: dict[bytes, WorkerRecord] = {}

    def attach(self, worker: WorkerRecord) -> None:
        """Accept messages from ``worker``: on its socket pair if it has one, else on the
        router under its identity."""
        connection = worker.process.connection
        if connection is not None:
            worker.stream = FrameStream(connection, report_released=True)
            self.loop.watch(connection.fileno(), partial(self._on_stream, worker))
        else:
            self.channels[worker.identity] = worker

    def detach(self, worker: WorkerRecord) -> None:
        """Hear nothing more from ``worker``."""
        self.channels.pop(worker.identity, None)
        self._drop_stream(worker)

    def send(self, worker: WorkerRecord, kind: Kind, body: Sequence[Any] = (), call_id: int = 0,
             flags: int = 0) -> None:
        """Seal and send a message; a worker that is gone is noticed by its exit, not here."""
        channel = worker.channel
        try:
            stream = worker.stream
            frames = channel.seal(kind, body, call_id, flags, passing=stream is not None)
            if stream is None:
                zmqlink.send(self.router, [channel.identity, *frames])
            elif not stream.send(frames):
                self.loop.modify(stream.fileno(), POLLIN | POLLOUT)
        except (zmq.ZMQError, OSError) as error:
            if stream is None or isinstance(error, _GONE) or stream.fileno() < 0:
                logger.debug("could not send %s to %s: %s", kind.name, worker.worker_id, error)
                return
            # The worker is there but will never get this message (no descriptor was left to
            # pass a segment with, say): it would wait for ever, and its calls with it.
            # Stopped, its exit fails them.
            logger.warning("could not send %s to %s (%s); stopping the worker", kind.name,
                           worker.worker_id, error)
            worker.process.signal(signal.SIGKILL)

    def drain(self, worker: WorkerRecord) -> None:
        """Deliver everything that has arrived, and everything ``worker``'s socket pair holds
        (what a worker sent just before it exited)."""
        self._on_router(POLLIN)
        stream = worker.stream
        if stream is not None and stream.fileno() in self.loop.handlers:
            self.read(worker)

    @property
    def rejected(self) -> int:
        """Messages dropped because they failed authentication or came from peers that are
        not this session's workers."""
        return self._dropped

    def close(self) -> None:
        self.router.close(linger=0)
        self.zmq.term()

    # -- receiving ---------------------------------------------------------------------------

    def _on_router(self, events: int) -> None:
        router = self.router
        while True:
            try:
                frames = zmqlink.receive(router, _NOBLOCK)
            except zmq.Again:
                return
            worker = self.channels.get(frames[0].bytes)
            if worker is None:
                self.reject("a peer that is not one of this session's workers")
                continue
            self._open(worker, frames[1:])

    def _on_stream(self, worker: WorkerRecord, events: int) -> None:
        stream = worker.stream
        if stream is None:
            return
        if events & POLLOUT:
            try:
                if stream.flush():
                    self.loop.modify(stream.fileno(), POLLIN)
            except OSError:
                stream.outgoing.clear()
        if events & ~POLLOUT:
            self.read(worker)

    def read(self, worker: WorkerRecord) -> None:
        """Deliver every message waiting on ``worker``'s socket pair."""
        stream = worker.stream
        if stream is None:
            return
        try:
            messages = stream.receive_ready()
        except StreamBroken as error:  # nothing more can be read: the worker must end, or
            messages = []              # its calls would wait for ever; its exit fails them
            self.reject(f"{worker.worker_id}: {error}; stopping the worker")
            self._drop_stream(worker)
            worker.process.signal(signal.SIGKILL)
        except (StreamClosed, OSError):  # the worker is gone; its exit comes separately
            messages = []
            self._drop_stream(worker)
        released = stream.released
        if released and messages:  # copied out: the worker may reuse them for its next result
            self.send(worker, Kind.RELEASE, release(released))
            released.clear()
        for frames in messages:
            self._open(worker, frames)

    def _drop_stream(self, worker: WorkerRecord) -> None:
        if worker.stream is not None:
            self.loop.unwatch(worker.stream.fileno())
            worker.stream.discard_descriptors()

    def _open(self, worker: WorkerRecord, frames: list[Any]) -> None:
        try:
            kind, flags, call_id, body = worker.channel.open(frames)
        except ProtocolMismatch as error:
            self.reject(f"{worker.worker_id}: {error}")
            if self.on_mismatch is not None:
                self.on_mismatch(worker, error.version)
            return
        except AuthenticationError as error:
            self.reject(f"{worker.worker_id}: {error}")
            return
        self.deliver(worker, kind, flags, call_id, body)

    def reject(self, why: str) -> None:
        """Count and log a dropped message."""
        self._dropped += 1
        logger.warning("remotefn session dropped a message from %s", why)


#: What a send to a worker that has gone raises.
_GONE = (BrokenPipeError, ConnectionResetError)

