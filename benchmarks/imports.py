"""What importing remotefn costs a library that decorates its functions: the wall time of a
whole process that imports remotefn and decorates 100 functions, against one that only runs
``import concurrent.futures``. Runs alternate; the medians and their ratio are printed (JSON).

    python benchmarks/imports.py [--runs 41] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BASELINE = "import concurrent.futures"
DECORATING = """
import remotefn
from remotefn import remote

def _make(i):
    def function(x, y=1):
        return x + y + i
    function.__name__ = function.__qualname__ = f"f{i}"
    return function

for i in range(100):
    globals()[f"f{i}"] = remote(_make(i))
"""


def wall_time(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=env["PYTHONPATH"])
    return time.perf_counter() - started


def measure(runs: int, tree: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    baseline, decorating = [], []
    for run in range(runs):
        pair = [(baseline, BASELINE), (decorating, DECORATING)]
        for samples, code in pair if run % 2 == 0 else reversed(pair):
            samples.append(wall_time(code, env))
    low, high = statistics.quantiles(
        [d / b for d, b in zip(decorating, baseline)], n=4)[0::2]
    return {"import_baseline_ms": statistics.median(baseline) * 1e3,
            "import_decorate_100_ms": statistics.median(decorating) * 1e3,
            "import_ratio": statistics.median(decorating) / statistics.median(baseline),
            "import_ratio_quartiles": [low, high], "import_runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--tree", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), help="the source tree whose remotefn is imported")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.tree)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
