"""Run inside salloc -n 2: in one run, N no-op calls as

- bare ``srun`` steps of ``python -c pass``;
- steps that import the worker and connect to a socket, as a worker must (the ceiling any
  Python worker can reach);
- remotefn's non-block calls (one step each);
- executorlib's ``SlurmJobExecutor`` (one step each; skipped where executorlib is missing);

all two at a time, and remotefn's block-call latency. Prints one JSON line.
"""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time

import remotefn
import tasks
from remotefn import remote
from remotefn.backends.addresses import reachable_address

count = int(sys.argv[1])
python = sys.executable
job = os.environ["SLURM_JOB_ID"]
#: What remotefn's own steps pass too, so that the comparison is of the same steps.
SRUN = ["srun", f"--jobid={job}", "--exact", "-n1", "-c1", "--mpi=none", "--gres=none",
        "--quiet"]


def steps_per_second(code: str) -> float:
    """Steps of ``python -c code``, two at a time as the allocation allows."""
    started = time.perf_counter()
    done = 0
    while done < count:
        batch = [subprocess.Popen([*SRUN, python, "-c", code]) for _ in range(2)]
        for step in batch:
            step.wait()
        done += 2
    return count / (time.perf_counter() - started)


def connect_ceiling() -> float:
    """Steps that import the worker and open a connection to a listening socket here."""
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
    try:
        return steps_per_second("import remotefn.worker.startup, zmq, socket; "
                                f"socket.create_connection(({host!r}, {port})).close()")
    finally:
        listener.close()


def executorlib_calls() -> float | None:
    try:
        from executorlib import SlurmJobExecutor
    except ImportError:
        return None
    with SlurmJobExecutor(max_cores=2, resource_dict={"cores": 1}) as executor:
        executor.submit(tasks.noop, 0).result()  # its first step, as remotefn's warm-up
        started = time.perf_counter()
        concurrent.futures.wait([executor.submit(tasks.noop, i) for i in range(count)])
        return count / (time.perf_counter() - started)


steps_per_second("pass")  # warm-up
bare = steps_per_second("pass")
ceiling = connect_ceiling()

with remotefn.session("slurm", forward_output=False) as session:
    one_shot = remote(tasks.noop)
    one_shot(0).result()
    started = time.perf_counter()
    concurrent.futures.wait([one_shot(i) for i in range(count)])
    rate = count / (time.perf_counter() - started)
    pooled = remote(tasks.noop, block=True, max_workers=1)
    pooled(0).result()
    samples = []
    for i in range(300):
        begun = time.perf_counter()
        pooled(i).result()
        samples.append(time.perf_counter() - begun)
    samples.sort()

theirs = executorlib_calls()
print(json.dumps({"bare_srun_steps_per_s": bare, "import_connect_steps_per_s": ceiling,
                  "non_block_calls_per_s": rate, "executorlib_calls_per_s": theirs,
                  "ratio": rate / bare, "ratio_to_ceiling": rate / ceiling,
                  "ratio_to_executorlib": rate / theirs if theirs else None,
                  "block_median_us": samples[len(samples) // 2] * 1e6}))
