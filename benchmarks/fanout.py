"""Where W5's time goes: each call stamps its start and end in the worker, so the idle time of
every worker is measured where it happens (before its first call, between calls, after its
last), per system; plus what waking a sleeping process costs on this machine.

``python fanout.py [--runs 30] [--systems remotefn,processpool]``: each system in a fresh
interpreter, the systems alternating; prints the medians and ranges over the fan-outs.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import tasks
from systems import SYSTEMS

CALLS, SECONDS, WORKERS = 200, 0.005, 2


def fan_out(system) -> dict[str, float]:
    """One W5 fan-out; idle times summed over the workers, in milliseconds."""
    begun = time.time()
    futures = [system.submit(tasks.stamped_busy, SECONDS) for _ in range(CALLS)]
    concurrent.futures.wait(futures)
    ended = time.time()
    calls = collections.defaultdict(list)
    for pid, start, end in (future.result() for future in futures):
        calls[pid].append((start, end))
    for spans in calls.values():
        spans.sort()
    return {
        "efficiency": CALLS * SECONDS / WORKERS / (ended - begun),
        "before_first": 1e3 * sum(spans[0][0] - begun for spans in calls.values()),
        "between": 1e3 * sum(b[0] - a[1] for spans in calls.values()
                             for a, b in zip(spans, spans[1:])),
        "after_last": 1e3 * sum(ended - spans[-1][1] for spans in calls.values()),
    }


def one_system(name: str, runs: int) -> list[dict[str, float]]:
    system = SYSTEMS[name]()
    system.open()
    try:
        fan_out(system)  # warm-up: every worker started
        return [fan_out(system) for _ in range(runs)]
    finally:
        system.close()


def wake_up_cost(round_trips: int = 3000) -> float:
    """Median round trip, in microseconds, of 200 bytes between two processes over a socket
    pair, both sleeping in ``recv`` between messages: twice the cost of a wake-up."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        while data := theirs.recv(4096):
            theirs.send(data)
        os._exit(0)
    theirs.close()
    samples = []
    for _ in range(round_trips):
        started = time.perf_counter()
        ours.send(b"x" * 200)
        ours.recv(4096)
        samples.append(time.perf_counter() - started)
        pause = time.perf_counter() + 0.0003  # the other side goes back to sleep
        while time.perf_counter() < pause:
            pass
    ours.close()
    os.waitpid(pid, 0)
    return statistics.median(samples) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30, help="fan-outs per system")
    parser.add_argument("--systems", default="remotefn,processpool")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: one system, JSON out
    args = parser.parse_args()
    if args.one:
        json.dump(one_system(args.one, args.runs), sys.stdout)
        return 0
    print(f"socket-pair round trip, both sides sleeping: {wake_up_cost():.0f} us")
    for name in args.systems.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", name, "--runs", str(args.runs)],
                             check=True, capture_output=True, text=True).stdout
        rows = json.loads(out)
        cells = []
        for key in ("efficiency", "before_first", "between", "after_last"):
            values = [row[key] for row in rows]
            scale, unit = (100, "%") if key == "efficiency" else (1, " ms")
            cells.append(f"{key} {statistics.median(values) * scale:.2f}{unit} "
                         f"({min(values) * scale:.2f}-{max(values) * scale:.2f})")
        print(f"{name}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
