"""Start-up of ``python -m remotefn.worker``: read and remove the launch variables, set up
MPI and GPUs, confine sessions opened inside calls to this worker's share, then serve.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from ..protocol import launch
from ..sessions import registry
from . import watchdog
from .loop import Worker


def main() -> int:
    environ = os.environ
    try:
        address = environ.pop(launch.ADDRESS)
        key = bytes.fromhex(environ.pop(launch.KEY))
        identity = environ.pop(launch.WORKER).encode()
    except (KeyError, ValueError) as error:
        print(f"remotefn worker: started without a session ({error!r} missing or invalid); "
              "workers are started by a remotefn session", file=sys.stderr)
        return 2
    server_key = environ.pop(launch.SERVER_KEY, "").encode()
    cpus = environ.pop(launch.CPUS, None)
    ranks = int(environ.pop(launch.RANKS, "1"))
    gpus = environ.pop(launch.GPUS, None)
    pmi = environ.pop(launch.PMI, None)
    nested = environ.pop(launch.NESTED, None)
    comm, rank = None, 0
    if ranks > 1:
        from . import mpi

        comm = mpi.world()
        rank = comm.Get_rank()
        if comm.Get_size() != ranks:
            print(f"remotefn worker: {ranks} MPI ranks were started but MPI reports a world of "
                  f"{comm.Get_size()}: the MPI launcher and the MPI library of mpi4py do not "
                  f"match, or the PMI mode{f' {pmi!r}' if pmi else ''} is not supported "
                  "(Flux's pmix needs the flux-pmix plugin)", file=sys.stderr)
            return 3
    if gpus is not None:
        groups = gpus.split(";")
        environ["CUDA_VISIBLE_DEVICES"] = groups[rank] if rank < len(groups) else ""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    registry.confine_default(
        backend="flux" if nested == "flux" else "local",
        max_cores=int(cpus) if cpus else None,
        gpu_ids=[int(i) for i in visible.split(",") if i.isdigit()] if visible else None)
    seen = tuple(i for i in visible.split(",") if i) if visible is not None else None
    rank_gpus = comm.gather(seen, root=0) if comm is not None else [seen]
    watchdog.end_on_sigterm()
    if comm is not None and rank > 0:
        mpi.follow(comm)
        return 0
    connection = environ.pop(launch.CONNECTION_FD, None)
    worker = mpi.MpiWorker(address, server_key, key, identity, comm) if comm is not None \
        else Worker(address, server_key, key, identity, int(connection) if connection else None)
    worker.gpus = tuple(rank_gpus)
    worker.start_watchdog()
    try:
        worker.serve()
    finally:
        worker.close()
    if comm is None and connection is None:
        leave_now(0)
    return 0


def leave_now(code: int) -> None:
    """End a worker process that has sent its last result without the interpreter's teardown
    (freeing every module and object: about 10 ms of CPU, which a one-shot worker's job holds
    its cores for). ``atexit`` hooks run and the standard streams are flushed first, as at any
    exit; returns (a normal exit follows) while a non-daemon thread a call started still
    runs. Not for MPI ranks, which finalize MPI at teardown, nor forked workers (their fork
    server ends them)."""
    first = threading.main_thread()
    if any(not thread.daemon for thread in threading.enumerate() if thread is not first):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
