"""The worker process: ``python -m remotefn.worker``.

It connects to its session's address, says hello, runs ``init`` if the session sends one, then
runs calls until told to stop. A heartbeat thread on a second socket exits the process when the
session stops answering, so a killed session leaves no worker behind.

Configuration arrives in environment variables that the worker removes at start, so the session's
secret never reaches the user's code or its subprocesses.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import pickle
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable

import zmq

from . import context, wire
from ._version import PROTOCOL_VERSION, __version__
from .wire import ENV_ADDRESS, ENV_CORES, ENV_KEY, ENV_PARENT, ENV_WORKER, Flag, Kind


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

    def __init__(self, address: str, key: bytes, identity: bytes) -> None:
        self.address = address
        self.key = key
        self.identity = identity
        self.zmq = zmq.Context()
        self.socket = self.zmq.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 5000)
        self.socket.connect(address)
        self.channel = wire.Channel(key, identity, session_side=False)
        self.functions: dict[bytes, Callable[..., Any]] = {}
        self.parameters: dict[bytes, frozenset[str]] = {}
        self.init_kwargs: dict[str, Any] = {}
        self.stdout = _CallOutput(self, 1)
        self.stderr = _CallOutput(self, 2)

    def send(self, kind: Kind, body: list[Any] = [], call_id: int = 0, flags: int = 0) -> None:
        self.socket.send_multipart(self.channel.seal(kind, body, call_id, flags), copy=False)

    def serve(self) -> None:
        """Handshake, then run calls until SHUTDOWN, REJECT or a call marked LAST."""
        self.send(Kind.HELLO, [hello_message()])
        self.loop()

    def loop(self) -> None:
        """Run calls until SHUTDOWN, REJECT or a call marked LAST."""
        while True:
            frames = self.socket.recv_multipart(copy=False)
            try:
                kind, flags, call_id, body = self.channel.open(frames)
            except wire.AuthenticationError as error:
                print(f"remotefn worker: dropped a message: {error}", file=sys.__stderr__)
                continue
            if kind is Kind.TASK:
                self.run(call_id, body)
                if flags & Flag.LAST:
                    return
            elif kind is Kind.WELCOME:
                if not self.initialize(body):
                    return
            elif kind is Kind.REJECT:
                print(f"remotefn worker: refused by the session: {bytes(body[0]).decode()}",
                      file=sys.__stderr__)
                return
            elif kind is Kind.SHUTDOWN:
                return

    def initialize(self, body: list[Any]) -> bool:
        if body and len(body[0]):
            try:
                init = pickle.loads(body[0])
                result = init()
                if not isinstance(result, dict):
                    raise TypeError(f"init must return a dict of keyword arguments, "
                                    f"got {type(result).__name__}")
                self.init_kwargs = result
            except BaseException:
                self.send(Kind.INIT_FAILED, [traceback.format_exc().encode()])
                return False
        self.send(Kind.READY)
        return True

    def _function(self, digest: bytes, payload: Any) -> Callable[..., Any]:
        function = self.functions.get(digest)
        if function is None:
            function = pickle.loads(payload)
            self.functions[digest] = function
            if self.init_kwargs:
                try:
                    signature = inspect.signature(function)
                    self.parameters[digest] = frozenset(
                        name for name, p in signature.parameters.items()
                        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
                except (TypeError, ValueError):
                    self.parameters[digest] = frozenset()
        return function

    def _fill_from_init(self, digest: bytes, function: Callable[..., Any], args: tuple,
                        kwargs: dict[str, Any]) -> None:
        names = self.parameters.get(digest, frozenset()) - kwargs.keys()
        if not names:
            return
        try:
            bound = inspect.signature(function).bind_partial(*args, **kwargs).arguments
        except TypeError:
            return
        for name in names:
            if name not in bound and name in self.init_kwargs:
                kwargs[name] = self.init_kwargs[name]

    def run(self, call_id: int, body: list[Any]) -> None:
        started = time.time()
        try:
            digest, payload, *arguments = body
            digest = bytes(digest)
            function = self._function(digest, payload)
            args, kwargs = wire.loads(arguments)
        except BaseException as error:
            text = f"the worker could not unpickle the call: {type(error).__name__}: {error}"
            self._reply(call_id, started, Flag.UNPICKLABLE, [text.encode()])
            return
        if self.init_kwargs:
            self._fill_from_init(digest, function, args, kwargs)
        self.stdout.call_id = self.stderr.call_id = call_id
        sys.stdout, sys.stderr = self.stdout, self.stderr
        try:
            value = function(*args, **kwargs)
        except BaseException as error:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self._reply_error(call_id, started, error)
            return
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self.stdout.flush()
            self.stderr.flush()
        del args, kwargs
        try:
            frames = wire.dumps(value)
        except BaseException as error:
            text = (f"the result ({type(value).__name__}) could not be pickled: "
                    f"{type(error).__name__}: {error}")
            self._reply(call_id, started, Flag.UNPICKLABLE, [text.encode()])
            return
        self._reply(call_id, started, Flag.NONE, frames)

    def _reply_error(self, call_id: int, started: float, error: BaseException) -> None:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            frames = wire.dumps((error, text))
            pickle.loads(frames[0], buffers=frames[1:])
        except BaseException:
            frames = wire.dumps((None, text))
        self._reply(call_id, started, Flag.ERROR, frames)

    def _reply(self, call_id: int, started: float, flags: int, frames: list[Any]) -> None:
        timing = wire.TIMING.pack(started, time.time())
        self.send(Kind.RESULT, [timing, *frames], call_id, flags)

    def close(self) -> None:
        context.shutdown_default()
        self.socket.close()
        self.zmq.term()


def _watch_session(address: str, key: bytes, identity: bytes, parent: int | None) -> None:
    """Heartbeat thread: exit the process when the session is gone (or this thread fails)."""
    try:
        _heartbeat(address, key, identity, parent)
    finally:
        try:
            context.kill_local_sessions()
            print("remotefn worker: the session is gone; exiting", file=sys.__stderr__)
        except BaseException:  # stderr may be a pipe to the dead session
            pass
        os._exit(EXIT_SESSION_LOST)


def _heartbeat(address: str, key: bytes, identity: bytes, parent: int | None) -> None:
    """Ping the session every PING_INTERVAL; return once it stopped answering."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity + b"#hb")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    channel = wire.Channel(key, identity + b"#hb", session_side=False)
    last_answer = time.monotonic()
    while time.monotonic() - last_answer <= SESSION_TIMEOUT:
        if parent is not None and os.getppid() != parent:
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
    parent = environ.pop(ENV_PARENT, None)
    cores = environ.pop(ENV_CORES, None)
    context.confine_default(max_cores=int(cores) if cores else None)
    threading.Thread(target=_watch_session, name="remotefn-heartbeat", daemon=True,
                     args=(address, key, identity, int(parent) if parent else None)).start()
    worker = Worker(address, key, identity)
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
