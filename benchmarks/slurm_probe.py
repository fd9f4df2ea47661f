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

started = time.perf_counter()
steps = [subprocess.Popen(["srun", f"--jobid={job}", "--exact", "-n1", "-c1", "--mpi=none",
                           "--quiet", python, "-c", "pass"]) for _ in range(2)]
done = 2
for step in steps:
    step.wait()
while done < count:
    batch = [subprocess.Popen(["srun", f"--jobid={job}", "--exact", "-n1", "-c1", "--mpi=none",
                               "--quiet", python, "-c", "pass"]) for _ in range(2)]
    for step in batch:
        step.wait()
    done += 2
bare = count / (time.perf_counter() - started)

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

print(json.dumps({"bare_srun_steps_per_s": bare, "non_block_calls_per_s": rate,
                  "ratio": rate / bare, "block_median_us": samples[len(samples) // 2] * 1e6}))
