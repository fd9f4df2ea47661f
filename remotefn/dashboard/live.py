"""The dashboard's view of a running session, kept in the dashboard's own thread.

Who writes and who reads::

    any thread --Recorder.emit--> events (a deque: queued, started, worker events)
    hub thread --session's done-callback--> done (a deque of done calls)
    dashboard thread: drain() both into a Tally; data() for each request

Appending to a deque is all the session's threads do; counting, formatting tracebacks and
JSON happen here, at most a few times a second.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections import Counter, deque
from typing import Any, Callable

from ..errors import RemoteTraceback
from .tally import Tally

#: Running calls listed on the page (the longest-running first).
RUNNING_SHOWN = 50


class LiveState:
    """Counts of the session's calls so far; :meth:`data` is what the page draws."""

    def __init__(self, resources: Callable[[], dict[str, Any]],
                 origin: float | None = None) -> None:
        self.resources = resources
        #: ``(ns, kind, call id, worker, detail)`` tuples appended by the session's recorder.
        self.events: deque[tuple[int, str, int, str, str]] = deque()
        #: Done calls, appended by the session: a finished call's CallInfo, else
        #: ``(kind, future)`` (failed, cancelled or cached).
        self.done: deque[Any] = deque()
        self.tally = Tally(origin if origin is not None else time.time())
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        self._stream_json = ("", -1)  # (JSON of the task stream, version)

    def drain(self) -> None:
        """Count what the session appended since the last call."""
        with self._lock:
            done = _take(self.done)
            events = _take(self.events)
            tally = self.tally
            # Calls are counted when queued and when done; which are running, the session
            # says (resources()), so "started" events need no work here.
            for detail, number in Counter([e[4] for e in events if e[1] == "queued"]).items():
                tally.counts(self._name(detail)).submitted += number
            for ns, kind, call_id, worker, detail in events:
                if kind[0] in "wp":  # worker ... and pool ...
                    tally.on(kind, ns / 1e9, call_id, worker, self._name(detail) if detail
                             else "")
            now = time.time()
            ran, finished = tally.ran, tally.finished
            for item in done:
                if type(item) is not tuple:  # a finished call's CallInfo: nearly every call
                    cpu = item.cpu_times
                    finished(item.function, item.worker_id, item.started, item.finished,
                             sum(cpu) if cpu else None, item.peak_memory, item.call_id)
                    continue
                kind, future = item
                info = future.info
                if kind == "failed":
                    ran("failed", info.function, info.finished or now, info.worker_id,
                        info.started, info.finished, info.cpu_time, info.peak_memory,
                        _describe(future.exception(0)), info.call_id)
                else:  # cancelled, or answered from the cache
                    ran(kind, info.function, now, None, None, None)

    def _name(self, detail: str) -> str:
        name = self._names.get(detail)
        if name is None:
            if len(self._names) > 10_000:
                self._names.clear()
            name = self._names[detail] = json.loads(detail)
        return name

    def _running(self, running: list[dict[str, Any]]) -> None:
        """Set each function's running and queued counts from the session's running calls."""
        by_function = Counter(r["call"].rsplit(" (call ", 1)[0] for r in running)
        for name, counts in self.tally.functions.items():
            counts.running = by_function.get(name, 0)
            counts.queued = max(0, counts.submitted - counts.done - counts.running)

    def data(self, stream_version: int | None = None) -> str:
        """The page's data as JSON; the task stream only when it changed since
        ``stream_version``."""
        self.drain()
        now = time.time()
        resources = self.resources()
        with self._lock:
            self._running(resources["running"])
            summary = self.tally.summary(now)
            version = self.tally.stream.calls
            stream_json, cached_version = self._stream_json
            if version != cached_version:
                stream_json = json.dumps(self.tally.stream.columns(), separators=(",", ":"))
                self._stream_json = (stream_json, version)
        nodes: dict[str, dict[str, Any]] = {}
        for worker in resources["workers"]:
            if worker["state"] in ("stopped", "dead", "died"):
                continue
            node = nodes.setdefault(worker["host"] or "(starting)",
                                    {"host": worker["host"] or "(starting)", "in_use": 0,
                                     "workers": 0})
            node["in_use"] += worker["cores"]
            node["workers"] += 1
        running = sorted(({"call": r["call"], "worker": r["worker"], "host": r["host"],
                           "elapsed": now - r["started"] if r["started"] else None}
                          for r in resources["running"]),
                         key=lambda r: -(r["elapsed"] or 0))[:RUNNING_SHOWN]
        head = {"summary": summary, "nodes": sorted(nodes.values(), key=lambda n: n["host"]),
                "running": running, "cores": resources["cores"], "gpus": resources["gpus"],
                "allocation": resources["allocation"], "stream_version": version}
        text = json.dumps(head, separators=(",", ":"), default=str)
        if stream_version == version:
            return text[:-1] + ',"stream":null}'
        return text[:-1] + ',"stream":' + stream_json + "}"


def _take(items: deque) -> list:
    """Everything in ``items`` now, removed from it (other threads may append meanwhile)."""
    pop = items.popleft
    return [pop() for _ in range(len(items))]


def _describe(error: BaseException) -> tuple[str, str]:
    """A failed call's error line and traceback (the remote one, when it ran remotely)."""
    message = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    if isinstance(cause, RemoteTraceback):
        return message, cause.text
    return message, "".join(traceback.format_exception(error))
