"""What each message from a worker means: the handshake, results, output.

Part of the hub (see :mod:`remotefn.hub`); runs in the hub thread, holding its lock.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from . import wire
from ._version import PROTOCOL_VERSION, __version__
from .calls import Call, State, WorkerRecord
from .errors import (ProtocolError, RemoteError, RemoteTraceback, SerializationError,
                     WorkerStartError)
from .wire import Flag, Kind


class MessageHandlers:
    """One method per message kind a worker sends; ``_HANDLERS`` maps kinds to them."""

    forward_output: bool
    _send: Callable[..., None]
    _reject: Callable[[str], None]
    _stopping: Callable[[WorkerRecord], None]
    _stop_worker: Callable[[WorkerRecord], None]
    _fail_start: Callable[..., None]
    _dispatch: Callable[[WorkerRecord, Call], None]
    _read_status: Callable[[WorkerRecord], None]
    _finish: Callable[[Call], None]

    def _on_hello(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        if worker.state is not State.STARTING:
            self._reject(f"{worker.worker_id}: second hello")
            return
        hello = json.loads(bytes(body[0]))
        worker.host, worker.pid = hello.get("host"), hello.get("pid")
        if hello.get("version") != __version__ or hello.get("protocol") != PROTOCOL_VERSION:
            reason = (f"the worker runs remotefn {hello.get('version')} (protocol "
                      f"{hello.get('protocol')}) but the session runs remotefn {__version__} "
                      f"(protocol {PROTOCOL_VERSION}); install the same version on both sides")
            self._send(worker, Kind.REJECT, [reason.encode()])
            self._stopping(worker)
            self._fail_start(worker.pool, worker, ProtocolError(reason))
            return
        worker.state = State.INITIALIZING
        self._send(worker, Kind.WELCOME, [worker.pool.init_payload])

    def _on_ready(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        if worker.state is not State.INITIALIZING:
            return
        worker.state = State.READY
        worker.pool.starting -= 1
        if worker.assigned is not None:
            call, worker.assigned = worker.assigned, None
            self._dispatch(worker, call)
            if not worker.inflight:  # cancelled while the worker started
                self._stop_worker(worker)

    def _on_init_failed(self, worker: WorkerRecord, flags: int, call_id: int,
                        body: list[Any]) -> None:
        text = bytes(body[0]).decode("utf-8", "replace")
        self._stopping(worker)
        self._fail_start(worker.pool, worker, WorkerStartError(
            f"init of {worker.pool.describe()} raised in {worker.describe()}", stderr=text))

    def _on_result(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        if not worker.inflight or worker.inflight[0].call_id != call_id:
            self._reject(f"{worker.worker_id}: result for call {call_id} it was not running")
            return
        call = worker.inflight.popleft()
        worker.results += 1
        if worker.results % 256 == 0 and worker.process.status_fd is not None:
            # Keep the status pipe drained; only the ids of calls still held matter.
            self._read_status(worker)
            worker.finished.intersection_update([c.call_id for c in worker.inflight])
        info = call.future.info
        info.started, info.finished = wire.TIMING.unpack(body[0])
        worker.pool.record_runtime(info.finished - info.started)
        if worker.pool.one_shot:
            self._stopping(worker)
        if flags & Flag.UNPICKLABLE:
            text = bytes(body[1]).decode("utf-8", "replace")
            call.future._fail(SerializationError(f"{call.describe()}: {text}"))
        elif flags & Flag.ERROR:
            call.future._fail(self._remote_exception(call, body[1:]))
        else:
            try:
                value = wire.loads(body[1:])
            except BaseException as error:
                call.future._fail(SerializationError(
                    f"the result of {call.describe()} could not be unpickled here: "
                    f"{type(error).__name__}: {error}"))
            else:
                if call.on_success is not None:
                    call.on_success(value, info)
                call.future._succeed(value)
        self._finish(call)

    @staticmethod
    def _remote_exception(call: Call, frames: list[Any]) -> BaseException:
        try:
            error, text = wire.loads(frames)
        except BaseException as unpickling:
            return RemoteError(f"{call.describe()} raised an exception that could not be "
                               f"unpickled here: {unpickling}")
        if error is None:
            error = RemoteError(f"{call.describe()} raised an exception that could not be "
                                f"pickled:\n{text}")
        error.__cause__ = RemoteTraceback(text)
        return error

    def _on_output(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        stream = bytes(body[0])[0]
        text = bytes(body[1]).decode("utf-8", "replace")
        for call in worker.inflight:
            if call.call_id == call_id:
                call.future._add_output(stream, text)
                break
        if self.forward_output:
            target = sys.stdout if stream == 1 else sys.stderr
            try:
                target.write(text)
                target.flush()
            except (OSError, ValueError):
                pass

    _HANDLERS = {Kind.HELLO: _on_hello, Kind.READY: _on_ready, Kind.INIT_FAILED: _on_init_failed,
                 Kind.RESULT: _on_result, Kind.OUTPUT: _on_output}
