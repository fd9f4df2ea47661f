"""W1, W2 and W5 of remotefn against ProcessPoolExecutor, with their spread.

    python benchmarks/ratios.py [--runs 5] [--trees TREE,...] [--others executorlib]
                                [--quick] [--out FILE]

Each sample is a fresh interpreter that opens one system, warms it up and runs W1 (no-op
throughput), W2 (round-trip latency, median) and W5 (fan-out efficiency, median of 3); the
systems take turns within a round and the order rotates, and reverses every other round, so
that a drift of this shared machine, or what one sample leaves behind for the next, hits
each alike. A ratio is taken within a round (remotefn's sample over ProcessPoolExecutor's of
the same round), and every figure is reported as the median and the range over the rounds.
``--trees`` runs remotefn from several source trees (for example a checkout before a change,
and this one) in the same rounds; ``--others`` adds more systems of ``systems.py`` to the
rounds, reported beside them.

Why not pyperf: its calibration picks how many loops make one value of a microbenchmark;
these workloads are whole pools measured over thousands of calls, and what a value needs is
what this does: fresh processes, interleaved, with the spread reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_PROBE = """
import json, statistics, workloads, systems
system = systems.SYSTEMS[{name!r}]()
system.open()
try:
    workloads.throughput(system, {warm})  # workers started, pools measured
    w1 = workloads.throughput(system, {calls})
    w2, w2_p99 = workloads.latency(system, {latency})
    workloads.fan_out(system, 20, 0.005)
    w5 = statistics.median(workloads.fan_out(system, {fan}, 0.005) for _ in range(3))
finally:
    system.close()
import remotefn
print(json.dumps({{"w1": w1, "w2": w2, "w2_p99": w2_p99, "w5": w5, "from": remotefn.__file__}}))
"""

KEYS = ("w1", "w2", "w2_p99", "w5")


def sample(name: str, tree: str, sizes: dict[str, int]) -> dict[str, float]:
    """One fresh interpreter's W1, W2 and W5 of system ``name`` (remotefn from ``tree``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath(tree), HERE])}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(name=name, **sizes)],
                         capture_output=True, text=True, env=env, cwd=HERE, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"{name} ({tree}) failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if name == "remotefn" and not result["from"].startswith(os.path.abspath(tree)):
        raise SystemExit(f"the run on {tree} imported remotefn from {result['from']}")
    return result


def spread(values: list[float]) -> dict[str, Any]:
    """The median and the range of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def measure(trees: list[str], runs: int, sizes: dict[str, int], others: list[str] = [],
            log: Any = sys.stderr) -> dict[str, Any]:
    """Interleaved rounds of ProcessPoolExecutor, remotefn from each tree, and ``others``."""
    contenders = ([("processpool", ROOT)] + [("remotefn", tree) for tree in trees]
                  + [(name, ROOT) for name in others])
    samples: dict[tuple[str, str], list[dict[str, float]]] = {c: [] for c in contenders}
    for run in range(runs):
        shift = run // 2 % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for name, tree in order if run % 2 == 0 else order[::-1]:
            row = sample(name, tree, sizes)
            samples[name, tree].append(row)
            label = f"remotefn {tree}" if name == "remotefn" else name
            print(f"run {run + 1} {label}: W1 {row['w1']:,.0f}/s, W2 {row['w2']:,.0f} us, "
                  f"W5 {row['w5']:.1%}", file=log, flush=True)
    pool = samples["processpool", ROOT]
    result: dict[str, Any] = {"runs": runs, "sizes": sizes,
                              "processpool": {k: spread([s[k] for s in pool]) for k in KEYS}}
    for name in others:
        result[name] = {k: spread([s[k] for s in samples[name, ROOT]]) for k in KEYS}
    for tree in trees:
        ours = samples["remotefn", tree]
        result[tree] = {
            **{k: spread([s[k] for s in ours]) for k in KEYS},
            "w1_ratio": spread([a["w1"] / b["w1"] for a, b in zip(ours, pool)]),
            "w2_ratio": spread([a["w2"] / b["w2"] for a, b in zip(ours, pool)]),
            "w5_minus_pp": spread([a["w5"] - b["w5"] for a, b in zip(ours, pool)]),
        }
    return result


def report(result: dict[str, Any], trees: list[str], others: list[str] = []) -> str:
    def cell(row: dict[str, Any], fmt: str) -> str:
        return f"{fmt.format(row['median'])} ({fmt.format(row['min'])}-{fmt.format(row['max'])})"

    lines = [f"medians (range) of {result['runs']} interleaved runs"]
    for name in ["processpool", *others]:
        row = result[name]
        lines.append(f"{name}: W1 {cell(row['w1'], '{:,.0f}')}/s, "
                     f"W2 {cell(row['w2'], '{:,.0f}')} us, W5 {cell(row['w5'], '{:.1%}')}")
    for tree in trees:
        row = result[tree]
        lines.append(f"remotefn {tree}: W1 {cell(row['w1'], '{:,.0f}')}/s, "
                     f"W2 {cell(row['w2'], '{:,.0f}')} us, W5 {cell(row['w5'], '{:.1%}')}")
        lines.append(f"  W1 {cell(row['w1_ratio'], '{:.2f}')}x PP (goal >= 2.5x), "
                     f"W2 {cell(row['w2_ratio'], '{:.2f}')}x PP (goal <= 0.75x), "
                     f"W5 minus PP's {cell(row['w5_minus_pp'], '{:+.1%}')} (goal >= 0, "
                     f"and W5 >= 96%)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trees", default=ROOT, help="remotefn source trees, comma-separated")
    parser.add_argument("--others", default="", help="more systems, comma-separated "
                        "(executorlib)")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sizes = ({"warm": 200, "calls": 2000, "latency": 200, "fan": 20} if args.quick else
             {"warm": 2000, "calls": 20_000, "latency": 2000, "fan": 200})
    trees = args.trees.split(",")
    others = [name for name in args.others.split(",") if name]
    result = measure(trees, args.runs, sizes, others)
    print(report(result, trees, others))
    if args.out:
        with open(args.out, "w") as file:
            json.dump(result, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
