"""``python -m remotefn``: live sessions, the resources a session would have, the cache.

    python -m remotefn status [PID] [--json]        this user's live sessions on this host
    python -m remotefn [--backend B] [--json]       what a default session would have
    python -m remotefn cache ls DIR [--function F]  the stored results
    python -m remotefn cache show FILE              one entry: metadata and value
    python -m remotefn cache clear DIR [--function F] [--older-than SECONDS]
    python -m remotefn report RECORD -o run.html    a finished run's report, one HTML file
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


def status_command(args: argparse.Namespace) -> int:
    from .hub.status import live_sessions, query

    snapshots = [s for s in (query(path) for path in live_sessions()) if s is not None]
    if args.pid is not None:
        snapshots = [s for s in snapshots if s["pid"] == args.pid]
        if not snapshots:
            print(f"no live remotefn session of yours with pid {args.pid} on this host",
                  file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(snapshots, indent=2))
        return 0
    if not snapshots:
        print("no live remotefn sessions of yours on this host")
        return 0
    for snapshot in snapshots:
        _print_status(snapshot, detail=args.pid is not None or len(snapshots) == 1)
    return 0


def _print_status(snapshot: dict, detail: bool) -> None:
    now = snapshot["time"]
    print(f"session pid {snapshot['pid']} ({' '.join(snapshot['argv'])[:60]}), "
          f"backend {snapshot['backend']}: {len(snapshot['workers'])} workers, "
          f"{len(snapshot['running'])} running, {len(snapshot['queued'])} queued")
    if not detail:
        return
    for kind in ("cores", "gpus"):
        counts = snapshot[kind]
        print(f"  {kind}: {counts['total']} total, {counts['in_use']} in use, "
              f"{counts['free']} free")
    for pool in snapshot["pools"]:
        print(f"  pool {pool['pool']}: {pool['workers']} workers, {pool['queued']} queued")
    for worker in snapshot["workers"]:
        print(f"  worker {worker['worker']} {worker['state']} on {worker['host']} "
              f"(pid {worker['pid']}), {worker['cores']} cores, gpus {worker['gpus']}")
    for call in snapshot["running"]:
        started = call["started"]
        elapsed = f"{now - started:.1f} s" if started else "starting"
        print(f"  running {call['call']} on {call['worker']}: {elapsed}")
    for call in snapshot["queued"]:
        held = f" (held by {call['worker']})" if "worker" in call else ""
        why = f" ({call['reason']})" if "reason" in call else ""
        print(f"  queued {call['call']}{held}: waiting {now - call['queued']:.1f} s{why}")


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


def report_command(args: argparse.Namespace) -> int:
    from .dashboard.report import read_events, write_report
    from .errors import MissingDependency

    try:
        size = write_report(read_events(args.record), args.output,
                            title=f"remotefn run report: {args.record}")
    except (OSError, ValueError, MissingDependency) as error:
        print(f"cannot write the report: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({size / 1e6:.1f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotefn",
                                     description="Show a session's resources, or the cache.")
    parser.add_argument("--backend", help="local, slurm or flux (default: from the environment)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    commands = parser.add_subparsers(dest="command")
    status_parser = commands.add_parser("status", help="this user's live sessions on this "
                                        "host (never opens a session)")
    status_parser.add_argument("pid", nargs="?", type=int, help="show this session only")
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    cache_parser = commands.add_parser("cache", help="list, show or clear cached results")
    cache_parser.add_argument("action", choices=["ls", "show", "clear"])
    cache_parser.add_argument("target", help="the cache directory (an entry's file for show)")
    cache_parser.add_argument("--function", help="only this function's entries")
    cache_parser.add_argument("--older-than", type=float, metavar="SECONDS",
                              help="clear only entries older than this")
    report_parser = commands.add_parser("report", help="write a finished run's report (one "
                                        "HTML file) from its event record")
    report_parser.add_argument("record", help="the record file (session(record=...))")
    report_parser.add_argument("-o", "--output", default="run.html",
                               help="the HTML file to write (default: run.html)")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report_command(args)
    if args.command == "cache":
        return cache_command(args)
    if args.command == "status":
        return status_command(args)
    return show_resources(args)


if __name__ == "__main__":
    sys.exit(main())
