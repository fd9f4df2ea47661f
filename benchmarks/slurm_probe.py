"""Run inside salloc: bare srun steps vs remotefn non-block calls, and block latency."""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import remotefn
import tasks
from remotefn import remote

count = int(sys.argv[1])
python = sys.executable
job = os.environ["SLURM_JOB_ID"]



def steps_per_second(code: str) -> float:
    """Steps of ``python -c code``, two at a time as the allocation allows."""
    started = time.perf_counter()
    done = 0
    while done < count:
        batch = [subprocess.Popen(["srun", f"--jobid={job}", "--exact", "-n1", "-c1",
                                   "--mpi=none", "--quiet", python, "-c", code])
                 for _ in range(2)]
        for step in batch:
            step.wait()
        done += 2
    return count / (time.perf_counter() - started)


steps_per_second("pass")  # warm-up
bare = steps_per_second("pass")
# A ceiling for any worker: steps that only import the worker module, and do nothing else.
import_only = steps_per_second("import remotefn.worker.startup")

with remotefn.session("slurm", forward_output=False) as session:
    one_shot = remote(tasks.noop)
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

print(json.dumps({"bare_srun_steps_per_s": bare, "import_only_steps_per_s": import_only,
                  "non_block_calls_per_s": rate,
                  "ratio": rate / bare, "block_median_us": samples[len(samples) // 2] * 1e6}))
