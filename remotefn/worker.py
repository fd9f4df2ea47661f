"""The worker process: ``python -m remotefn.worker``.

It connects to its session's address, says hello, runs ``init`` if the session sends one, then
runs calls until told to stop. A heartbeat thread on a second socket exits the process when the
session stops answering, so a killed session leaves no worker behind.

Configuration arrives in environment variables that the worker removes at start, so the session's
secret never reaches the user's code or its subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import sys
import threading
import time
from typing import Any, Callable

from . import context, wire
from ._version import PROTOCOL_VERSION, __version__
from .runner import Outcome, Runner
from .stream import FrameStream, StreamClosed
from .wire import (ENV_ADDRESS, ENV_CONNECTION_FD, ENV_CORES, ENV_GPUS, ENV_KEY, ENV_NESTED,
                   ENV_PMI, ENV_RANKS, ENV_STATUS_FD, ENV_WORKER, Flag, Kind)


PING_INTERVAL = 1.0
#: A worker exits when its session has not answered for this long.
SESSION_TIMEOUT = 4.0
EXIT_SESSION_LOST = 70


def hello_message(version: str = __version__, protocol: int = PROTOCOL_VERSION) -> bytes:
    """The body of HELLO: who this worker is and which remotefn it runs."""
    return json.dumps({"version": version, "protocol": protocol, "pid": os.getpid(),
                       "host": socket.gethostname()}).encode()


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
            self._worker.send(Kind.OUTPUT, [bytes([self._stream]), text.encode("utf-8", "replace")],
                              self.call_id)


class Worker:
    """Runs calls sent by one session, one at a time, in the main thread."""

    def __init__(self, address: str, key: bytes, identity: bytes,
                 connection: int | None = None) -> None:
        self.address = address
        self.key = key
        self.identity = identity
        self.stream: FrameStream | None = None
        if connection is not None:  # a socket pair from the session (forked local workers)
            self.stream = FrameStream(socket.socket(fileno=connection))
        else:
            import zmq

            self.zmq = zmq.Context()
            self.socket = self.zmq.socket(zmq.DEALER)
            self.socket.setsockopt(zmq.IDENTITY, identity)
            self.socket.setsockopt(zmq.LINGER, 5000)
            self.socket.connect(address)
        self.channel = wire.Channel(key, identity, session_side=False)
        self.runner = Runner()
        status = os.environ.pop(ENV_STATUS_FD, None)
        self.status_fd = int(status) if status else None
        self.stdout = _CallOutput(self, 1)
        self.stderr = _CallOutput(self, 2)

    def send(self, kind: Kind, body: list[Any] = [], call_id: int = 0, flags: int = 0) -> None:
        frames = self.channel.seal(kind, body, call_id, flags)
        if self.stream is not None:
            self.stream.send_all(frames)
        else:
            wire.send(self.socket, frames)

    def receive(self) -> list[Any]:
        """The next message from the session; StreamClosed once the session is gone."""
        if self.stream is not None:
            return self.stream.receive()
        return wire.receive(self.socket)

    def serve(self) -> None:
        """Handshake, then run calls until SHUTDOWN, REJECT or a call marked LAST."""
        self.send(Kind.HELLO, [hello_message()])
        self.loop()

    def loop(self) -> None:
        """Run calls until SHUTDOWN, REJECT or a call marked LAST."""
        while True:
            try:
                frames = self.receive()
            except StreamClosed:
                return
            try:
                kind, flags, call_id, body = self.channel.open(frames)
            except wire.AuthenticationError as error:
                print(f"remotefn worker: dropped a message: {error}", file=sys.__stderr__)
                continue
            if kind is Kind.TASK:
                self.answer(call_id, body)
                if flags & Flag.LAST:
                    return
            elif kind is Kind.TASKS:
                for call_id, call_body in wire.unpack_calls(body):
                    self.answer(call_id, call_body)
            elif kind is Kind.WELCOME:
                error = self.initialize(body[0])
                if error is not None:
                    self.send(Kind.INIT_FAILED, [error.encode()])
                    return
                self.send(Kind.READY)
            elif kind is Kind.REJECT:
                print(f"remotefn worker: refused by the session: {bytes(body[0]).decode()}",
                      file=sys.__stderr__)
                return
            elif kind is Kind.SHUTDOWN:
                return

    def answer(self, call_id: int, body: list[Any]) -> None:
        """Run one call and send its RESULT."""
        started = time.time()
        flags, result = self.run(call_id, body)
        if self.status_fd is not None:  # before the result: it survives a crash
            os.write(self.status_fd, call_id.to_bytes(8, "big"))
        self.send(Kind.RESULT, [wire.TIMING.pack(started, time.time()), *result], call_id, flags)

    def initialize(self, payload: Any) -> str | None:
        """Run ``init``; the error text if it failed."""
        return self.runner.initialize(payload)

    def run(self, call_id: int, body: list[Any]) -> Outcome:
        """Run one call with its output sent to the session; the RESULT flags and body."""
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
        context.shutdown_default()
        if self.stream is not None:
            self.stream.close()
        else:
            self.socket.close()
            self.zmq.term()


def _watch_session(watch: Callable[..., None], *args: Any) -> None:
    """Watcher thread: exit the process once ``watch(*args)`` returns (the session is gone)
    or fails."""
    try:
        watch(*args)
    finally:
        try:
            context.kill_local_sessions()
            print("remotefn worker: the session is gone; exiting", file=sys.__stderr__)
        except BaseException:  # stderr may be a pipe to the dead session
            pass
        os._exit(EXIT_SESSION_LOST)


def _connection_closed(connection: int, parent: int) -> None:
    """Return once the session has closed its end of the socket pair (a session that dies
    closes it too) or the process that started this worker is gone."""
    poller = select.poll()
    poller.register(connection, select.POLLRDHUP)
    while os.getppid() == parent:
        if poller.poll(PING_INTERVAL * 1000):
            return


def _heartbeat(address: str, key: bytes, identity: bytes, parent: int) -> None:
    """Ping the session every PING_INTERVAL; return once it stopped answering or the process
    that started this worker (the session, an MPI launcher, srun) is gone."""
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity + b"#hb")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    channel = wire.Channel(key, identity + b"#hb", session_side=False)
    last_answer = time.monotonic()
    while time.monotonic() - last_answer <= SESSION_TIMEOUT:
        if os.getppid() != parent:
            return
        try:  # with the session gone there is no peer, and a blocking send would wait forever
            sock.send_multipart(channel.seal(Kind.PING), zmq.NOBLOCK)
        except zmq.Again:
            pass
        deadline = time.monotonic() + PING_INTERVAL
        while (remaining := deadline - time.monotonic()) > 0:
            if sock.poll(remaining * 1000):
                try:
                    channel.open(sock.recv_multipart())
                    last_answer = time.monotonic()
                except wire.AuthenticationError:
                    pass


def main() -> int:
    environ = os.environ
    try:
        address = environ.pop(ENV_ADDRESS)
        key = bytes.fromhex(environ.pop(ENV_KEY))
        identity = environ.pop(ENV_WORKER).encode()
    except (KeyError, ValueError) as error:
        print(f"remotefn worker: started without a session ({error!r} missing or invalid); "
              "workers are started by a remotefn session", file=sys.stderr)
        return 2
    cores = environ.pop(ENV_CORES, None)
    ranks = int(environ.pop(ENV_RANKS, "1"))
    gpus = environ.pop(ENV_GPUS, None)
    pmi = environ.pop(ENV_PMI, None)
    nested = environ.pop(ENV_NESTED, None)
    comm, rank = None, 0
    if ranks > 1:
        from . import ranks as mpi

        comm = mpi.world()
        rank = comm.Get_rank()
        if comm.Get_size() != ranks:
            print(f"remotefn worker: {ranks} MPI ranks were started but MPI reports a world of "
                  f"{comm.Get_size()}: the MPI launcher and the MPI library of mpi4py do not "
                  f"match, or the PMI mode{f' {pmi!r}' if pmi else ''} is not supported "
                  "(Flux's pmix needs the flux-pmix plugin)", file=sys.stderr)
            return 3
    if gpus is not None:
        groups = gpus.split(";")
        environ["CUDA_VISIBLE_DEVICES"] = groups[rank] if rank < len(groups) else ""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    context.confine_default(
        backend="flux" if nested == "flux" else "local",
        max_cores=int(cores) if cores else None,
        gpu_ids=[int(i) for i in visible.split(",") if i.isdigit()] if visible else None)
    if comm is not None and rank > 0:
        mpi.follow(comm)
        return 0
    connection = environ.pop(ENV_CONNECTION_FD, None)
    watch = (_connection_closed, int(connection), os.getppid()) if connection \
        else (_heartbeat, address, key, identity, os.getppid())
    threading.Thread(target=_watch_session, name="remotefn-heartbeat", daemon=True,
                     args=watch).start()
    worker = mpi.MpiWorker(address, key, identity, comm) if comm is not None \
        else Worker(address, key, identity, int(connection) if connection else None)
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
