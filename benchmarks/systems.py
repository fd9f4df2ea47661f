"""Each system behind one small interface: open with 2 workers, submit, close.

``python systems.py NAME [--quick]`` runs every workload on one system and prints JSON; the
runner starts one such process per system so that none shares an interpreter with another.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from typing import Any, Callable

import workloads

WORKERS = 2


class System:
    name = ""
    #: Whether futures may be passed as arguments (dependency chaining).
    chains = True

    def open(self) -> None: ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future: ...

    def close(self) -> None: ...


class Remotefn(System):
    name = "remotefn"

    def open(self) -> None:
        import remotefn

        self.session = remotefn.session("local", max_cores=WORKERS, forward_output=False)
        self.handles: dict[Any, Any] = {}
        self.remote = remotefn.remote

    def submit(self, fn, *args):
        handle = self.handles.get(fn)
        if handle is None:
            handle = self.handles[fn] = self.remote(fn, block=True, max_workers=WORKERS)
        return self.session.submit(handle, *args)

    def close(self) -> None:
        self.session.shutdown()


class ProcessPool(System):
    name = "processpool"
    chains = False

    def open(self) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(WORKERS)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown()


class Executorlib(System):
    name = "executorlib"

    def open(self) -> None:
        from executorlib import SingleNodeExecutor

        self.executor = SingleNodeExecutor(max_workers=WORKERS, block_allocation=True)

    def submit(self, fn, *args):
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        self.executor.shutdown()


SYSTEMS = {cls.name: cls for cls in (Remotefn, ProcessPool, Executorlib)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    system = SYSTEMS[args.system]()
    started = time.perf_counter()
    system.open()
    results: dict[str, Any] = {"system": system.name}
    results.update(workloads.run_all(system, quick=args.quick, opened=started))
    system.close()
    if system.name == "remotefn":
        results.update(workloads.remotefn_only(quick=args.quick))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
