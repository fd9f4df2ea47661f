"""The worker's loop: say hello, run ``init`` if the session sends one, then run calls until
told to stop. Calls run one at a time in the main thread; what they print goes to the session.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import time
from typing import Any

from ..protocol import messages, segments
from ..protocol.framing import AuthenticationError, Channel
from ..protocol.launch import MEASURE_MEMORY, STATUS_FD
from ..protocol.messages import Flag, Kind, Outcome, Usage
from ..protocol.socketpair import FrameStream, StreamBroken, StreamClosed
from ..sessions import registry
from . import usage, watchdog
from .runner import Runner


class _CallOutput(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr during a call; sends whole lines to the session."""

    def __init__(self, worker: "Worker", stream: int) -> None:
        self._worker = worker
        self._stream = stream
        self._pending: list[str] = []
        self.call_id = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending.append(text)
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._worker.send(Kind.OUTPUT, messages.output(self._stream, text), self.call_id)


class Worker:
    """Runs calls sent by one session, one at a time, in the main thread."""

    def __init__(self, address: str, server_key: bytes, key: bytes, identity: bytes,
                 connection: int | None = None) -> None:
        self.address = address
        self.key = key
        self.identity = identity
        self.stream: FrameStream | None = None
        #: The ZeroMQ socket's monitor until the watchdog thread takes it over.
        self.monitor: Any = None
        if connection is not None:  # a socket pair from the session (forked local workers)
            self.stream = FrameStream(socket.socket(fileno=connection))
        else:
            import zmq

            from ..protocol import zmqlink

            self.zmq = zmq.Context()
            self.socket = self.zmq.socket(zmq.DEALER)
            self.socket.setsockopt(zmq.IDENTITY, identity)
            self.socket.setsockopt(zmq.LINGER, 5000)
            zmqlink.connect_curve(self.socket, server_key)
            self.monitor = watchdog.keep_alive(self.socket)
            self.socket.connect(address)
            self.zmqlink = zmqlink
        self.channel = Channel(key, identity, session_side=False)
        self.runner = Runner()
        if self.stream is not None and segments.supported():
            # Large results go back in shared memory, reused once the session copied them.
            self.runner.segments = segments.Pool(hold_lent=True)
        status = os.environ.pop(STATUS_FD, None)
        self.status_fd = int(status) if status else None
        self.measure_memory = os.environ.pop(MEASURE_MEMORY, "") == "1"
        #: CPU seconds per rank of the last call, where the ranks measured them (MPI).
        self.rank_cpu_times: tuple[float, ...] | None = None
        #: The GPUs each rank sees (None: CUDA_VISIBLE_DEVICES unset), said in HELLO; set by
        #: the start-up, which knows the ranks.
        self.gpus: tuple[tuple[str, ...] | None, ...] = ()
        self.stdout = _CallOutput(self, 1)
        self.stderr = _CallOutput(self, 2)

    def start_watchdog(self) -> None:
        """End this process once the session is gone (see :mod:`.watchdog`); the watchdog
        thread owns the monitor socket from now on."""
        if self.stream is not None:
            watchdog.start(self.stream.fileno())
        else:
            watchdog.start(self.monitor)
            self.monitor = None

    def send(self, kind: Kind, body: list[Any] = [], call_id: int = 0, flags: int = 0) -> None:
        frames = self.channel.seal(kind, body, call_id, flags, passing=self.stream is not None)
        if self.stream is not None:
            self.stream.send_all(frames)
        else:
            self.zmqlink.send(self.socket, frames)

    def receive(self) -> list[Any]:
        """The next message from the session; StreamClosed once the session is gone."""
        if self.stream is not None:
            return self.stream.receive()
        return self.zmqlink.receive(self.socket)

    def serve(self) -> None:
        """Handshake, then run calls until SHUTDOWN, REJECT or a call marked LAST."""
        self.send(Kind.HELLO, messages.hello(os.getpid(), socket.gethostname(), self.gpus))
        self.loop()

    def loop(self) -> None:
        """Run calls until SHUTDOWN, REJECT or a call marked LAST."""
        while True:
            try:
                frames = self.receive()
            except StreamBroken as error:  # the session's stream cannot be read any more
                print(f"remotefn worker: stopped reading the session: {error}",
                      file=sys.__stderr__)
                return
            except StreamClosed:
                return
            try:
                kind, flags, call_id, body = self.channel.open(frames)
            except AuthenticationError as error:
                print(f"remotefn worker: dropped a message: {error}", file=sys.__stderr__)
                continue
            if kind is Kind.TASK:
                self.answer(call_id, body)
                if flags & Flag.LAST:
                    return
            elif kind is Kind.TASKS:
                for call_id, call_body in messages.read_tasks(body):
                    self.answer(call_id, call_body)
            elif kind is Kind.WELCOME:
                failure = self.initialize(messages.read_welcome(body))
                if failure is not None:
                    self.send(Kind.INIT_FAILED, messages.text(failure))
                    return
                self.send(Kind.READY)
            elif kind is Kind.REJECT:
                print(f"remotefn worker: refused by the session: {messages.read_text(body)}",
                      file=sys.__stderr__)
                return
            elif kind is Kind.RELEASE:
                if self.runner.segments is not None:
                    self.runner.segments.release_ids(messages.read_release(body))
            elif kind is Kind.SHUTDOWN:
                return

    def answer(self, call_id: int, body: list[Any]) -> None:
        """Run one call (a TASK body) and send its RESULT."""
        baseline = usage.reset_peak() if self.measure_memory else 0
        started = time.time()
        self.runner.cpu = 0.0
        outcome = self.run(call_id, body)
        finished = time.time()
        if self.status_fd is not None:  # before the result: it survives a crash
            os.write(self.status_fd, call_id.to_bytes(8, "big"))
        used = Usage(started, finished,
                     usage.peak_since(baseline) if self.measure_memory else -1,
                     self.rank_cpu_times or (self.runner.cpu,))
        flags, result = messages.result(used, outcome)
        self.send(Kind.RESULT, result, call_id, flags)

    def initialize(self, payload: Any) -> str | None:
        """Run ``init``; the error text if it failed."""
        return self.runner.initialize(payload)

    def run(self, call_id: int, body: list[Any]) -> Outcome:
        """Run one call with its output sent to the session."""
        return self.runner.call(body, before=lambda: self._capture(call_id),
                                after=self._release)

    def _capture(self, call_id: int) -> None:
        self.stdout.call_id = self.stderr.call_id = call_id
        sys.stdout, sys.stderr = self.stdout, self.stderr

    def _release(self) -> None:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        self.stdout.flush()
        self.stderr.flush()

    def close(self) -> None:
        registry.shutdown_default()
        if self.stream is not None:
            self.stream.close()
        else:
            self.socket.close()
            if self.monitor is not None:
                self.monitor.close(linger=0)
            self.zmq.term()
