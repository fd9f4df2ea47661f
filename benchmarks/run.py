"""Run every system in its own process, print a table against the goals, write JSON.

    python benchmarks/run.py [--quick] [--systems remotefn,processpool,executorlib] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ["remotefn", "processpool", "executorlib"]

ROWS = [  # key, label, format
    ("first_result_s", "first result after opening (s)", "{:.3f}"),
    ("w1_tasks_per_s", "W1 no-op throughput (tasks/s)", "{:,.0f}"),
    ("w2_median_us", "W2 latency median (us)", "{:,.0f}"),
    ("w2_p99_us", "W2 latency p99 (us)", "{:,.0f}"),
    ("w3_us_per_link", "W3 dependency chain (us/link)", "{:,.0f}"),
    ("w4_mib_per_s", "W4 payload (MiB/s)", "{:,.0f}"),
    ("w5_efficiency", "W5 fan-out efficiency", "{:.1%}"),
]


def run_system(name: str, quick: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, os.path.join(HERE, "systems.py"), name]
    if quick:
        command.append("--quick")
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE,
                         timeout=1800)
    if out.returncode != 0:
        return {"system": name, "error": out.stderr.strip()[-2000:]}
    return json.loads(out.stdout)


def goals(results: dict[str, dict]) -> list[tuple[str, str, bool | None]]:
    ours, pool = results.get("remotefn", {}), results.get("processpool", {})

    def ratio(key: str) -> float | None:
        if key in ours and pool.get(key):
            return ours[key] / pool[key]
        return None

    checks = []
    w1 = ratio("w1_tasks_per_s")
    checks.append(("W1 throughput >= 2.0x ProcessPoolExecutor",
                   f"{w1:.2f}x" if w1 else "n/a", None if w1 is None else w1 >= 2.0))
    w2 = ratio("w2_median_us")
    checks.append(("W2 median latency <= 0.8x ProcessPoolExecutor",
                   f"{w2:.2f}x" if w2 else "n/a", None if w2 is None else w2 <= 0.8))
    if ours.get("w3_us_per_link") and ours.get("w2_median_us"):
        w3 = ours["w3_us_per_link"] / ours["w2_median_us"]
        checks.append(("W3 per link <= 1.1x remotefn's W2", f"{w3:.2f}x", w3 <= 1.1))
    w4 = ratio("w4_mib_per_s")
    checks.append(("W4 payload >= 4x ProcessPoolExecutor", f"{w4:.2f}x" if w4 else "n/a",
                   None if w4 is None else w4 >= 4.0))
    if "w5_efficiency" in ours:
        checks.append(("W5 efficiency >= 96%", f"{ours['w5_efficiency']:.1%}",
                       ours["w5_efficiency"] >= 0.96))
    if "non_block_calls_per_s" in ours:
        rate = ours["non_block_calls_per_s"]
        checks.append(("non-block local calls >= 100/s", f"{rate:.0f}/s", rate >= 100))
    if "session_to_first_result_s" in ours:
        first = ours["session_to_first_result_s"]
        checks.append(("first result after session() <= 0.15 s", f"{first:.3f} s", first <= 0.15))
    if ours.get("session_cpu_us_per_call") and ours.get("session_cpu_us_per_call_recording"):
        more = ours["session_cpu_us_per_call_recording"] / ours["session_cpu_us_per_call"] - 1
        checks.append(("event record to a file: < 5% more session CPU per call",
                       f"{ours['session_cpu_us_per_call']:.1f} -> "
                       f"{ours['session_cpu_us_per_call_recording']:.1f} us ({more:+.1%})",
                       more < 0.05))
    closed = ours.get("session_cpu_us_per_call_dashboard_closed")
    opened = ours.get("session_cpu_us_per_call_dashboard_open")
    if closed and opened:
        more = opened / closed - 1
        checks.append(("live dashboard open: < 5% more session CPU per call",
                       f"{closed:.1f} -> {opened:.1f} us ({more:+.1%})", more < 0.05))
    scaling = ours.get("queue_scaling")
    if scaling:
        sizes = sorted(scaling, key=int)
        small, large = scaling[sizes[0]], scaling[sizes[-1]]
        kept = large["tasks_per_s"] / small["tasks_per_s"]
        checks.append((f"{int(sizes[-1]):,} queued calls: throughput within 10% of "
                       f"{int(sizes[0]):,}", f"{kept:.2f}x", kept >= 0.9))
        memory = large["bytes_per_queued_call"]
        checks.append(("<= 2 KiB per queued call", f"{memory / 1024:.2f} KiB",
                       memory <= 2048))
    if "cache_hit_us" in ours:
        checks.append(("cache hit overhead < 1 ms", f"{ours['cache_hit_us']:.0f} us",
                       ours["cache_hit_us"] < 1000))
        speed = ours["cache_hash_gb_per_s"]
        checks.append((f"hashing a {ours['cache_hash_bytes'] / 2**30:g} GiB array >= 1 GB/s",
                       f"{speed:.2f} GB/s", speed >= 1.0))
    slurm = ours.get("slurm")
    if isinstance(slurm, dict):
        checks.append(("SLURM non-block calls >= 0.9x steps that import the worker and connect",
                       f"{slurm['ratio_to_ceiling']:.2f}x (bare srun steps: "
                       f"{slurm['ratio']:.2f}x)", slurm["ratio_to_ceiling"] >= 0.9))
        theirs = slurm.get("ratio_to_executorlib")
        checks.append(("SLURM non-block calls >= 1.2x executorlib's SlurmJobExecutor",
                       f"{theirs:.2f}x" if theirs else "n/a (no executorlib)",
                       None if theirs is None else theirs >= 1.2))
        checks.append(("SLURM block-call latency < 1 ms", f"{slurm['block_median_us']:.0f} us",
                       slurm["block_median_us"] < 1000))
    return checks


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = [f"{'':34}" + "".join(f"{n:>16}" for n in names)]
    for key, label, fmt in ROWS:
        cells = []
        for name in names:
            value = results[name].get(key)
            cells.append(f"{fmt.format(value) if isinstance(value, (int, float)) else 'n/a':>16}")
        lines.append(f"{label:34}" + "".join(cells))
    ours = results.get("remotefn", {})
    extra = [("session() to first result (s)", ours.get("session_to_first_result_s"), "{:.3f}"),
             ("non-block calls (calls/s)", ours.get("non_block_calls_per_s"), "{:,.0f}"),
             ("dependency graph (nodes/s)", ours.get("graph_nodes_per_s"), "{:,.0f}"),
             ("cache hit (us)", ours.get("cache_hit_us"), "{:,.0f}"),
             ("cache key of an array (GB/s)", ours.get("cache_hash_gb_per_s"), "{:.2f}"),
             ("code key of a function and its helpers, once per session (ms)",
              ours.get("cache_code_key_ms"), "{:.1f}")]
    for label, value, fmt in extra:
        if value is not None:
            lines.append(f"{label:34}{fmt.format(value):>16}")
    for size, row in (ours.get("queue_scaling") or {}).items():
        lines.append(f"{f'{int(size):,} queued calls (tasks/s)':34}{row['tasks_per_s']:>16,.0f}"
                     f"   {row['bytes_per_queued_call']:,.0f} B/call")
    slurm = ours.get("slurm")
    if isinstance(slurm, dict):
        lines.append(f"{'SLURM bare srun steps/s':34}{slurm['bare_srun_steps_per_s']:>16,.1f}")
        lines.append(f"{'SLURM import+connect steps/s':34}"
                     f"{slurm['import_connect_steps_per_s']:>16,.1f}")
        lines.append(f"{'SLURM non-block calls/s':34}{slurm['non_block_calls_per_s']:>16,.1f}")
        if slurm.get("executorlib_calls_per_s"):
            lines.append(f"{'SLURM executorlib calls/s':34}"
                         f"{slurm['executorlib_calls_per_s']:>16,.1f}")
        lines.append(f"{'SLURM block latency median (us)':34}{slurm['block_median_us']:>16,.0f}")
    elif slurm:
        lines.append(f"SLURM: {slurm}")
    lines.append("")
    for goal, value, met in goals(results):
        mark = {True: "met", False: "NOT met", None: "n/a"}[met]
        lines.append(f"  [{mark:>7}] {goal}: {value}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (for CI)")
    parser.add_argument("--systems", default=",".join(ALL))
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()
    results = {}
    for name in args.systems.split(","):
        if name == "executorlib" and importlib.util.find_spec("executorlib") is None:
            print("executorlib is not installed (pip install -e '.[bench]'); skipping it")
            continue
        results[name] = run_system(name, args.quick)
        if "error" in results[name]:
            print(f"{name} failed:\n{results[name]['error']}", file=sys.stderr)
            return 1
    print(table(results))
    with open(args.out, "w") as file:
        json.dump({"machine": platform.node(), "cpus": os.cpu_count(), "quick": args.quick,
                   "when": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}, file,
                  indent=2)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
