"""The local backend: workers are subprocesses of the session on this machine."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from typing import Sequence

from ..errors import MissingDependency
from ..protocol import launch
from ..options import DEFAULT_OPTIONS, CallOptions, check_int
from .base import Backend, Capacity, LaunchedWorker, WorkerSpec, worker_environment
from .forking import ForkServer, Sentinel, forkable

logger = logging.getLogger(__name__)

_MPI_HINT = ("install MPI for Python with: pip install 'remotefn[mpi]' (mpi4py and the mpich "
             "wheel), or put a system MPI's mpiexec on PATH and pip install mpi4py")


class LocalBackend(Backend):
    """Workers as ``python -m remotefn.worker`` subprocesses; MPI workers under ``mpiexec``.

    Settings: ``max_cores`` (cores the session may use at once; may exceed the machine),
    ``max_gpus`` or ``gpu_ids`` (the GPU inventory; default: what ``nvidia-smi`` lists),
    ``python`` (the interpreter that runs workers), ``mpiexec`` (the MPI launcher; default:
    the one beside ``python``, else on PATH), ``transport`` (``"ipc"`` or ``"tcp"``),
    ``interface`` (the address to bind with tcp) and ``fork_server`` (default True: single-rank
    workers are forked from a process that has already imported what they need).
    """

    name = "local"
    runs_calls_here = True

    def __init__(self, *, max_cores: int | None = None, max_gpus: int | None = None,
                 gpu_ids: Sequence[int] | None = None, python: str | None = None,
                 mpiexec: str | None = None, transport: str = "ipc",
                 interface: str = "127.0.0.1", fork_server: bool = True) -> None:
        if max_cores is not None:
            check_int("max_cores", max_cores, 1)
        if max_gpus is not None:
            check_int("max_gpus", max_gpus, 0)
        if gpu_ids is not None:
            if max_gpus is not None:
                raise TypeError("give max_gpus or gpu_ids, not both")
            if isinstance(gpu_ids, (str, bytes)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in gpu_ids):
                raise TypeError(f"gpu_ids must be a list of GPU indices (int >= 0), "
                                f"got {gpu_ids!r}")
            if len(set(gpu_ids)) != len(gpu_ids):
                raise ValueError(f"gpu_ids has duplicates: {list(gpu_ids)!r}")
        for name, value in (("python", python), ("mpiexec", mpiexec)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be the path of a program, got {value!r}")
        if not isinstance(fork_server, bool):
            raise TypeError(f"fork_server must be True or False, got {fork_server!r}")
        if transport not in ("ipc", "tcp"):
            raise ValueError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
        self.max_cores = max_cores
        self.gpu_ids = tuple(gpu_ids) if gpu_ids is not None else (
            tuple(range(max_gpus)) if max_gpus is not None else None)
        self.python = python or sys.executable
        self.use_fork_server = fork_server and python is None
        self.fork_server: ForkServer | None = None
        self.sentinel: Sentinel | None = None
        self.mpiexec = mpiexec
        self._launcher: str | None = None  # what runs as mpiexec (see launcher())
        self.transport = transport
        self.interface = interface

    def start(self) -> None:
        # The server's (or sentinel's) mark is the session's: the workers a fork server
        # forks keep it in their initial environment (what /proc shows), and so does any
        # process they fork without exec'ing.
        spec = WorkerSpec("forkserver", DEFAULT_OPTIONS,
                          {launch.MARK: self.session_mark} if self.session_mark else {})
        environment = worker_environment(spec, os.environ)
        if self.use_fork_server:
            self.fork_server = ForkServer(self.python, environment)
        elif self.session_mark:
            self.sentinel = Sentinel(environment)

    def close(self) -> None:
        if self.sentinel is not None:
            self.sentinel.close()
            self.sentinel = None
        if self.fork_server is not None:
            self.fork_server.close()
            self.fork_server = None

    def launch(self, spec: WorkerSpec) -> LaunchedWorker:
        if (self.fork_server is not None and spec.options.cores == 1
                and forkable(dict(spec.options.env), self.python)):
            try:
                return self.fork_server.fork(worker_environment(spec, os.environ),
                                             spec.options.cwd)
            except OSError as error:
                logger.warning("starting the worker without the fork server: %s", error)
        return super().launch(spec)

    def capacity(self) -> Capacity:
        cores = self.max_cores or len(os.sched_getaffinity(0))
        gpus = self.gpu_ids if self.gpu_ids is not None else detect_gpus()
        return Capacity(cpus=cores, gpu_ids=gpus)

    def address(self, runtime_dir: str) -> str:
        if self.transport == "ipc":
            return f"ipc://{runtime_dir}/session"
        return f"tcp://{self.interface}"

    def command(self, spec: WorkerSpec) -> list[str]:
        worker = [self.python, "-m", "remotefn.worker"]
        if spec.options.cores == 1:
            return worker
        launcher = self.launcher()
        flags = ["--oversubscribe"] if mpi_flavour(launcher) == "openmpi" else []
        return [launcher, *flags, "-n", str(spec.options.cores), *worker]

    def environment(self, spec: WorkerSpec) -> dict[str, str]:
        """MPI ranks talk over loopback only: nothing of a local MPI call listens on a
        network other users can reach."""
        if spec.options.cores == 1:
            return {}
        if mpi_flavour(self.launcher()) == "openmpi":
            return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                    "OMPI_MCA_btl_tcp_if_include": "lo", "OMPI_MCA_oob_tcp_if_include": "lo"}
        return {"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo", "FI_SOCKETS_IFACE": "lo"}

    def check_options(self, options: CallOptions) -> None:
        if options.cores > 1:
            if importlib.util.find_spec("mpi4py") is None:
                raise MissingDependency(f"cores={options.cores} runs an MPI function, but "
                                        f"mpi4py is not installed: {_MPI_HINT}")
            self.launcher()

    def launcher(self) -> str:
        """The mpiexec to use; raises MissingDependency when there is none.

        MPICH's fork-based launcher (``mpiexec.gforker``) talks to its ranks over pipes;
        hydra, MPICH's default, listens for them on every interface. So an MPICH mpiexec,
        found or given, runs as the gforker installed beside it; without one, hydra runs and
        a warning says what listens."""
        if self._launcher is not None:
            return self._launcher
        found = self.mpiexec
        if found is None:
            beside = os.path.join(os.path.dirname(self.python), "mpiexec")
            found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
        if found is None:
            raise MissingDependency(f"MPI functions (cores > 1) need mpiexec, and none was "
                                    f"found beside {self.python} or on PATH: {_MPI_HINT}")
        if mpi_flavour(found) == "mpich" and not found.endswith("gforker"):
            forker = os.path.join(os.path.dirname(os.path.realpath(found)), "mpiexec.gforker")
            if os.access(forker, os.X_OK):
                found = forker
            else:
                logger.warning("%s (MPICH's hydra) listens for its ranks on every network "
                               "interface of this node; MPI calls keep to loopback with an "
                               "MPICH that has mpiexec.gforker, or with Open MPI (the session "
                               "setting mpiexec=)", found)
        self._launcher = found
        return found


@functools.lru_cache(maxsize=None)
def mpi_flavour(mpiexec: str) -> str:
    """'openmpi' or 'mpich' (the default) for the launcher at ``mpiexec``."""
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "mpich"
    return "openmpi" if "Open MPI" in text or "OpenRTE" in text else "mpich"


@functools.lru_cache(maxsize=1)
def detect_gpus() -> tuple[int, ...]:
    """The indices of the GPUs ``nvidia-smi`` lists; none without it."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return ()
    try:
        out = subprocess.run([tool, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


BACKEND = LocalBackend
