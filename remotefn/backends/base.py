"""What every backend provides, and the process handle the Popen-based backends share."""

from __future__ import annotations

import abc
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..options import CallOptions
from ..protocol import launch

#: Variables set to ``threads_per_core`` in every worker, unless the call's ``env`` sets them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Node:
    """One node of an allocation: its name, CPUs, GPU ids and memory in MB (0: not counted)."""

    name: str
    cpus: int
    gpu_ids: tuple[int, ...] = ()
    memory: int = 0


@dataclass(frozen=True)
class Capacity:
    """What a session may use at once; ``nodes`` where it knows them one by one (then a
    worker's ranks are placed on them), and the memory a CPU brings with it, in MB."""

    cpus: int
    gpu_ids: tuple[int, ...] = ()
    nodes: tuple[Node, ...] = ()
    memory_per_cpu: int = 0


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a backend needs to launch one worker."""

    worker_id: str
    options: CallOptions
    #: remotefn's own variables (address, secret, worker id); never shown on a command line.
    session_env: Mapping[str, str] = field(default_factory=dict)
    #: GPUs the ledger gave this worker, ``options.gpus`` per rank in rank order.
    gpu_ids: tuple[int, ...] = ()
    #: The nodes the ledger placed the worker on, for backends that name them.
    nodes: tuple[str, ...] = ()


def worker_environment(spec: WorkerSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: ``base`` plus the caller's import path, thread counts, the
    call's ``env`` and remotefn's own variables (address, secret, ranks, GPU ids per rank), in
    that order of precedence (last wins)."""
    environment = {k: v for k, v in base.items() if not k.startswith("REMOTEFN_")}
    if "REMOTEFN_BACKEND" in base:
        environment["REMOTEFN_BACKEND"] = base["REMOTEFN_BACKEND"]
    path = [entry or os.getcwd() for entry in sys.path]
    if base.get("PYTHONPATH"):
        path.append(base["PYTHONPATH"])
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    threads = str(spec.options.threads_per_core)
    environment.update({name: threads for name in THREAD_VARIABLES})
    environment.update(spec.options.env)
    environment.update(spec.session_env)
    environment[launch.RANKS] = str(spec.options.cores)
    if spec.options.gpus and spec.gpu_ids:
        per_rank = spec.options.gpus
        ids = [str(i) for i in spec.gpu_ids]
        environment[launch.GPUS] = ";".join(",".join(ids[r * per_rank:(r + 1) * per_rank])
                                         for r in range(spec.options.cores))
    return environment


def default_interface() -> str:
    """An address of this node that the other nodes of the allocation can reach."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def describe_exit(returncode: int | None) -> str:
    """'exit code 3' or 'signal 9 (SIGKILL)' for a Popen return code."""
    if returncode is None:
        return "an unknown exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


class LaunchedWorker:
    """A worker process started with Popen, watched through a pidfd and a stderr pipe."""

    #: Read end of the worker's status pipe (ids of the calls it finished), if it has one.
    status_fd: int | None = None
    #: The session's end of a socket pair to the worker, for workers that talk over one
    #: instead of the session's ZeroMQ socket (see :mod:`remotefn.protocol.socketpair`).
    connection: socket.socket | None = None

    def __init__(self, popen: subprocess.Popen[bytes], status_fd: int | None = None) -> None:
        self.popen = popen
        self.pid: int | None = popen.pid
        self.exit_fd: int | None = os.pidfd_open(popen.pid) if hasattr(os, "pidfd_open") else None
        self.stderr_fd: int | None = popen.stderr.fileno() if popen.stderr else None
        self.status_fd = status_fd

    def poll(self) -> int | None:
        """The return code if the process has exited (and is reaped now), else None."""
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group (the worker and what it started)."""
        if self.popen.returncode is not None:
            return
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            try:
                self.popen.send_signal(signum)
            except ProcessLookupError:
                pass

    def describe(self) -> dict[str, Any]:
        """How the scheduler knows this worker (a pid, a job id), for ``resources()``."""
        return {"pid": self.pid}

    def describe_exit(self, code: int | None) -> str:
        """How the worker ended, given :meth:`poll`'s return code ('exit code 3', 'signal 9
        (SIGKILL)'); a backend that knows more (its scheduler's reason, a job id) says it."""
        return describe_exit(code)

    def held(self) -> str | None:
        """Why the scheduler holds this worker back before it runs, or None: it is not held,
        or the backend cannot tell. May block for as long as asking the scheduler takes."""
        return None

    def final_stderr(self) -> bytes:
        """What the worker wrote to stderr that did not come through ``stderr_fd``."""
        return b""

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the exit; the return code or None."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None
        if self.popen.stderr is not None:
            self.popen.stderr.close()
        self.stderr_fd = None
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None


class Backend(abc.ABC):
    """How workers are launched and stopped; the session does everything else."""

    name: str = ""
    #: Calls run on the session's host, as its own descendants: when the session kills a
    #: worker or ends, it ends what the calls started there itself (``launch.end_marked``).
    #: Elsewhere the scheduler owns the calls' processes, and each worker ends its own.
    runs_calls_here: bool = False
    #: What the marks of this session's workers start with (``launch.session_of``); set by
    #: the session before :meth:`start`.
    session_mark: str = ""

    def start(self) -> None:
        """Prepare to launch workers (called once, when the session opens; must not block)."""

    def close(self) -> None:
        """Release what :meth:`start` prepared (called once every worker has exited)."""

    @abc.abstractmethod
    def capacity(self) -> Capacity:
        """CPUs and GPUs the session may use at once."""

    @abc.abstractmethod
    def address(self, runtime_dir: str) -> str:
        """The ZeroMQ address the session binds; workers connect to it."""

    @abc.abstractmethod
    def command(self, spec: WorkerSpec) -> list[str]:
        """The command line that starts the worker for ``spec`` (a pure function)."""

    def describe(self) -> dict[str, Any]:
        """What this backend knows of its allocation, for ``session.resources()``."""
        return {}

    def failed_nodes(self, stderr: str) -> list[str]:
        """The nodes a dead worker's launcher reported as failed in ``stderr`` (a pure
        function); the session stops placing workers there."""
        return []

    def check_options(self, options: CallOptions) -> None:
        """Raise at submission when this backend cannot run calls with ``options``."""

    def environment(self, spec: WorkerSpec) -> dict[str, str]:
        """Variables this backend adds to a worker's environment."""
        return {}

    def check_extras(self, extras: Sequence[tuple[str, Any]]) -> None:
        """Raise ``ValueError`` for an ``extras`` entry this backend does not understand."""
        if extras:
            names = ", ".join(name for name, _ in extras)
            raise ValueError(f"the {self.name} backend takes no extras, got: {names}")

    def launch(self, spec: WorkerSpec) -> LaunchedWorker:
        """Start the worker; raises ``OSError`` when the command cannot be run.

        A single-rank worker started here also gets a status pipe: it writes the id of each
        call it finishes there, synchronously, so that the session knows exactly which call
        was running if the worker dies (and may therefore send it several calls at once).
        """
        environment = worker_environment(spec, {**os.environ, **self.environment(spec)})
        status_read: int | None = None
        status_write: int | None = None
        if spec.options.cores == 1:
            status_read, status_write = os.pipe()
            environment[launch.STATUS_FD] = str(status_write)
            os.set_blocking(status_read, False)
        try:
            popen = subprocess.Popen(
                self.command(spec), env=environment, cwd=spec.options.cwd,
                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                pass_fds=(status_write,) if status_write is not None else ())
        except BaseException:
            if status_read is not None:
                os.close(status_read)
            raise
        finally:
            if status_write is not None:
                os.close(status_write)
        return LaunchedWorker(popen, status_read)
