"""Scheduling: which queued call goes to which worker, and when a new worker starts.

Part of the hub (see :mod:`remotefn.hub`); runs in the hub thread only. Calls go to idle
workers first; new workers start for waiting calls in submission order, as the ledger allows.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from . import wire
from .calls import Call, Pool, State, WorkerRecord
from .errors import CallTimeout
from .ledger import Allocation, Ledger
from .options import CallOptions
from .wire import Flag, Kind

#: Calls a block worker may hold at once, so that it never waits for the session between
#: calls. ZeroMQ sends asynchronously: a worker that dies just after sending a result can
#: lose it, and with several calls in flight the session could blame the wrong one. Workers
#: with a status pipe (local single-rank workers) write each finished call's id there
#: synchronously, which keeps every WorkerDied exact; the others hold one call at a time.
PIPELINE_DEPTH = 3
#: For pools whose calls are short, a worker holds up to this many calls, sent to it in one
#: message: about BATCH_WORK seconds of work, as measured on the pool's recent calls.
MAX_BATCH = 32
BATCH_WORK = 0.002


def pipeline_depth(pool: Pool) -> int:
    """How many calls one worker of ``pool`` may hold at once."""
    runtime = pool.runtime
    if runtime is None or runtime * PIPELINE_DEPTH >= BATCH_WORK:
        return PIPELINE_DEPTH
    return min(MAX_BATCH, int(BATCH_WORK / max(runtime, 1e-6)))


def refill_below(depth: int) -> int:
    """A worker holding fewer calls than this gets more: a worker that holds a batch gets
    the next one once it is half done."""
    return depth if depth <= PIPELINE_DEPTH else depth // 2


def _takes_more(worker: WorkerRecord, low_water: int, pipelined: bool) -> bool:
    """Whether ``worker`` may be handed calls now: it is idle, or it keeps calls in line
    (a status pipe, calls without a timeout) and holds fewer than ``low_water``."""
    load = len(worker.inflight)
    return not load or (pipelined and worker.process.status_fd is not None
                        and load < low_water)


class Scheduler:
    """Queues per pool, the choice of worker, and the ledger's part in starting workers."""

    pools: dict[Any, Pool]
    _last_pool: Pool | None = None
    workers: set[WorkerRecord]
    ledger: Ledger
    capacity: Any
    stopping: bool
    _start_worker: Callable[..., WorkerRecord | None]
    _stop_worker: Callable[[WorkerRecord], None]
    _stopping: Callable[[WorkerRecord], None]
    _send: Callable[..., None]
    _later: Callable[..., None]
    _finish: Callable[[Call], None]

    def _enqueue(self, call: Call) -> None:
        if self.stopping:
            call.future._fail(RuntimeError("the session was shut down before the call started"))
            return
        pool = self._pool_for(call.options, create=True)
        pool.queue.append(call)
        pool.released = False

    def _pool_for(self, options: CallOptions, create: bool) -> Pool | None:
        """The pool for calls with ``options`` (a new one if ``create``, else None)."""
        pool = self._last_pool
        if pool is None or pool.options is not options:
            key = options.pool_key()
            pool = self.pools.get(key)
            if pool is None:
                if not create:
                    return None
                pool = self._new_pool(key, options)
            self._last_pool = pool  # calls come in runs of the same options
        return pool

    def _new_pool(self, key: Any, options: CallOptions) -> Pool:
        cores = options.cores * options.threads_per_core
        limit = options.max_workers or max(1, self.capacity.cores // cores)
        init = b""
        if options.init is not None:
            import cloudpickle

            init = cloudpickle.dumps(options.init)
        pool = Pool(key, options, limit, init)
        self.pools[key] = pool
        return pool

    def _schedule(self) -> None:
        # Idle workers take calls first: that needs nothing from the ledger.
        for pool in self.pools.values():
            if pool.queue and not pool.one_shot:
                self._dispatch_block(pool)
            elif pool.released and not pool.queue:
                for worker in list(pool.workers):
                    if worker.state is State.READY and not worker.inflight:
                        self._stop_worker(worker)
        # New workers start for waiting calls in submission order; once one does not fit, the
        # later ones wait too, so a large call is never starved by a stream of small ones.
        while (pool := self._oldest_waiting()) is not None:
            allocation = self._allocate(pool)
            if allocation is None:
                return
            assigned = pool.queue.popleft() if pool.one_shot else None
            if self._start_worker(pool, allocation, assigned) is None and not pool.one_shot:
                pool.limit = len(pool.workers)  # stop growing a pool whose workers fail to start

    def _dispatch_block(self, pool: Pool) -> None:
        """Give queued calls to ready workers: idle ones first, never more than a fair share
        of the queue each, several calls in one message where the pool's calls are short."""
        queue = pool.queue
        ready = [worker for worker in pool.workers if worker.state is State.READY]
        if not ready:
            return
        if len(ready) > 1:
            ready.sort(key=lambda worker: len(worker.inflight))
        pipelined = pool.options.timeout is None
        depth = pipeline_depth(pool) if pipelined else 1
        low_water = refill_below(depth)
        share = -(-len(queue) // len(ready))
        for worker in ready:
            if not _takes_more(worker, low_water, pipelined):
                continue
            load = len(worker.inflight)
            room = min(depth - load if worker.process.status_fd is not None else 1, share)
            calls = []
            while queue and len(calls) < room:
                call = queue.popleft()
                if self._begin(worker, call):
                    calls.append(call)
            if len(calls) == 1:
                self._send_call(worker, calls[0])
            elif calls:
                self._send_calls(worker, calls)
            if not queue:
                return

    @staticmethod
    def _idle_stream_worker(pool: Pool) -> WorkerRecord | None:
        """The least busy ready worker of ``pool`` on a socket pair that may take one more
        call now (see _dispatch_block), or None."""
        best: WorkerRecord | None = None
        low_water = refill_below(pipeline_depth(pool))
        for worker in pool.workers:
            if (worker.state is not State.READY or worker.stream is None
                    or not _takes_more(worker, low_water, pipelined=True)):
                continue
            if not worker.inflight:
                return worker
            if best is None or len(worker.inflight) < len(best.inflight):
                best = worker
        return best

    def _oldest_waiting(self) -> Pool | None:
        """The pool whose next call that needs a new worker was submitted first."""
        best: Pool | None = None
        best_id = 0
        for pool in self.pools.values():
            call = pool.next_waiting()
            if call is not None and (best is None or call.call_id < best_id):
                best, best_id = pool, call.call_id
        return best

    def _allocate(self, pool: Pool) -> Allocation | None:
        allocation = self.ledger.take(pool.cores, pool.gpus)
        if allocation is not None:
            return allocation
        # Idle block workers of other pools give way, so no pool waits forever on another.
        for worker in list(self.workers):
            if (worker.pool is not pool and worker.state is State.READY and not worker.inflight
                    and not worker.pool.one_shot and not worker.pool.queue):
                self._stop_worker(worker)
                allocation = self.ledger.take(pool.cores, pool.gpus)
                if allocation is not None:
                    return allocation
        return None

    def release_pool(self, key: Any) -> None:
        """Stop the pool's workers once they are idle and its queue is empty."""
        pool = self.pools.get(key)
        if pool is not None:
            pool.released = True

    def _dispatch(self, worker: WorkerRecord, call: Call) -> None:
        if self._begin(worker, call):
            self._send_call(worker, call)

    def _begin(self, worker: WorkerRecord, call: Call) -> bool:
        """Record ``call`` as held by ``worker``; False if it was cancelled while queued."""
        if not call.started:
            if not call.future.set_running_or_notify_cancel():
                return False
            call.started = True
        info = call.future.info
        info.worker_id, info.host, info.pid = worker.worker_id, worker.host, worker.pid
        worker.inflight.append(call)
        if call.options.timeout is not None:
            self._later(call.options.timeout, self._on_timeout, worker, call)
        return True

    @staticmethod
    def _task_body(worker: WorkerRecord, call: Call) -> list[Any]:
        function = call.function
        if function.digest in worker.known:
            return [function.digest, b"", *call.arguments]
        worker.known.add(function.digest)
        return [function.digest, function.payload, *call.arguments]

    def _send_call(self, worker: WorkerRecord, call: Call) -> None:
        flags = Flag.LAST if worker.pool.one_shot else Flag.NONE
        self._send(worker, Kind.TASK, self._task_body(worker, call), call.call_id, flags)

    def _send_calls(self, worker: WorkerRecord, calls: list[Call]) -> None:
        body = wire.pack_calls([(call.call_id, self._task_body(worker, call))
                                for call in calls])
        self._send(worker, Kind.TASKS, body)

    def _on_timeout(self, worker: WorkerRecord, call: Call) -> None:
        if call.future.done() or not worker.inflight or worker.inflight[0] is not call:
            return
        call.timed_out = True
        worker.inflight.popleft()
        call.future._fail(CallTimeout(
            f"{call.describe()} ran longer than timeout={call.options.timeout:g} s; "
            f"{worker.describe()} was stopped and will be replaced"))
        self._finish(call)
        worker.process.signal(signal.SIGKILL)
        self._stopping(worker)
