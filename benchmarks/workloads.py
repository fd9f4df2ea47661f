"""The workloads: W1 throughput, W2 latency, W3 chains, W4 payload, W5 fan-out, and the rows
only remotefn has (startup, non-block calls, queue scaling, a dependency graph, SLURM)."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

import tasks

HERE = os.path.dirname(os.path.abspath(__file__))


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def throughput(system: Any, calls: int) -> float:
    """W1: tasks per second for ``calls`` no-op calls submitted at once."""
    started = time.perf_counter()
    futures = [system.submit(tasks.noop, i) for i in range(calls)]
    concurrent.futures.wait(futures)
    assert futures[-1].result() == calls - 1
    return calls / (time.perf_counter() - started)


def latency(system: Any, calls: int) -> tuple[float, float]:
    """W2: median and p99 of submit-and-wait, in microseconds."""
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        system.submit(tasks.noop, i).result()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def chain(system: Any, links: int) -> float | None:
    """W3: microseconds per link of a chain where each call takes the previous future."""
    if not system.chains:
        return None
    started = time.perf_counter()
    future = system.submit(tasks.increment, 0)
    for _ in range(links - 1):
        future = system.submit(tasks.increment, future)
    assert future.result() == links
    return (time.perf_counter() - started) / links * 1e6


def payload(system: Any, mebibytes: int, repeats: int) -> float:
    """W4: MiB/s of a float64 array sent to ``echo`` and back (array size / round trip)."""
    array = np.random.default_rng(0).random(mebibytes * 2**20 // 8)
    # Warm-up: one full-size call on each of the two workers at once (steady state: buffers,
    # shared memory and page tables that a system keeps are in place, as after any first call).
    concurrent.futures.wait([system.submit(tasks.echo, array) for _ in range(2)])
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        back = system.submit(tasks.echo, array).result()
        samples.append(time.perf_counter() - started)
        assert back.shape == array.shape
    return mebibytes / _median(samples)


def fan_out(system: Any, calls: int, seconds: float, workers: int = 2) -> float:
    """W5: efficiency of ``calls`` busy calls against the ideal ``calls * seconds / workers``."""
    started = time.perf_counter()
    futures = [system.submit(tasks.busy, seconds) for _ in range(calls)]
    concurrent.futures.wait(futures)
    elapsed = time.perf_counter() - started
    return calls * seconds / workers / elapsed


def run_all(system: Any, quick: bool, opened: float) -> dict[str, Any]:
    system.submit(tasks.noop, 0).result()
    results: dict[str, Any] = {"first_result_s": time.perf_counter() - opened}
    reps = 1 if quick else 3
    n = 1000 if quick else 10_000
    throughput(system, 200)
    results["w1_tasks_per_s"] = _median([throughput(system, n) for _ in range(reps)])
    median, p99 = latency(system, 200 if quick else 2000)
    results["w2_median_us"], results["w2_p99_us"] = median, p99
    results["w3_us_per_link"] = chain(system, 100 if quick else 1000)
    results["w4_mib_per_s"] = payload(system, 8 if quick else 64, reps)
    fan_out(system, 20, 0.005)
    results["w5_efficiency"] = _median([fan_out(system, 20 if quick else 200, 0.005)
                                        for _ in range(reps)])
    return results


# -- remotefn only ------------------------------------------------------------------------------


def remotefn_only(quick: bool) -> dict[str, Any]:
    import remotefn
    from remotefn import remote

    results: dict[str, Any] = {}
    started = time.perf_counter()
    with remotefn.session("local", max_cores=2, forward_output=False) as session:
        remote(tasks.noop, block=True, max_workers=2)(1).result()
        results["session_to_first_result_s"] = time.perf_counter() - started

        one_shot = remote(tasks.noop)
        count = 20 if quick else 200
        begun = time.perf_counter()
        concurrent.futures.wait([session.submit(one_shot, i) for i in range(count)])
        results["non_block_calls_per_s"] = count / (time.perf_counter() - begun)

        pooled = remote(tasks.noop, block=True, max_workers=2)
        scaling = {}
        for size in ([1000, 10_000] if quick else [1000, 10_000, 100_000]):
            gc.collect()
            tracemalloc.start()
            gate: concurrent.futures.Future = concurrent.futures.Future()
            futures = [session.submit(pooled, gate) for _ in range(size)]
            queued_bytes = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            begun = time.perf_counter()
            gate.set_result(0)
            concurrent.futures.wait(futures)
            scaling[size] = {"tasks_per_s": size / (time.perf_counter() - begun),
                             "bytes_per_queued_call": queued_bytes / size}
            del futures
        results["queue_scaling"] = scaling

        nodes = 1000 if quick else 10_000
        add = remote(tasks.total, block=True, max_workers=2)
        begun = time.perf_counter()
        layer = [add(i) for i in range(100)]
        made = len(layer)
        while made < nodes:
            layer = [add(layer[i], layer[(i + 1) % len(layer)]) for i in range(len(layer))]
            made += len(layer)
        concurrent.futures.wait(layer)
        results["graph_nodes"] = made
        results["graph_nodes_per_s"] = made / (time.perf_counter() - begun)
    results.update(cache_rows(quick))
    results.update(recording_row(quick))
    results.update(dashboard_row(quick))
    results.update(slurm_row(quick))
    return results


def _session_cpu_per_call(record: str | None, calls: int, dashboard: bool = False) -> float:
    """CPU seconds of this process (the session: caller and hub threads, and the dashboard's
    when it is open) per no-op call. With ``dashboard``, another process asks for the
    dashboard's data as an open page does."""
    import remotefn
    from remotefn import remote

    with remotefn.session("local", max_cores=2, record=record, forward_output=False,
                          dashboard=dashboard) as session:
        viewer = None
        if dashboard:
            viewer = subprocess.Popen([sys.executable, os.path.join(HERE, "viewer.py"),
                                       session.dashboard.url_file], stdout=subprocess.PIPE)
            viewer.stdout.readline()  # the page is open: measure what it costs while open
        try:
            handle = remote(tasks.noop, block=True, max_workers=2)
            concurrent.futures.wait([handle(i) for i in range(1000)])  # workers up, pool known
            begun = time.process_time()
            concurrent.futures.wait([handle(i) for i in range(calls)])
            return (time.process_time() - begun) / calls
        finally:
            if viewer is not None:
                viewer.terminate()
                viewer.wait()


def recording_row(quick: bool) -> dict[str, Any]:
    """The session's CPU per call with the event record written to a file and without, as
    the median of interleaved runs."""
    import tempfile

    calls = 5000 if quick else 20_000
    off, on = [], []
    with tempfile.TemporaryDirectory() as directory:
        for run in range(5):
            path = os.path.join(directory, f"run{run}.jsonl")
            pair = [(off, None), (on, path)] if run % 2 == 0 else [(on, path), (off, None)]
            for samples, record in pair:
                samples.append(_session_cpu_per_call(record, calls))
    return {"session_cpu_us_per_call": _median(off) * 1e6,
            "session_cpu_us_per_call_recording": _median(on) * 1e6}


def dashboard_row(quick: bool) -> dict[str, Any]:
    """The session's CPU per call with its live dashboard open (a page asking for data twice
    a second) and without one, as the median of interleaved runs."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return {}
    calls = 5000 if quick else 20_000
    closed, opened = [], []
    for run in range(5):
        pair = [(closed, False), (opened, True)] if run % 2 == 0 else [(opened, True),
                                                                       (closed, False)]
        for samples, dashboard in pair:
            samples.append(_session_cpu_per_call(None, calls, dashboard))
    return {"session_cpu_us_per_call_dashboard_closed": _median(closed) * 1e6,
            "session_cpu_us_per_call_dashboard_open": _median(opened) * 1e6}


def cache_rows(quick: bool) -> dict[str, Any]:
    """Cache hit overhead for a small result, hashing speed of a large array argument, and the
    cost of a function's code key (its code and the user code it reaches), which a session
    pays once per function."""
    import tempfile

    import remotefn
    from remotefn import cache, remote

    with tempfile.TemporaryDirectory() as directory:
        handle = remote(tasks.noop, block=True)
        with remotefn.session("local", max_cores=2, cache_directory=directory,
                              forward_output=False):
            handle(7).result()
        # A new session: every hit below reads the entry from disk (within one session, a
        # hit whose entry is still being written is answered from memory).
        with remotefn.session("local", max_cores=2, cache_directory=directory,
                              forward_output=False):
            samples = []
            for _ in range(200 if quick else 2000):
                begun = time.perf_counter()
                future = handle(7)
                future.result()
                samples.append(time.perf_counter() - begun)
            assert future.info.from_cache
    size = (2**27 if quick else 2**30) // 8
    array = np.ones(size)
    begun = time.perf_counter()
    cache.call_key(tasks.echo, "echo", (array,), {})
    seconds = time.perf_counter() - begun
    begun = time.perf_counter()
    cache.code_digest(remotefn_only)  # reaches every workload of this module, and tasks
    code_key_seconds = time.perf_counter() - begun
    return {"cache_hit_us": _median(samples) * 1e6,
            "cache_hash_gb_per_s": array.nbytes / seconds / 1e9,
            "cache_hash_bytes": array.nbytes,
            "cache_code_key_ms": code_key_seconds * 1e3}


def slurm_row(quick: bool) -> dict[str, Any]:
    """Non-block calls/s against bare srun steps, steps that import the worker and connect,
    and executorlib's SLURM executor, and block latency, inside a fresh allocation."""
    if shutil.which("salloc") is None or subprocess.run(
            ["sinfo", "-h"], capture_output=True).returncode != 0:
        return {"slurm": "skipped: no SLURM cluster answering"}
    here = os.path.dirname(os.path.abspath(__file__))
    count = 10 if quick else 50
    out = subprocess.run(
        ["salloc", "-n", "2", "-J", "remotefn-bench", os.sys.executable,
         os.path.join(here, "slurm_probe.py"), str(count)],
        capture_output=True, text=True, timeout=600)
    try:
        import json

        return {"slurm": json.loads(out.stdout.strip().splitlines()[-1])}
    except (IndexError, ValueError):
        return {"slurm": f"failed: {out.stderr.strip()[-500:]}"}
