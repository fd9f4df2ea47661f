"""What becomes of the calls of a worker that is gone: they run again (on another worker,
or on a second worker started for a one-shot call), or they fail, and when a pool's workers
keep failing to start, its queued calls fail with them.

Pure decisions over the records, run in the hub thread by :mod:`.workers` when a worker's
exit has been handled.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..errors import RemoteFnError, WorkerDied, WorkerStartError
from .records import Call, Pool, WorkerRecord

logger = logging.getLogger("remotefn.hub")

#: A block pool whose workers fail to start this many times in a row fails its queued calls
#: (a later call tries again).
MAX_FAILED_STARTS = 3


def settle(worker: WorkerRecord, code: int | None, was_starting: bool, never_connected: bool,
           stopping: bool, failed_nodes: Callable[[str], list[str]]) -> None:
    """The calls ``worker`` held when it exited with ``code`` run again or fail."""
    pool = worker.pool
    if was_starting and not (never_connected and _relaunch(worker, code, stopping)):
        fail_start(pool, worker, WorkerStartError(
            f"{worker.describe()} for {pool.describe()} exited with "
            f"{worker.process.describe_exit(code)} before it was ready",
            stderr=worker.stderr_text()))
    if worker.assigned is not None:
        _requeue_or_fail(worker, worker.assigned, code, False, stopping, failed_nodes)
        worker.assigned = None
    if worker.inflight:
        # Calls the worker finished but whose results died with it run again, as do those
        # sent ahead that never started; the one it was running failed it.
        lost = [c for c in worker.inflight if c.call_id in worker.finished]
        pending = [c for c in worker.inflight if c.call_id not in worker.finished]
        if lost:
            logger.warning("%s died before the results of %d finished calls reached the "
                           "session; running them again", worker.describe(), len(lost))
        running = pending.pop(0) if pending else None
        for call in reversed(lost + pending):  # queued before the running call fails:
            pool.queue.appendleft(call)        # its callbacks may submit more
        worker.inflight.clear()
        if running is not None:
            _requeue_or_fail(worker, running, code, True, stopping, failed_nodes)


def fail_start(pool: Pool, worker: WorkerRecord | None, error: BaseException) -> None:
    """A worker could not start: fail the calls that were waiting for it."""
    if worker is not None and worker.assigned is not None:
        call, worker.assigned = worker.assigned, None
        call.future._fail(error)
        call.finish()
    if pool.one_shot:
        return
    pool.failed_starts += 1
    if pool.failed_starts >= MAX_FAILED_STARTS:
        pool.failed_starts = 0
        while pool.queue:
            call = pool.queue.popleft()
            call.future._fail(error)
            call.finish()


def _relaunch(worker: WorkerRecord, code: int | None, stopping: bool) -> bool:
    """A one-shot worker exited before it connected: its call gets a second worker, once
    (an MPI launch or a job step can fail for reasons that do not come back). Block pools
    retry through ``failed_starts`` instead. Whether the call was put back in the queue."""
    call = worker.assigned
    if (call is None or call.relaunched or stopping or call.future.done()
            or not worker.pool.one_shot):
        return False
    call.relaunched = True
    worker.assigned = None
    logger.warning("%s exited with %s before it connected; starting another for %s:\n%s",
                   worker.describe(), worker.process.describe_exit(code), call.describe(),
                   worker.stderr_text().rstrip())
    worker.pool.queue.appendleft(call)
    return True


def _requeue_or_fail(worker: WorkerRecord, call: Call, code: int | None, started: bool,
                     stopping: bool, failed_nodes: Callable[[str], list[str]]) -> None:
    if call.future.done():
        return
    if stopping:
        call.future._fail(RemoteFnError(
            f"the session was shut down while {call.describe()} ran"))
        call.finish()
    elif started and call.retries_left == 0:
        failed = failed_nodes(worker.stderr_text())
        cause = (f"node {', '.join(failed)} failed" if failed else
                 "This can be caused by a segmentation fault, os._exit, a kill signal or the "
                 "worker running out of memory")
        call.future._fail(WorkerDied(
            f"{worker.describe()} died with {worker.process.describe_exit(code)} while "
            f"running {call.describe()}. {cause}.\n{worker.stderr_text()}".rstrip()))
        call.finish()
    else:
        if started:
            call.retries_left -= 1
            logger.warning("%s died with %s; running %s again (%d retries left)",
                           worker.describe(), worker.process.describe_exit(code),
                           call.describe(), call.retries_left)
        worker.pool.queue.appendleft(call)
