"""The event record: what happened to calls and workers, and when.

Every event is a tuple ``(time, kind, call id, worker id, detail)`` appended to a bounded
in-memory record (``session.events()``) and, when the session was opened with
``record=PATH``, to that file as JSON lines, written in batches::

    {"t": 1764486000.123456, "event": "finished", "call": 12, "worker": "w0-1a2b3c4d"}

Call events: queued, started (handed to a worker), finished, failed, cancelled, and cached
(answered from the cache or by an identical call in flight, instead of queued and finished).
Worker events: worker started, worker ready, worker stopped, worker died; pool grown and pool
shrunk (block pools, with their new size). Appending is one tuple and one deque append, from
any thread; a batch is pickled to a child process that formats and writes it (:mod:`.recordfile`).
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections import deque
from typing import Any, Iterator

from .recordfile import Writer

#: Events the in-memory record keeps (the oldest are dropped first).
LIMIT = 100_000
#: Events written to the record file at a time.
BATCH = 4096

#: ``(time in ns, kind, call id, worker id, detail as a JSON string or "")``.
Event = tuple[int, str, int, str, str]


KINDS = ("queued", "started", "finished", "failed", "cancelled", "cached", "worker started",
         "worker ready", "worker stopped", "worker died", "pool grown", "pool shrunk")
_UNTAPPED = frozenset(("started", "finished", "failed", "cancelled", "cached"))


class Recorder:
    """The session's event record; :meth:`emit` may be called from any thread."""

    def __init__(self, path: str | os.PathLike | None = None, limit: int = LIMIT) -> None:
        self.recent: deque[Event] = deque(maxlen=limit)
        self.path = os.fspath(path) if path is not None else None
        self._pending: deque[Event] = deque()
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8") if self.path else None
        #: Formats and writes the file in a child process (see :mod:`.recordfile`).
        self._writer = Writer(self._file.fileno()) if self._file is not None else None
        self._quoted: dict[str, str] = {}
        #: Where else events go as they happen (the live dashboard's queue): all but a call's
        #: start and end, which it learns from the session's futures.
        self.tap: deque[Event] | None = None

    def emit(self, kind: str, call_id: int = 0, worker: str = "", detail: str = "") -> None:
        """Record an event of ``kind`` (one of :data:`KINDS`)."""
        if detail:
            quoted = self._quoted.get(detail)
            if quoted is None:
                if len(self._quoted) > 10_000:
                    self._quoted.clear()
                quoted = self._quoted[detail] = json.dumps(detail)
            detail = quoted
        event = (time.time_ns(), kind, call_id, worker, detail)
        self.recent.append(event)
        tap = self.tap
        if tap is not None and kind not in _UNTAPPED:
            tap.append(event)
        if self._writer is not None:
            self._pending.append(event)
            if len(self._pending) >= BATCH:
                with self._lock:
                    self._send()

    def events(self) -> list[dict[str, Any]]:
        """The events still in memory, oldest first, as dicts."""
        return [self._as_dict(event) for event in list(self.recent)]

    def flush(self) -> None:
        """Return once every event so far is in the record file."""
        with self._lock:
            if self._send():
                try:
                    self._writer.sync()  # type: ignore[union-attr]
                except OSError as error:
                    self._lost(error)

    def close(self) -> None:
        """Write what is left, end the file's writer and close the file."""
        with self._lock:
            self._send()
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
            if self._file is not None:
                self._file.close()
                self._file = None

    def _send(self) -> bool:
        """Hand the pending events to the file's writer (holding the lock); False when there
        is no writer (any more)."""
        if self._writer is None:
            return False
        events = list(_drain(self._pending))
        if events:
            try:
                self._writer.send(events)
            except OSError as error:
                self._lost(error)
                return False
        return True

    def _lost(self, error: OSError) -> None:
        writer, self._writer = self._writer, None
        self._pending.clear()
        if writer is not None:
            writer.close(timeout=1.0)
        warnings.warn(f"remotefn: the event record {self.path} stopped being written: "
                      f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)

    @staticmethod
    def _as_dict(event: Event) -> dict[str, Any]:
        ns, kind, call_id, worker, detail = event
        entry: dict[str, Any] = {"t": ns / 1e9, "event": kind}
        if call_id:
            entry["call"] = call_id
        if worker:
            entry["worker"] = worker
        if detail:
            entry["detail"] = json.loads(detail)
        return entry


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
