"""Run inside salloc -n 2: in one run, N no-op calls as

- bare ``srun`` steps of ``python -c pass``;
- steps that import the worker and connect to a socket, as a worker must (the ceiling any
  Python worker can reach);
- remotefn's non-block calls (one step each);
- executorlib's ``SlurmJobExecutor`` (one step each; skipped where executorlib is missing);

all two at a time, in interleaved rounds (the median round of each counts), and remotefn's
block-call latency. Prints one JSON line.
"""

import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable

import remotefn
import tasks
from remotefn import remote
from remotefn.backends.addresses import reachable_address

count = int(sys.argv[1])
ROUNDS = 5
python = sys.executable
job = os.environ["SLURM_JOB_ID"]
#: What remotefn's own steps pass too, so that the comparison is of the same steps.
SRUN = ["srun", f"--jobid={job}", "--exact", "-n1", "-c1", "--mpi=none", "--gres=none",
        "--quiet"]


def rate(run: Callable[[int], object], calls: int) -> float:
    """Calls per second of ``run(calls)``."""
    started = time.perf_counter()
    run(calls)
    return calls / (time.perf_counter() - started)


def steps(code: str, calls: int) -> None:
    """Steps of ``python -c code``, two at a time as the allocation allows."""
    for _ in range(0, calls, 2):
        batch = [subprocess.Popen([*SRUN, python, "-c", code]) for _ in range(2)]
        for step in batch:
            step.wait()


def listening() -> tuple[socket.socket, str]:
    """A socket here that accepts and closes connections, and the code of a step that imports
    the worker and connects to it."""
    listener = socket.create_server((reachable_address(), 0))
    host, port = listener.getsockname()[:2]

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener, ("import remotefn.worker.startup, zmq, socket; "
                      f"socket.create_connection(({host!r}, {port})).close()")


def main() -> None:
    """Each way in turn, ROUNDS times, so that the machine's load falls on all alike; the
    median round of each."""
    from contextlib import ExitStack

    measured: dict[str, list[float]] = {"bare": [], "ceiling": [], "remotefn": [],
                                        "executorlib": []}
    per_round = max(2, count // ROUNDS)
    with ExitStack() as stack:
        listener, connect = listening()
        stack.callback(listener.close)
        stack.enter_context(remotefn.session("slurm", forward_output=False))
        one_shot = remote(tasks.noop)
        try:
            from executorlib import SlurmJobExecutor
            theirs = stack.enter_context(SlurmJobExecutor(max_cores=2,
                                                          resource_dict={"cores": 1}))
        except ImportError:
            theirs = None
        steps("pass", 2)  # warm-up, each way
        one_shot(0).result()
        if theirs is not None:
            theirs.submit(tasks.noop, 0).result()
        for _ in range(ROUNDS):
            measured["bare"].append(rate(lambda n: steps("pass", n), per_round))
            measured["ceiling"].append(rate(lambda n: steps(connect, n), per_round))
            measured["remotefn"].append(rate(lambda n: concurrent.futures.wait(
                [one_shot(i) for i in range(n)]), per_round))
            if theirs is not None:
                measured["executorlib"].append(rate(lambda n: concurrent.futures.wait(
                    [theirs.submit(tasks.noop, i) for i in range(n)]), per_round))
        pooled = remote(tasks.noop, block=True, max_workers=1)
        pooled(0).result()
        samples = []
        for i in range(300):
            begun = time.perf_counter()
            pooled(i).result()
            samples.append(time.perf_counter() - begun)
    median = {k: statistics.median(v) if v else None for k, v in measured.items()}
    ours, them = median["remotefn"], median["executorlib"]
    print(json.dumps({
        "rounds": ROUNDS, "calls_per_round": per_round,
        "bare_srun_steps_per_s": median["bare"], "import_connect_steps_per_s": median["ceiling"],
        "non_block_calls_per_s": ours, "executorlib_calls_per_s": them,
        "ratio": ours / median["bare"], "ratio_to_ceiling": ours / median["ceiling"],
        "ratio_to_executorlib": ours / them if them else None,
        "block_median_us": statistics.median(samples) * 1e6,
        "each_round": measured}))


main()
