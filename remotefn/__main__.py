"""``python -m remotefn``: the resources a session has, and the result cache.

    python -m remotefn [--backend B] [--json]       what a default session would have
    python -m remotefn cache ls DIR [--function F]  the stored results
    python -m remotefn cache show FILE              one entry: metadata and value
    python -m remotefn cache clear DIR [--function F] [--older-than SECONDS]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def show_resources(args: argparse.Namespace) -> int:
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


def cache_command(args: argparse.Namespace) -> int:
    from . import cache

    if args.action == "ls":
        found = cache.entries(args.target, args.function)
        print(f"{'function':30} {'created':19} {'runtime':>9} {'size':>10}  key")
        for entry in found:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
            runtime = f"{entry.runtime:.3f}s" if entry.runtime is not None else "-"
            print(f"{entry.function:30} {created:19} {runtime:>9} {entry.size:>10}  "
                  f"{entry.key[:16]}")
        print(f"{len(found)} entries")
    elif args.action == "show":
        for name, value in sorted(cache.metadata_of(args.target).items()):
            print(f"{name}: {value}")
        print(f"value: {cache.load(args.target)!r}"[:2000])
    else:
        removed = cache.delete(args.target, args.function, args.older_than)
        print(f"removed {removed} entries")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotefn",
                                     description="Show a session's resources, or the cache.")
    parser.add_argument("--backend", help="local, slurm or flux (default: from the environment)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    commands = parser.add_subparsers(dest="command")
    cache_parser = commands.add_parser("cache", help="list, show or clear cached results")
    cache_parser.add_argument("action", choices=["ls", "show", "clear"])
    cache_parser.add_argument("target", help="the cache directory (an entry's file for show)")
    cache_parser.add_argument("--function", help="only this function's entries")
    cache_parser.add_argument("--older-than", type=float, metavar="SECONDS",
                              help="clear only entries older than this")
    args = parser.parse_args(argv)
    if args.command == "cache":
        return cache_command(args)
    return show_resources(args)


if __name__ == "__main__":
    sys.exit(main())
