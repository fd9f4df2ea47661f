"""The functions the benchmarks run; importable, so every system ships them by reference."""

import time


def noop(i):
    return i


def echo(array):
    return array


def busy(seconds):
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return seconds


def increment(x):
    return x + 1


def total(*values):
    return sum(values)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def stamped_busy(seconds):
    """``busy``, returning where and when it ran: (pid, start, end) in wall-clock seconds."""
    import os

    started = time.time()
    busy(seconds)
    return os.getpid(), started, time.time()
