"""W1 and W2 of remotefn from two source trees, interleaved, to compare a change.

    python benchmarks/ab.py BEFORE_TREE AFTER_TREE [--runs 5] [--calls 20000] [--latency 2000]

Each run is a fresh interpreter with the tree's ``remotefn`` first on ``sys.path``; runs
alternate between the trees so that a drift of the machine hits both. Prints every run and
the medians, and the after/before ratio of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

_PROBE = """
import json, sys, workloads, systems
system = systems.Remotefn()
system.open()
try:
    workloads.throughput(system, 2000)  # warm-up: workers started, pools measured
    w1 = workloads.throughput(system, {calls})
    w2, _ = workloads.latency(system, {latency})
finally:
    system.close()
import remotefn
print(json.dumps({{"w1": w1, "w2": w2, "from": remotefn.__file__}}))
"""


def run_once(tree: str, calls: int, latency: int) -> dict[str, float]:
    path = os.pathsep.join([os.path.abspath(tree), HERE])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(calls=calls, latency=latency)],
                         capture_output=True, text=True, env=env, cwd=HERE, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the run on {tree} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["from"].startswith(os.path.abspath(tree)):
        raise SystemExit(f"the run on {tree} imported remotefn from {result['from']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000, help="W1 calls per run")
    parser.add_argument("--latency", type=int, default=2000, help="W2 round trips per run")
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {
        tree: {"w1": [], "w2": []} for tree in (args.before, args.after)}
    for run in range(args.runs):
        for tree in (args.before, args.after) if run % 2 == 0 else (args.after, args.before):
            result = run_once(tree, args.calls, args.latency)
            samples[tree]["w1"].append(result["w1"])
            samples[tree]["w2"].append(result["w2"])
            print(f"run {run + 1} {tree}: W1 {result['w1']:,.0f} tasks/s, "
                  f"W2 {result['w2']:,.0f} us", flush=True)
    medians = {tree: {k: statistics.median(v) for k, v in kinds.items()}
               for tree, kinds in samples.items()}
    before, after = medians[args.before], medians[args.after]
    print(f"median before: W1 {before['w1']:,.0f} tasks/s, W2 {before['w2']:,.0f} us")
    print(f"median after:  W1 {after['w1']:,.0f} tasks/s, W2 {after['w2']:,.0f} us")
    print(f"after/before:  W1 {after['w1'] / before['w1']:.3f}x (higher is better), "
          f"W2 {after['w2'] / before['w2']:.3f}x (lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
