"""Heartbeats: a thread of its own answers the PINGs of workers that talk over ZeroMQ.

A worker ends itself when its session stops answering (so that a killed session leaves no
worker behind); answering on a socket and a thread apart from the hub's means that a hub
thread kept busy, by a slow done-callback or a large cache write, never looks like a dead
session. Forked local workers watch their socket pair instead and send no PINGs.

Every PING is authenticated with the worker's heartbeat channel; anything else is counted
and dropped unread, as on the hub's own socket.
"""

from __future__ import annotations

import logging
import os
import threading

import zmq

from ..protocol import zmqlink
from ..protocol.framing import AuthenticationError, Channel
from ..protocol.messages import Kind

logger = logging.getLogger("remotefn.hub")


class Heartbeats:
    """The heartbeat socket and the thread that answers it."""

    def __init__(self, context: zmq.Context, address: str, curve_secret: bytes) -> None:
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            #: The address workers send their PINGs to.
            self.address = zmqlink.listen(self.socket, address, curve_secret)
        except ValueError:
            self.socket.close(linger=0)
            raise
        #: Heartbeat identity -> the worker's heartbeat channel. Changed by the hub thread,
        #: read by the heartbeat thread (single dict operations only).
        self.channels: dict[bytes, Channel] = {}
        #: PINGs dropped because they failed authentication or came from unknown peers.
        self.rejected = 0
        self._stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.thread = threading.Thread(target=self._answer, name="remotefn-heartbeat",
                                       daemon=True)
        self.thread.start()

    def add(self, channel: Channel) -> None:
        self.channels[channel.identity] = channel

    def remove(self, channel: Channel) -> None:
        self.channels.pop(channel.identity, None)

    def close(self) -> None:
        """Stop the thread and close the socket."""
        os.eventfd_write(self._stop, 1)
        self.thread.join()
        os.close(self._stop)
        self.socket.close(linger=0)

    def _answer(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._stop, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self._stop in ready:
                return
            while True:
                try:
                    frames = zmqlink.receive(self.socket, zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._pong(frames)

    def _pong(self, frames: list) -> None:
        channel = self.channels.get(frames[0].bytes)
        if channel is None:
            self._reject("a peer that is not one of this session's workers")
            return
        try:
            kind, _, _, _ = channel.open(frames[1:])
        except AuthenticationError as error:
            self._reject(f"{channel.identity!r}: {error}")
            return
        if kind is Kind.PING:
            try:
                zmqlink.send(self.socket, [channel.identity, *channel.seal(Kind.PONG)],
                             zmq.NOBLOCK)
            except zmq.ZMQError:  # the worker is gone; its exit is handled by the hub
                pass

    def _reject(self, why: str) -> None:
        self.rejected += 1
        logger.warning("remotefn session dropped a heartbeat from %s", why)
