"""What a run did, counted as it goes: per function, per worker, and the task stream.

Fed the calls' and workers' events one at a time (from a record file, or live from a
session), it holds only the calls not yet done, so a record of a million calls is read in
constant memory apart from them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .stream import Counts, TaskStream

#: Errors kept (the latest).
ERRORS_KEPT = 50
_DONE = ("finished", "failed", "cancelled", "cached")


@dataclass(slots=True)
class WorkerStats:
    """One worker: where it ran, what it ran and what that used."""

    host: str = ""
    pool: str = ""
    state: str = "starting"
    calls: int = 0
    failed: int = 0
    busy: float = 0.0
    cpu: float | None = None  #: CPU seconds of its calls, when known
    peak_memory: int | None = None  #: the largest rise of its memory in a call, when measured
    since: float = 0.0
    free_at: float = 0.0  #: when its latest call ended


@dataclass(slots=True)
class Error:
    """A failed call (or a worker that died), with the remote traceback when there is one."""

    time: float
    function: str
    call_id: int
    worker: str
    message: str
    traceback: str = ""


class Tally:
    """Counts of a run; :meth:`event` takes the event record's entries in order."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.last = origin  #: the time of the latest event
        self.stream = TaskStream(origin)
        self.functions: dict[str, Counts] = {}
        self.workers: dict[str, WorkerStats] = {}
        self.errors: deque[Error] = deque(maxlen=ERRORS_KEPT)
        #: call id -> [function, started or None, worker], for calls not yet done
        self.pending: dict[int, list[Any]] = {}

    def counts(self, function: str) -> Counts:
        counts = self.functions.get(function)
        if counts is None:
            counts = self.functions[function] = Counts()
        return counts

    def worker(self, worker: str) -> WorkerStats:
        stats = self.workers.get(worker)
        if stats is None:
            stats = self.workers[worker] = WorkerStats(since=self.last)
        return stats

    def event(self, entry: dict[str, Any]) -> None:
        """One entry of the event record (``{"t", "event", "call", "worker", "detail"}``)."""
        self.on(entry["event"], entry["t"], entry.get("call", 0), entry.get("worker", ""),
                entry.get("detail", ""))

    def on(self, kind: str, t: float, call_id: int, worker: str, detail: Any) -> None:
        """An event of ``kind`` at ``t``; done calls run from their ``started`` event to
        ``t``."""
        self.last = max(self.last, t)
        if kind == "queued":
            self.queued(call_id, detail)
        elif kind == "started":
            self.started(call_id, worker, t)
        elif kind in _DONE:
            self.done(call_id, kind, t, worker)
        elif kind.startswith("worker"):
            stats = self.worker(worker)
            state = kind.split()[1]
            if state == "started":
                stats.pool, stats.since = str(detail), t
            elif state == "ready":
                stats.host = str(detail)
            elif state == "died":
                self.errors.append(Error(t, "", 0, worker, f"worker died: {detail}"))
            stats.state = state

    def queued(self, call_id: int, function: str) -> None:
        counts = self.counts(function)
        counts.submitted += 1
        counts.queued += 1
        self.pending[call_id] = [function, None, ""]

    def started(self, call_id: int, worker: str, t: float) -> None:
        entry = self.pending.get(call_id)
        if entry is None or entry[1] is not None:
            return
        entry[1], entry[2] = t, worker
        counts = self.counts(entry[0])
        counts.queued -= 1
        counts.running += 1

    def done(self, call_id: int, kind: str, t: float, worker: str = "") -> None:
        """A call's last event (``kind`` finished, failed, cancelled or cached) at ``t``."""
        entry = self.pending.pop(call_id, None)
        if entry is None:
            self.counts("?").submitted += 1  # never queued: cached, or a dependency failed
            self.ran(kind, "?", t, worker, None, None, call_id=call_id)
            return
        function, start, where = entry
        counts = self.counts(function)
        if start is None:
            counts.queued -= 1
        else:
            counts.running -= 1
        self.ran(kind, function, t, worker or where, start, None, call_id=call_id)

    def ran(self, kind: str, function: str, t: float, worker: str | None, start: float | None,
            end: float | None, cpu: float | None = None, memory: int | None = None,
            error: tuple[str, str] | None = None, call_id: int = 0) -> None:
        """Count a done call (``kind`` finished, failed, cancelled or cached) that ran on
        ``worker`` from ``start`` to ``end`` (or ``t``), if it ran at all."""
        counts = self.counts(function)
        if kind == "cached":
            counts.cached += 1
            return
        if kind == "cancelled":
            counts.cancelled += 1
            return
        failed = kind == "failed"
        if failed:
            counts.failed += 1
            message, text = error if error is not None else ("failed", "")
            self.errors.append(Error(t, function, call_id, worker or "", message, text))
        else:
            counts.finished += 1
        if start is None or not worker:
            return  # it never ran (a dependency failed, say)
        end = end if end is not None else t
        stats = self.workers.get(worker) or self.worker(worker)
        # A worker runs one call at a time: one handed to it early starts when the last ends.
        if start < stats.free_at:
            start = min(stats.free_at, end)
        if end > stats.free_at:
            stats.free_at = end
        busy = end - start if end > start else 0.0
        counts.busy += busy
        stats.calls += 1
        stats.busy += busy
        if failed:
            stats.failed += 1
        if cpu is not None:
            stats.cpu = (stats.cpu or 0.0) + cpu
        if memory is not None:
            stats.peak_memory = max(stats.peak_memory or 0, memory)
        self.stream.add(worker, function, start, end, failed, call_id)

    def finished(self, function: str, worker: str | None, start: float | None,
                 end: float | None, cpu: float | None, memory: int | None,
                 call_id: int) -> None:
        """:meth:`ran` for a call that succeeded, written out: the dashboard calls it for
        nearly every call."""
        counts = self.functions.get(function) or self.counts(function)
        counts.finished += 1
        if start is None or end is None or not worker:
            return
        stats = self.workers.get(worker) or self.worker(worker)
        if start < stats.free_at:  # see ran()
            start = stats.free_at if stats.free_at < end else end
        if end > stats.free_at:
            stats.free_at = end
        busy = end - start
        counts.busy += busy
        stats.calls += 1
        stats.busy += busy
        if cpu is not None:
            stats.cpu = (stats.cpu or 0.0) + cpu
        if memory is not None and memory > (stats.peak_memory or 0):
            stats.peak_memory = memory
        self.stream.add(worker, function, start, end, False, call_id)

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Plain data for the page: per function, per worker, the errors, the run's span."""
        now = now if now is not None else self.last
        wall = max(now - self.origin, 1e-9)
        functions = []
        for name, c in self.functions.items():
            ran = c.finished + c.failed
            functions.append({"function": name, "submitted": c.submitted, "queued": c.queued,
                              "running": c.running, "finished": c.finished,
                              "failed": c.failed, "cached": c.cached,
                              "cancelled": c.cancelled, "done": c.done,
                              "busy": round(c.busy, 3),
                              "mean": round(c.busy / ran, 6) if ran else None})
        workers = []
        for name, s in self.workers.items():
            alive = max((now if s.state not in ("stopped", "died") else self.last) - s.since,
                        1e-9)
            workers.append({"worker": name, "host": s.host, "pool": s.pool, "state": s.state,
                            "calls": s.calls, "failed": s.failed, "busy": round(s.busy, 3),
                            "utilisation": round(min(s.busy / alive, 1.0), 3),
                            "cpu": round(s.cpu, 3) if s.cpu is not None else None,
                            "peak_memory": s.peak_memory})
        errors = [{"time": round(e.time - self.origin, 3), "function": e.function,
                   "call": e.call_id, "worker": e.worker, "message": e.message,
                   "traceback": e.traceback} for e in reversed(self.errors)]
        return {"origin": self.origin, "wall": round(wall, 3), "calls": self.stream.calls,
                "aggregated": self.stream.aggregated,
                "bucket": self.stream.width if self.stream.aggregated else None,
                "functions": functions, "workers": workers, "errors": errors}
