"""The event record: what happened to calls and workers, and when.

Every event is a tuple ``(time, kind, call id, worker id, detail)`` appended to a bounded
in-memory record (``session.events()``) and, when the session was opened with
``record=PATH``, to that file as JSON lines, written in batches::

    {"t": 1764486000.123456, "event": "finished", "call": 12, "worker": "w0-1a2b3c4d"}

Call events: queued, started (handed to a worker), finished, failed, cancelled, and cached
(answered from the cache or by an identical call in flight, instead of queued and finished).
Worker events: worker started, worker ready, worker stopped, worker died; pool grown and pool
shrunk (block pools, with their new size). Appending is one tuple and one deque append, from
any thread; formatting happens when a batch is written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from typing import Any, Iterator

#: Events the in-memory record keeps (the oldest are dropped first).
LIMIT = 100_000
#: Events written to the record file at a time.
BATCH = 4096

Event = tuple[float, str, int, str, str]


class Recorder:
    """The session's event record; :meth:`emit` may be called from any thread."""

    def __init__(self, path: str | os.PathLike | None = None, limit: int = LIMIT) -> None:
        self.recent: deque[Event] = deque(maxlen=limit)
        self.path = os.fspath(path) if path is not None else None
        self._pending: deque[Event] = deque()
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8") if self.path else None
        self._names: dict[str, str] = {}

    def emit(self, kind: str, call_id: int = 0, worker: str = "", detail: str = "") -> None:
        event = (time.time(), kind, call_id, worker, detail)
        self.recent.append(event)
        if self._file is not None:
            self._pending.append(event)
            if len(self._pending) >= BATCH:
                self.flush()

    def events(self) -> list[dict[str, Any]]:
        """The events still in memory, oldest first, as dicts."""
        return [self._as_dict(event) for event in list(self.recent)]

    def flush(self) -> None:
        """Write the events not yet in the record file."""
        if self._file is None:
            return
        with self._lock:
            lines = [self._line(event) for event in _drain(self._pending)]
            if lines:
                self._file.write("".join(lines))
                self._file.flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @staticmethod
    def _as_dict(event: Event) -> dict[str, Any]:
        when, kind, call_id, worker, detail = event
        entry: dict[str, Any] = {"t": when, "event": kind}
        if call_id:
            entry["call"] = call_id
        if worker:
            entry["worker"] = worker
        if detail:
            entry["detail"] = detail
        return entry

    def _line(self, event: Event) -> str:
        when, kind, call_id, worker, detail = event
        line = '{"t": %.6f, "event": "%s"' % (when, kind)
        if call_id:
            line += ', "call": %d' % call_id
        if worker:
            line += ', "worker": "%s"' % worker  # worker ids are [a-z0-9-]
        if detail:
            quoted = self._names.get(detail)
            if quoted is None:
                quoted = self._names[detail] = json.dumps(detail)
                if len(self._names) > 10_000:
                    self._names.clear()
            line += ', "detail": ' + quoted
        return line + "}\n"


def _drain(events: deque[Event]) -> Iterator[Event]:
    while True:
        try:
            yield events.popleft()
        except IndexError:
            return


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a record file, oldest first."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
