"""The Flux row: remotefn's flux backend against flux-python's own FluxExecutor, in one run.

Runs inside a Flux instance (`make bench` starts one through scripts/in-flux.sh):

    python benchmarks/flux_bench.py [--out FILE]

Ceilings: FluxExecutor running bare `python -c pass` jobs, and jobs that only import the
remotefn worker and connect to a ZeroMQ socket (what any Python worker must do). remotefn:
non-block calls (a job each) one after another and 50 at once, the block-call round trip,
and the time from a rank's death to its call failing. 50 at once is measured PAIRED times,
each right after the ceiling's 50 at once, so that both see the same load on a shared host;
the rates are medians, the ratio the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import zmq
from flux.job import FluxExecutor, JobspecV1

import remotefn
from remotefn import WorkerDied, remote

SEQUENTIAL = 10
CONCURRENT = 50
PAIRED = 3


def noop():
    return None


def rank_dies(stamp):
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        with open(stamp, "w") as file:
            file.write(repr(time.time()))
        os._exit(3)
    time.sleep(600)


def executor_rate(command, environment, count, at_once):
    """Jobs per second of FluxExecutor running ``command``, ``count`` jobs, ``at_once`` in
    flight."""
    with FluxExecutor(poll_interval=0.01) as executor:  # as the flux backend polls
        started = time.perf_counter()
        done = 0
        while done < count:
            batch = []
            for _ in range(min(at_once, count - done)):
                spec = JobspecV1.from_command(command)
                spec.cwd, spec.environment = os.getcwd(), environment
                batch.append(executor.submit(spec))
            for future in batch:
                assert future.result() == 0
            done += len(batch)
        return count / (time.perf_counter() - started)


def import_and_connect(count, at_once):
    """The ceiling of a Python worker: import remotefn's worker, connect, say hello."""
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    code = ("import remotefn.worker.loop, zmq, sys; s = zmq.Context().socket(zmq.DEALER); "
            "s.setsockopt(zmq.LINGER, 1000); s.connect(sys.argv[1]); s.send(b'hello'); s.close()")
    try:
        return executor_rate([sys.executable, "-c", code, f"tcp://127.0.0.1:{port}"],
                             dict(os.environ), count, at_once)
    finally:
        router.close(0)


def remotefn_rate(count, at_once):
    started = time.perf_counter()
    done = 0
    while done < count:
        batch = [remote(noop)() for _ in range(min(at_once, count - done))]
        for future in batch:
            future.result(timeout=600)
        done += len(batch)
    return count / (time.perf_counter() - started)


def block_round_trip_us(count=300):
    handle = remote(noop, block=True, max_workers=1)
    handle().result(timeout=600)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        handle().result(timeout=60)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def rank_death_to_failure_s():
    with tempfile.TemporaryDirectory() as folder:
        stamp = os.path.join(folder, "died")
        future = remote(rank_dies, cores=2)(stamp)
        try:
            future.result(timeout=600)
        except WorkerDied:
            failed = time.time()
        with open(stamp) as file:
            return failed - float(file.read())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    bare = [sys.executable, "-c", "pass"]
    results = {
        "flux_executor_pass_seq_per_s": executor_rate(bare, dict(os.environ), SEQUENTIAL, 1),
        "flux_executor_pass_50_per_s": executor_rate(bare, dict(os.environ), CONCURRENT,
                                                     CONCURRENT),
        "import_connect_seq_per_s": import_and_connect(SEQUENTIAL, 1),
    }
    ceiling, ours = [], []
    with remotefn.session("flux", forward_output=False):
        remotefn_rate(2, 1)  # warm: the first job of a session
        results["remotefn_seq_per_s"] = remotefn_rate(SEQUENTIAL, 1)
        for _ in range(PAIRED):
            ceiling.append(import_and_connect(CONCURRENT, CONCURRENT))
            ours.append(remotefn_rate(CONCURRENT, CONCURRENT))
        results["block_round_trip_us"] = block_round_trip_us()
        results["rank_death_to_failure_s"] = rank_death_to_failure_s()
    results["import_connect_50_per_s"] = statistics.median(ceiling)
    results["remotefn_50_per_s"] = statistics.median(ours)
    ratio = statistics.median(mine / top for mine, top in zip(ours, ceiling))
    results["remotefn_50_vs_ceiling"] = ratio
    for key, value in results.items():
        print(f"{key:32s} {value:12.3f}")
    print(f"goal 50 at once >= 0.9x import-and-connect: {ratio:.2f}x "
          f"{'met' if ratio >= 0.9 else 'NOT met'}")
    rtt = results["block_round_trip_us"]
    print(f"goal block round trip < 1 ms: {rtt:.0f} us {'met' if rtt < 1000 else 'NOT met'}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
