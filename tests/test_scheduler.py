"""The scheduler's decisions, without processes: how many calls a block worker is handed.

The scheduler decides and sends nothing (see remotefn/hub/scheduler.py), so its choices are
checked here on records alone; test_workers.py checks the same limits on live workers.
"""

from __future__ import annotations

import types

import pytest

from remotefn.backends import Capacity
from remotefn.future import CallInfo, RemoteFuture
from remotefn.hub.ledger import Ledger
from remotefn.hub.records import Call, State, WorkerRecord
from remotefn.hub.scheduler import Scheduler
from remotefn.options import resolve
from remotefn.protocol.shipping import FunctionRef

OPTIONS = resolve({"block": True, "max_workers": 4})
FUNCTION = FunctionRef(b"d" * 32, b"", "f")


def scheduler_with(ready: int, queued: int, runtime: float | None):
    """A scheduler whose one block pool has ``ready`` idle workers (each with a status
    pipe), ``queued`` calls and recent calls of ``runtime`` seconds."""
    scheduler = Scheduler(Capacity(cpus=8), Ledger(Capacity(cpus=8)))
    calls = [Call(i, RemoteFuture(CallInfo("f", i, 0.0)), FUNCTION, [], OPTIONS)
             for i in range(1, queued + 1)]
    for call in calls:
        scheduler.enqueue(call)
    pool = scheduler.pool_for(OPTIONS, create=False)
    pool.runtime = runtime
    for i in range(ready):
        process = types.SimpleNamespace(pid=1000 + i, status_fd=3, connection=None)
        worker = WorkerRecord(f"w{i}", pool, process, b"k" * 32, None)
        worker.state = State.READY
        pool.workers.add(worker)
    return scheduler, pool


def handed(scheduler) -> list[int]:
    """How many calls each worker is handed in one round, most first."""
    return sorted((len(calls) for _, calls in scheduler.hand_out()), reverse=True)


@pytest.mark.parametrize("runtime", [None, 0.001, 0.1], ids=["unknown", "1 ms", "100 ms"])
def test_a_worker_of_long_calls_is_handed_the_call_it_runs_and_two_ahead(runtime):
    scheduler, pool = scheduler_with(ready=1, queued=10, runtime=runtime)
    assert handed(scheduler) == [3]
    assert len(pool.queue) == 7


@pytest.mark.parametrize("runtime, batch", [(0.00001, 32), (0.0001, 20), (0.0005, 4)])
def test_a_worker_of_short_calls_is_handed_about_2_ms_of_them_and_never_more_than_32(
        runtime, batch):
    """Calls under about 0.7 ms: a worker gets up to 32 calls, about 2 ms of work."""
    scheduler, _ = scheduler_with(ready=1, queued=100, runtime=runtime)
    assert handed(scheduler) == [batch]


def test_a_worker_is_never_handed_more_than_its_fair_share_of_the_queue():
    scheduler, pool = scheduler_with(ready=2, queued=20, runtime=0.00001)
    assert handed(scheduler) == [10, 10]
    assert not pool.queue
    scheduler, _ = scheduler_with(ready=4, queued=6, runtime=0.00001)
    assert handed(scheduler) == [2, 2, 2]
