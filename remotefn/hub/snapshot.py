"""What a live session reports about itself: ``session.resources()`` (the ledger, the workers
and what they run, the queue) and, with its pools and process, ``python -m remotefn status``.

Plain reads of the hub's records, built in the hub thread or under the hub's lock.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Collection, Iterable

from ..backends import Backend
from .ledger import Ledger
from .records import Pool, State, WorkerRecord

#: Queued calls listed per pool.
LISTED = 100


def resources(ledger: Ledger, workers: Collection[WorkerRecord],
              pools: Iterable[Pool]) -> dict[str, Any]:
    """The ledger's counts, the workers and the calls they run, and the queued calls."""
    described, running = [], []
    for worker in list(workers):
        share = worker.share
        launched = worker.process.describe()
        state = worker.state.value
        if worker.state is State.STARTING:
            held = worker.process.held()
            if held is not None:
                state, launched = "pending", {**launched, "reason": held}
        described.append({"worker": worker.worker_id, "host": worker.host, "pid": worker.pid,
                          "state": state, "pool": worker.pool.describe(),
                          "cores": share.cpus if share else 0,
                          "gpus": list(share.gpu_ids) if share else [],
                          **launched})
        for call in list(worker.inflight)[:1]:
            running.append({"call": call.describe(), "worker": worker.worker_id,
                            "host": worker.host, "started": call.future.info.started,
                            **launched})
    return {**ledger.report(), "workers": described, "running": running,
            "queued": queued(ledger, workers, pools)}


def queued(ledger: Ledger, workers: Collection[WorkerRecord],
           pools: Iterable[Pool]) -> list[dict[str, Any]]:
    """The first LISTED queued calls of each pool, each with why it waits, and the one-shot
    calls whose worker is starting."""
    listed: list[dict[str, Any]] = []
    for pool in list(pools):
        calls = list(pool.queue)[:LISTED]
        if not calls:
            continue
        reason = ledger.why_waiting(pool.demand)
        if reason is None or not pool.one_shot and len(pool.workers) >= pool.limit:
            reason = ("waiting for a worker of its pool" if pool.workers
                      else "waiting for a worker to start")
        listed.extend({"call": call.describe(), "pool": pool.describe(),
                       "queued": call.future.info.queued, "reason": reason}
                      for call in calls)
    for worker in list(workers):
        call = worker.assigned
        if call is not None and worker.state is State.STARTING:
            reason = worker.process.held() or "waiting for its worker to start"
            listed.append({"call": call.describe(), "pool": worker.pool.describe(),
                           "queued": call.future.info.queued, "reason": reason,
                           "worker": worker.worker_id})
    return listed


def status(backend: Backend, ledger: Ledger, workers: Collection[WorkerRecord],
           pools: Collection[Pool]) -> dict[str, Any]:
    """What ``python -m remotefn status`` shows: :func:`resources`, the pools, this process,
    and among the queued calls also those handed to a worker behind the one it runs."""
    report = resources(ledger, workers, pools)
    for worker in workers:
        report["queued"].extend({"call": call.describe(), "queued": call.future.info.queued,
                                 "worker": worker.worker_id}
                                for call in list(worker.inflight)[1:])
    return {"pid": os.getpid(), "argv": sys.argv, "time": time.time(),
            "backend": backend.name, "allocation": backend.describe(), **report,
            "pools": [{"pool": pool.describe(), "workers": len(pool.workers),
                       "queued": len(pool.queue)} for pool in pools]}
