"""Results: where a worker's RESULT becomes its future's value or exception, and its OUTPUT
the call's captured (and forwarded) text.

Runs in the hub thread, holding its lock; futures' callbacks run here too.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

from ..protocol import messages
from .records import WorkerRecord

#: A call of a one-shot pool (``block=False``) shorter than this many seconds costs less than
#: starting its worker; after SHORT_CALLS_WARNING of them a session warns once.
SHORT_CALL = 0.05
SHORT_CALLS_WARNING = 50


class Results:
    """Settles futures from RESULT messages and collects OUTPUT."""

    def __init__(self, retire: Callable[[WorkerRecord], None], reject: Callable[[str], None],
                 forward_output: bool) -> None:
        self.retire = retire
        self.reject = reject
        self.forward_output = forward_output
        #: Short calls of one-shot pools so far; None once the session has warned.
        self.short_calls: int | None = 0

    def on_result(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        inflight = worker.inflight
        if not inflight or inflight[0].call_id != call_id:
            self.reject(f"{worker.worker_id}: result for call {call_id} it was not running")
            return
        call = inflight.popleft()
        call.drop_arguments()  # before the caller wakes: its next call reuses the segments
        worker.results += 1
        if worker.results % 256 == 0 and worker.process.status_fd is not None:
            # Keep the status pipe drained; only the ids of calls still held matter.
            worker.read_status()
            worker.finished.intersection_update([c.call_id for c in inflight])
        used, frames = messages.read_result(body)
        info = call.future.info
        info.started, info.finished = used.started, used.finished
        info.cpu_times = used.cpu_times
        if used.peak_memory >= 0:
            info.peak_memory = used.peak_memory
        if inflight:  # the next call held by this worker started when this one finished
            inflight[0].future.info.started = used.finished
        worker.pool.record_runtime(used.finished - used.started)
        if worker.pool.one_shot:
            self.retire(worker)
            if self.short_calls is not None and used.finished - used.started < SHORT_CALL:
                self._count_short_call(self.short_calls + 1, call.function.name)
        ok, value = messages.read_outcome(flags, frames, call.describe)
        if not ok:
            call.future._fail(value)
        else:
            if call.on_success is not None:
                call.on_success(value, info)
            call.future._succeed(value)
        call.finish()

    def _count_short_call(self, count: int, function: str) -> None:
        if count < SHORT_CALLS_WARNING:
            self.short_calls = count
            return
        self.short_calls = None
        warnings.warn(f"remotefn: {SHORT_CALLS_WARNING} calls (the last of {function}) ran "
                      f"for under {SHORT_CALL * 1000:.0f} ms each, each in a worker process "
                      f"started for it alone (block=False, the default): starting the process "
                      f"costs more than the call. Use @remote(block=True) to keep workers "
                      f"that take call after call.", RuntimeWarning, stacklevel=1)

    def on_output(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        stream, text = messages.read_output(body)
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
