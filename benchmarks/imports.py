"""What importing remotefn costs a library that decorates its functions: the wall time of a
whole process that imports remotefn and decorates 100 functions, against one that only runs
``import concurrent.futures``. Runs alternate; the medians and their ratio are printed. The
tree's modules are byte-compiled first, as an installed package's are (the standard library's
are too), so that neither side pays for compiling.

    python benchmarks/imports.py [--runs 41] [--tree DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

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


def measure(runs: int, tree: str) -> dict[str, Any]:
    compileall.compile_dir(os.path.join(tree, "remotefn"), quiet=1)
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
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    result = measure(args.runs, args.tree)
    print(f"import remotefn + decorating 100 functions: {result['import_decorate_100_ms']:.1f} "
          f"ms, import concurrent.futures: {result['import_baseline_ms']:.1f} ms, ratio "
          f"{result['import_ratio']:.2f}x (quartiles of the paired ratios "
          f"{result['import_ratio_quartiles'][0]:.2f}-{result['import_ratio_quartiles'][1]:.2f})")
    if args.out:
        with open(args.out, "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
