"""``python -m remotefn``: show the allocation a default session would use."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotefn",
                                     description="Show the resources a remotefn session has.")
    parser.add_argument("--backend", help="local, slurm or flux (default: from the environment)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    import remotefn

    with remotefn.session(args.backend, forward_output=False) as session:
        report = session.resources()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"remotefn {remotefn.__version__}, backend: {report['backend']}")
    if report["allocation"]:
        print("  allocation: " + ", ".join(f"{k} {v}" for k, v in report["allocation"].items()))
    for kind in ("cores", "gpus"):
        counts = report[kind]
        print(f"  {kind}: {counts['total']} total, {counts['in_use']} in use, "
              f"{counts['free']} free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
