"""How the session's CPU per call grows with its workers and with its queue.

    python benchmarks/scaling.py [--quick] [--workers 8,64,256] [--runs 5] [--out FILE]
                                 [--trees BEFORE,AFTER]

Workers: a block pool of N real forked workers (oversubscribed on a small machine; they are
idle but for the no-op calls) takes ``calls`` no-op calls submitted at once, then a tenth as
many one at a time (each a wake-up of the hub thread). Queue: 10k and
100k calls wait behind one future, then run on 2 workers. For each, the CPU time of this
process (caller and hub threads, ZeroMQ's) and of the hub thread alone, per call; each
figure is the median of ``runs`` runs, every size once per round, rounds interleaved.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import tasks


def _hub_clock() -> int:
    """The CPU clock of the session's hub thread."""
    hub = next(t for t in threading.enumerate() if t.name == "remotefn-hub")
    return time.pthread_getcpuclockid(hub.ident)  # type: ignore[arg-type]


def _cpu(clock: int) -> tuple[float, float]:
    return time.process_time(), time.clock_gettime(clock)


def _per_call(begun: tuple[float, float], clock: int, calls: int) -> dict[str, float]:
    process, hub = _cpu(clock)
    return {"process_us": (process - begun[0]) / calls * 1e6,
            "hub_us": (hub - begun[1]) / calls * 1e6}


def _start_all(session: Any, handle: Any, workers: int, deadline: float = 120.0) -> None:
    """Keep ``workers`` calls busy until the pool has that many ready workers."""
    until = time.monotonic() + deadline
    while True:
        concurrent.futures.wait([session.submit(handle, 0.05) for _ in range(workers)])
        ready = [w for w in session.resources()["workers"] if w["state"] == "ready"]
        if len(ready) >= workers:
            return
        if time.monotonic() > until:
            raise RuntimeError(f"only {len(ready)} of {workers} workers started")


def with_workers(workers: int, calls: int) -> dict[str, float]:
    """CPU per no-op call with ``workers`` ready block workers."""
    import remotefn
    from remotefn import remote

    with remotefn.session("local", max_cores=workers, forward_output=False) as session:
        nap = remote(tasks.nap, block=True, max_workers=workers)
        _start_all(session, nap, workers)
        noop = nap  # the same pool: nap(0) is a no-op call
        clock = _hub_clock()
        concurrent.futures.wait([session.submit(noop, 0) for _ in range(1000)])
        begun = _cpu(clock)
        futures = [session.submit(noop, 0) for _ in range(calls)]
        concurrent.futures.wait(futures)
        row = _per_call(begun, clock, calls)
        row["workers_used"] = len({f.info.worker_id for f in futures})
        serial = calls // 10  # one call at a time: a wake-up of the hub thread per call
        begun = _cpu(clock)
        for _ in range(serial):
            session.submit(noop, 0).result()
        row.update({"serial_" + key: value for key, value in
                    _per_call(begun, clock, serial).items()})
        return row


def with_queue(size: int) -> dict[str, float]:
    """CPU per no-op call for ``size`` calls queued behind one future, on 2 workers."""
    import remotefn
    from remotefn import remote

    with remotefn.session("local", max_cores=2, forward_output=False):
        noop = remote(tasks.noop, block=True, max_workers=2)
        concurrent.futures.wait([noop(i) for i in range(1000)])
        clock = _hub_clock()
        gate: concurrent.futures.Future = concurrent.futures.Future()
        begun = _cpu(clock)
        futures = [noop(gate) for _ in range(size)]
        gate.set_result(0)
        concurrent.futures.wait(futures)
        return _per_call(begun, clock, size)


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in ("process_us", "hub_us", "serial_process_us", "serial_hub_us"):
        if key not in samples[0]:
            continue
        values = sorted(sample[key] for sample in samples)
        row[key] = statistics.median(values)
        row[key + "_range"] = [values[0], values[-1]]
    row["runs"] = len(samples)
    used = [sample["workers_used"] for sample in samples if "workers_used" in sample]
    if used:
        row["workers_used"] = min(used)
    return row


def _describe(sample: dict[str, float]) -> str:
    text = f"{sample['process_us']:.1f} us/call (hub thread {sample['hub_us']:.1f}"
    if "workers_used" in sample:
        text += f", workers used {sample['workers_used']:.0f}"
    text += ")"
    if "serial_process_us" in sample:
        text += (f"; one at a time {sample['serial_process_us']:.1f} us/call "
                 f"(hub thread {sample['serial_hub_us']:.1f})")
    return text


def _round(workers: list[int], sizes: list[int], calls: int, run: int,
           log: Any) -> dict[tuple[str, int], dict[str, float]]:
    """Every worker count and queue size once, starting where ``run`` says."""
    cases = [("workers", n) for n in workers] + [("queue", n) for n in sizes]
    shift = run % len(cases)
    samples = {}
    for kind, n in cases[shift:] + cases[:shift]:
        sample = with_workers(n, calls) if kind == "workers" else with_queue(n)
        samples[kind, n] = sample
        print(f"run {run + 1} {kind} {n}: {_describe(sample)}", file=log, flush=True)
    return samples


def _round_in(tree: str, workers: list[int], sizes: list[int], calls: int,
              run: int) -> dict[tuple[str, int], dict[str, float]]:
    """:func:`_round` in a fresh interpreter, with remotefn from ``tree``."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath(tree), here])}
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--round", str(run), "--calls", str(calls),
         "--workers", ",".join(map(str, workers)), "--queue", ",".join(map(str, sizes))],
        capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"the round on {tree} failed:\n{out.stderr[-3000:]}")
    sys.stderr.write("".join(f"{tree}: {line}\n" for line in out.stderr.splitlines()))
    return {(kind, int(n)): row for kind, n, row in json.loads(out.stdout)}


def measure(workers: list[int], sizes: list[int], calls: int, runs: int,
            tree: str | None = None, log: Any = sys.stderr) -> dict[str, Any]:
    """``runs`` rounds (see :func:`_round`); with ``tree``, each in a fresh interpreter
    with remotefn from that tree."""
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    for run in range(runs):
        one = (_round(workers, sizes, calls, run, log) if tree is None
               else _round_in(tree, workers, sizes, calls, run))
        for case, sample in one.items():
            samples.setdefault(case, []).append(sample)
    return summarize(samples, workers, sizes, calls)


def summarize(samples: dict[tuple[str, int], list[dict[str, float]]], workers: list[int],
              sizes: list[int], calls: int) -> dict[str, Any]:
    """Medians and ranges per case, and the growth from the smallest to the largest."""
    result: dict[str, Any] = {"calls": calls, "workers": {}, "queue": {}}
    for (kind, n), rows in samples.items():
        result[kind][str(n)] = _summary(rows)
    for kind, sizes_ in (("workers", workers), ("queue", sizes)):
        if len(sizes_) > 1:
            table = result[kind]
            first, last = table[str(sizes_[0])], table[str(sizes_[-1])]
            result[kind + "_growth"] = last["process_us"] / first["process_us"]
            if "serial_process_us" in first:
                result[kind + "_growth_serial"] = (last["serial_process_us"]
                                                   / first["serial_process_us"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--workers", default=None, help="worker counts, comma-separated")
    parser.add_argument("--queue", default=None, help="queue sizes, comma-separated")
    parser.add_argument("--calls", type=int, default=None, help="calls per worker-count run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--trees", default=None,
                        help="remotefn source trees, comma-separated: rounds alternate "
                             "between them, each in a fresh interpreter; the results are "
                             "written per tree")
    parser.add_argument("--round", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workers = [int(n) for n in (args.workers or ("8,16" if args.quick else "8,64,256"))
               .split(",")]
    sizes = [int(n) for n in (args.queue or ("10000" if args.quick else "10000,100000"))
             .split(",")]
    calls = args.calls or (2000 if args.quick else 20_000)
    runs = args.runs or (1 if args.quick else 5)
    if args.round is not None:  # one round for --trees, printed raw
        one = _round(workers, sizes, calls, args.round, sys.stderr)
        print(json.dumps([[kind, n, row] for (kind, n), row in one.items()]))
        return 0
    if args.trees:
        trees = args.trees.split(",")
        samples: dict[str, dict[tuple[str, int], list[dict[str, float]]]] = {
            tree: {} for tree in trees}
        for run in range(runs):
            for tree in trees if run % 2 == 0 else trees[::-1]:
                for case, row in _round_in(tree, workers, sizes, calls, run).items():
                    samples[tree].setdefault(case, []).append(row)
        result = {"trees": {tree: summarize(samples[tree], workers, sizes, calls)
                            for tree in trees}}
    else:
        result = measure(workers, sizes, calls, runs)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
