"""A soak: many calls and dependency chains through one block pool leave the session's memory
flat, measured as the resident size of the calling process between rounds."""

from __future__ import annotations

import gc
import os
import time

import pytest

import remotefn
from remotefn import remote

CALLS = 100_000
CHAINS = 1_000
LINKS = 10


def increment(x):
    return x + 1


def rss() -> int:
    """The resident size of this process, in bytes (from /proc/self/statm)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_round(handle, calls: int = CALLS, chains: int = CHAINS) -> float:
    """``calls`` calls by map and ``chains`` chains of LINKS calls each, all checked; its
    seconds."""
    started = time.monotonic()
    futures = handle.map(range(calls))
    ends = []
    for start in range(chains):
        future = handle(start)
        for _ in range(LINKS - 1):
            future = handle(future)
        ends.append(future)
    assert [f.result(timeout=600) for f in futures] == list(range(1, calls + 1))
    assert [f.result(timeout=600) for f in ends] == [s + LINKS for s in range(chains)]
    del futures, ends, future
    gc.collect()
    return time.monotonic() - started


@pytest.mark.timeout(900)  # a liveness limit: about 30 s here, more on a loaded machine
def test_memory_stays_flat_over_rounds_of_calls_and_chains():
    """A warm-up round, then two rounds: the resident size after the second is within 10% of
    the size after the first."""
    with remotefn.session("local", max_cores=2, forward_output=False):
        handle = remote(increment, block=True, max_workers=2)
        one_round(handle, CALLS // 10, CHAINS // 10)  # warm-up: imports, pools, caches
        timings = [one_round(handle)]
        first = rss()
        timings.append(one_round(handle))
        second = rss()
    print(f"soak: rounds of {CALLS} calls and {CHAINS} chains of {LINKS} took "
          f"{', '.join(f'{t:.1f} s' for t in timings)}; RSS {first >> 20} MiB after the first, "
          f"{second >> 20} MiB after the second")
    assert second <= first * 1.10, (first, second)
