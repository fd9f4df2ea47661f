"""The task stream: calls as bars per worker, aggregated once there are many.

Up to :data:`BAR_LIMIT` calls are kept one bar each. Every call is also added to buckets per
worker and time span (at most ``2 * BUCKETS`` spans per worker; when a call falls past the
last span, the spans double in width and merge pairwise), so a run of a million calls costs
a few thousand rectangles, and the same memory, whatever its length. Pure Python: the page
and the live state both read :meth:`TaskStream.columns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Calls drawn one bar each; past this the stream shows buckets.
BAR_LIMIT = 5000
#: Time buckets per worker, at least (and at most twice as many).
BUCKETS = 200
#: Colours of functions, in order of first appearance (red is kept for failures).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94")
FAILED = "#d62728"


@dataclass(slots=True)
class Counts:
    """What happened to the calls of one function."""

    submitted: int = 0
    queued: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    cached: int = 0
    cancelled: int = 0
    busy: float = 0.0  #: seconds its calls ran, all workers together

    @property
    def done(self) -> int:
        return self.finished + self.failed + self.cached + self.cancelled


@dataclass(slots=True)
class _Bucket:
    calls: int = 0
    failed: int = 0
    busy: float = 0.0
    by_function: dict[int, float] = field(default_factory=dict)

    def add(self, function: int, busy: float, calls: int, failed: int) -> None:
        self.calls += calls
        self.failed += failed
        self.busy += busy
        self.by_function[function] = self.by_function.get(function, 0.0) + busy

    def merge(self, other: "_Bucket") -> None:
        self.calls += other.calls
        self.failed += other.failed
        self.busy += other.busy
        for function, busy in other.by_function.items():
            self.by_function[function] = self.by_function.get(function, 0.0) + busy


class TaskStream:
    """Calls that ran, per worker; times are ``time.time()`` seconds, drawn from ``origin``."""

    def __init__(self, origin: float, bar_limit: int = BAR_LIMIT, buckets: int = BUCKETS) -> None:
        self.origin = origin
        self.bar_limit = bar_limit
        self.span_limit = 2 * buckets
        self.functions: dict[str, int] = {}
        self.workers: dict[str, int] = {}
        #: ``(worker, function, start, end, failed, call id)`` while there are few calls.
        self.bars: list[tuple[int, int, float, float, bool, int]] | None = []
        self.width = 0.01  #: seconds per bucket; doubles as the run grows
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        self.calls = 0
        self.end = origin  #: the latest end of a call
        self._drawn = _empty_columns()  #: the columns of the bars drawn so far

    def function_index(self, name: str) -> int:
        index = self.functions.get(name)
        if index is None:
            index = self.functions[name] = len(self.functions)
        return index

    def worker_index(self, name: str) -> int:
        index = self.workers.get(name)
        if index is None:
            index = self.workers[name] = len(self.workers)
        return index

    def add(self, worker: str, function: str, start: float, end: float, failed: bool,
            call_id: int = 0) -> None:
        """A call that ran on ``worker`` from ``start`` to ``end``."""
        w = self.workers.get(worker)
        if w is None:
            w = self.worker_index(worker)
        f = self.functions.get(function)
        if f is None:
            f = self.function_index(function)
        if end < start:
            end = start
        self.calls += 1
        if end > self.end:
            self.end = end
        if self.bars is not None:
            if len(self.bars) < self.bar_limit:
                self.bars.append((w, f, start, end, failed, call_id))
            else:
                self.bars = None
        first = int((start - self.origin) / self.width)
        last = int((end - self.origin) / self.width)
        if first < 0:
            first = 0
            last = max(last, 0)
        while last >= self.span_limit:
            self._widen()
            first, last = first // 2, last // 2
        buckets = self.buckets
        if first == last:  # the common case, written out: it runs for every call
            bucket = buckets.get((w, first))
            if bucket is None:
                bucket = buckets[(w, first)] = _Bucket()
            busy = end - start
            bucket.calls += 1
            bucket.busy += busy
            if failed:
                bucket.failed += 1
            by_function = bucket.by_function
            by_function[f] = by_function.get(f, 0.0) + busy
            return
        for index in range(first, last + 1):  # a long call: its time split over its buckets
            low = max(start, self.origin + index * self.width)
            high = min(end, self.origin + (index + 1) * self.width)
            bucket = buckets.get((w, index))
            if bucket is None:
                bucket = buckets[(w, index)] = _Bucket()
            bucket.add(f, max(0.0, high - low), int(index == first),
                       int(failed and index == first))

    def _widen(self) -> None:
        self.width *= 2
        merged: dict[tuple[int, int], _Bucket] = {}
        for (w, index), bucket in self.buckets.items():
            target = merged.get((w, index // 2))
            if target is None:
                merged[(w, index // 2)] = bucket
            else:
                target.merge(bucket)
        self.buckets = merged

    @property
    def aggregated(self) -> bool:
        """True once there are too many calls to draw one bar each."""
        return self.bars is None

    def columns(self) -> dict[str, list[Any]]:
        """The rectangles to draw: ``worker``, ``start``, ``end`` (seconds from the origin),
        ``color``, ``alpha`` and ``label`` (the hover text)."""
        workers = list(self.workers)
        functions = list(self.functions)
        origin = self.origin
        if self.bars is not None:
            # Bars only grow: the columns of those drawn before are kept, new ones appended.
            out = self._drawn
            for w, f, start, end, failed, call_id in self.bars[len(out["worker"]):]:
                out["worker"].append(workers[w])
                out["start"].append(round(start - origin, 6))
                out["end"].append(round(end - origin, 6))
                out["color"].append(FAILED if failed else color(f))
                out["alpha"].append(1.0)
                state = "failed" if failed else "finished"
                out["label"].append(f"{functions[f]} (call {call_id}) {state} "
                                    f"after {end - start:.3g} s")
            return out
        out = _empty_columns()
        width = self.width
        for (w, index), bucket in sorted(self.buckets.items()):
            if not bucket.calls and not bucket.busy:
                continue
            main = max(bucket.by_function, key=bucket.by_function.__getitem__)
            share = bucket.busy / width
            out["worker"].append(workers[w])
            out["start"].append(round(index * width, 6))
            out["end"].append(round((index + 1) * width, 6))
            out["color"].append(FAILED if bucket.failed else color(main))
            out["alpha"].append(round(min(1.0, 0.2 + 0.8 * share), 3))
            names = ", ".join(functions[f] for f in sorted(
                bucket.by_function, key=bucket.by_function.__getitem__, reverse=True)[:3])
            out["label"].append(f"{bucket.calls} calls ({bucket.failed} failed) of {names}; "
                                f"busy {min(share, 1.0):.0%} of {width:.3g} s")
        return out


def _empty_columns() -> dict[str, list[Any]]:
    return {"worker": [], "start": [], "end": [], "color": [], "alpha": [], "label": []}


def color(function: int) -> str:
    """The colour of the function with index ``function``."""
    return PALETTE[function % len(PALETTE)]
