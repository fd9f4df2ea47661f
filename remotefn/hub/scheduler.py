"""The scheduler: pools and their queues, which queued call goes to which worker, and which
pool gets a new worker next.

It decides and sends nothing: :meth:`Scheduler.hand_out` says which calls each ready worker
takes, :meth:`Scheduler.next_start` which worker to start and which idle ones must make room;
the hub sends the calls and starts and stops the workers. Calls go to idle workers first; new
workers start for waiting calls in submission order, as the ledger allows.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, NamedTuple

from ..backends import Capacity
from ..options import CallOptions
from .ledger import Ledger, Share
from .records import Call, Pool, State, WorkerRecord

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


def takes_more(worker: WorkerRecord, low_water: int, pipelined: bool) -> bool:
    """Whether ``worker`` may be handed calls now: it is idle, or it keeps calls in line
    (a status pipe, calls without a timeout) and holds fewer than ``low_water``."""
    load = len(worker.inflight)
    return not load or (pipelined and worker.process.status_fd is not None
                        and load < low_water)


class Start(NamedTuple):
    """A worker to start for ``pool``, once the idle workers in ``make_room`` have stopped."""

    pool: Pool
    make_room: list[WorkerRecord]


class Scheduler:
    """Owns the pools; reads the ledger and the workers' records, changes neither."""

    def __init__(self, capacity: Capacity, ledger: Ledger) -> None:
        self.capacity = capacity
        self.ledger = ledger
        self.pools: dict[Any, Pool] = {}
        self._last_pool: Pool | None = None

    def enqueue(self, call: Call) -> None:
        pool = self.pool_for(call.options, create=True)
        assert pool is not None
        pool.queue.append(call)
        pool.released = False

    def pool_for(self, options: CallOptions, create: bool) -> Pool | None:
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
        limit = options.max_workers or max(1, self.capacity.cpus // options.cpus)
        init = b""
        if options.init is not None:
            import cloudpickle

            init = cloudpickle.dumps(options.init)
        pool = Pool(key, options, limit, init)
        self.pools[key] = pool
        return pool

    def release(self, key: Any) -> None:
        """Stop the pool's workers once they are idle and its queue is empty."""
        pool = self.pools.get(key)
        if pool is not None:
            pool.released = True

    # -- decisions ---------------------------------------------------------------------------

    def hand_out(self) -> Iterator[tuple[WorkerRecord, list[Call]]]:
        """The calls each ready block worker takes now (see :meth:`assign`): idle workers
        first, never more than a fair share of the queue each, several calls at once where
        the pool's calls are short."""
        for pool in self.pools.values():
            if not pool.queue or pool.one_shot:
                continue
            queue = pool.queue
            ready = [worker for worker in pool.workers
                     if worker.state is State.READY and not worker.exited]
            if not ready:
                continue
            if len(ready) > 1:
                ready.sort(key=lambda worker: len(worker.inflight))
            pipelined = pool.options.timeout is None
            depth = pipeline_depth(pool) if pipelined else 1
            low_water = refill_below(depth)
            share = -(-len(queue) // len(ready))
            for worker in ready:
                if not takes_more(worker, low_water, pipelined):
                    continue
                room = min(depth - len(worker.inflight)
                           if worker.process.status_fd is not None else 1, share)
                calls: list[Call] = []
                while queue and len(calls) < room:
                    call = queue.popleft()
                    if self.assign(worker, call):
                        calls.append(call)
                if calls:
                    yield worker, calls
                if not queue:
                    break

    def idle_released(self) -> list[WorkerRecord]:
        """Idle workers of pools that :meth:`release` asked to stop."""
        return [worker for pool in self.pools.values() if pool.released and not pool.queue
                for worker in pool.workers
                if worker.state is State.READY and not worker.inflight]

    def next_start(self) -> Start | None:
        """The next worker to start: for the pool whose waiting call was submitted first, if
        it fits once idle block workers of other pools stop (so that no pool waits forever on
        another). None when it does not fit: later calls wait too, so that a large call is
        never starved by a stream of small ones."""
        pool = self._oldest_waiting()
        if pool is None:
            return None
        if self.ledger.fits(pool.demand):
            return Start(pool, [])
        make_room: list[WorkerRecord] = []
        freed: list[tuple[int, int, tuple[int, ...], int]] = []
        for other in self.pools.values():
            if other is pool or other.one_shot or other.queue:
                continue
            for worker in other.workers:
                share = worker.share
                if worker.state is not State.READY or worker.inflight or share is None:
                    continue
                make_room.append(worker)
                freed.extend(share.places)
                if self.ledger.fits(pool.demand, Share(0, (), tuple(freed))):
                    return Start(pool, make_room)
        return None

    def _oldest_waiting(self) -> Pool | None:
        """The pool whose next call that needs a new worker was submitted first."""
        best: Pool | None = None
        best_id = 0
        for pool in self.pools.values():
            call = pool.next_waiting()
            if call is not None and (best is None or call.call_id < best_id):
                best, best_id = pool, call.call_id
        return best

    @staticmethod
    def idle_stream_worker(pool: Pool) -> WorkerRecord | None:
        """The least busy ready worker of ``pool`` on a socket pair that may take one more
        call now (see :meth:`hand_out`), or None."""
        best: WorkerRecord | None = None
        low_water = refill_below(pipeline_depth(pool))
        for worker in pool.workers:
            if (worker.state is not State.READY or worker.stream is None or worker.exited
                    or not takes_more(worker, low_water, pipelined=True)):
                continue
            if not worker.inflight:
                return worker
            if best is None or len(worker.inflight) < len(best.inflight):
                best = worker
        return best

    @staticmethod
    def assign(worker: WorkerRecord, call: Call) -> bool:
        """Record ``call`` as held by ``worker``; False if it was cancelled while queued."""
        if not call.started:
            if not call.future.set_running_or_notify_cancel():
                return False
            call.started = True
        info = call.future.info
        (info.worker_id, info.host, info.pid, info.pool, info.ranks,
         info.gpus) = worker.placement
        if not worker.inflight:  # it starts now; one queued behind others starts when they end
            info.started = time.time()
        worker.inflight.append(call)
        return True
