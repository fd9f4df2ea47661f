"""Draw the scaling curve of ``scaling.py``'s results: the session's CPU per call against
its number of workers, and against the number of queued calls.

    python benchmarks/plot.py RESULTS.json [--before BEFORE.json] [--out docs/scaling.png]

Each point is the median of its runs; the bars span their range. ``--before`` draws the
results of an earlier tree beside them, dashed; so does a RESULTS.json written by
``scaling.py --trees BEFORE,AFTER``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def _series(axis: Any, table: dict[str, Any], key: str, label: str, style: str,
            color: str) -> None:
    sizes = sorted(table, key=int)
    rows = [table[size] for size in sizes if key in table[size]]
    if not rows:
        return
    x = [int(size) for size in sizes if key in table[size]]
    y = [row[key] for row in rows]
    low = [row[key] - row[key + "_range"][0] for row in rows]
    high = [row[key + "_range"][1] - row[key] for row in rows]
    axis.errorbar(x, y, yerr=[low, high], fmt=style, color=color, capsize=3, label=label)


def draw(after: dict[str, Any], before: dict[str, Any] | None, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (workers, queue) = plt.subplots(1, 2, figsize=(10, 4),
                                            gridspec_kw={"width_ratios": [3, 2]})
    runs = [("", after, "-o")] + ([(" (before)", before, "--s")] if before else [])
    for suffix, results, style in runs:
        _series(workers, results["workers"], "serial_process_us",
                f"one call at a time{suffix}", style, "tab:red")
        _series(workers, results["workers"], "process_us",
                f"{results['calls']:,} calls at once{suffix}", style, "tab:blue")
        _series(queue, results["queue"], "process_us", f"queued behind one future{suffix}",
                style, "tab:green")
    workers.set_xscale("log", base=2)
    workers.set_xticks([int(n) for n in after["workers"]], [str(n) for n in after["workers"]])
    workers.set_xlabel("block workers in the pool (2 cores)")
    workers.set_ylabel("session CPU per call (µs)")
    workers.set_ylim(bottom=0)
    workers.legend(fontsize=8)
    workers.set_title("CPU per call against workers")
    queue.set_xscale("log")
    queue.set_xticks([int(n) for n in after["queue"]], [f"{int(n):,}" for n in after["queue"]])
    queue.set_xlabel("queued calls (2 workers)")
    queue.set_ylim(bottom=0)
    queue.legend(fontsize=8)
    queue.set_title("CPU per call against the queue")
    figure.suptitle("remotefn session CPU per no-op call: median and range of "
                    f"{next(iter(after['workers'].values()))['runs']} interleaved runs",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--before", default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "scaling.png"))
    args = parser.parse_args()
    with open(args.results) as file:
        after = json.load(file)
    before = None
    if "trees" in after:  # scaling.py --trees BEFORE,AFTER: the first before, the last after
        runs = list(after["trees"].values())
        before, after = runs[0], runs[-1]
    if args.before:
        with open(args.before) as file:
            before = json.load(file)
    draw(after, before, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
