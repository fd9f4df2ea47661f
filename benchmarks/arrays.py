"""W4 side by side: a 64 MiB float64 array sent to ``echo`` and back, in MiB/s, for remotefn
(local backend: shared memory to forked workers), ProcessPoolExecutor and Ray (when
installed). Each run is a fresh process per system, runs alternate between the systems, and
each run's figure is the median of its round trips; the medians over runs and the ratios to
ProcessPoolExecutor are printed (JSON).

    python benchmarks/arrays.py [--runs 5] [--mib 64] [--repeats 5] [--systems ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

_PROBE = """
import json, sys, systems, workloads, arrays
system = arrays.open_system({name!r})
try:
    workloads.throughput(system, 200)  # every worker up, as W1-W3 leave them in run.py
    rate = workloads.payload(system, {mib}, {repeats})
finally:
    system.close()
print(json.dumps(rate))
"""


class Ray:
    """Ray's tasks behind the interface of systems.py (2 CPUs)."""

    name = "ray"

    def open(self) -> None:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        self.ray = ray
        self.functions: dict[Any, Any] = {}

    def submit(self, fn: Any, *args: Any) -> Any:
        remote = self.functions.get(fn)
        if remote is None:
            remote = self.functions[fn] = self.ray.remote(fn)
        return remote.remote(*args).future()

    def close(self) -> None:
        self.ray.shutdown()


def open_system(name: str) -> Any:
    import systems

    system = Ray() if name == "ray" else systems.SYSTEMS[name]()
    system.open()
    return system


def run_once(name: str, mib: int, repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(name=name, mib=mib,
                                                              repeats=repeats)],
                         capture_output=True, text=True, env=env, cwd=HERE, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"the {name} run failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def measure(names: list[str], runs: int, mib: int, repeats: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        for name in names if run % 2 == 0 else reversed(names):
            samples[name].append(run_once(name, mib, repeats))
            print(f"run {run + 1} {name}: {samples[name][-1]:,.0f} MiB/s", file=sys.stderr,
                  flush=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    result: dict[str, Any] = {"w4_mib": mib, "w4_runs": runs, "w4_mib_per_s": medians,
                              "w4_samples": samples}
    if "processpool" in medians:
        result["w4_ratio_to_processpool"] = {
            name: rate / medians["processpool"] for name, rate in medians.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--systems", default="remotefn,processpool,ray")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    names = [name for name in args.systems.split(",")
             if name != "ray" or importlib.util.find_spec("ray") is not None]
    if len(names) < len(args.systems.split(",")):
        print("ray is not installed (pip install ray); skipping it", file=sys.stderr)
    result = measure(names, args.runs, args.mib, args.repeats)
    rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in result["w4_mib_per_s"].items())
    print(f"W4 {args.mib} MiB round trip, median of {args.runs} runs (MiB/s): {rates}")
    if "processpool" in result["w4_mib_per_s"]:
        print("  against ProcessPoolExecutor: " + ", ".join(
            f"{name} {ratio:.2f}x" for name, ratio in result["w4_ratio_to_processpool"].items()))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
