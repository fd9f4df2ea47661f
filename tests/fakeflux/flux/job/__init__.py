"""Stand-in of flux.job: JobspecV1, FluxExecutor and its futures, cancel, kill, JobList."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any

import flux

_ids = itertools.count(1000)
_jobs: dict[int, "_Job"] = {}
_lock = threading.Lock()


class JobException(Exception):
    """A job exception event (severity 0 ends the job)."""


class JobspecV1:
    def __init__(self, command: list[str], num_tasks: int, cores_per_task: int,
                 gpus_per_task: int, num_nodes: int | None, exclusive: bool) -> None:
        self.command = command
        self.num_tasks = num_tasks
        self.cores_per_task = cores_per_task
        self.gpus_per_task = gpus_per_task
        self.num_nodes = num_nodes
        self.exclusive = exclusive
        self.cwd: str | None = None
        self.environment: dict[str, str] = {}
        self.shell_options: dict[str, Any] = {}
        self.stderr: str | None = None

    @classmethod
    def from_command(cls, command: list[str], num_tasks: int = 1, cores_per_task: int = 1,
                     gpus_per_task: int | None = None, num_nodes: int | None = None,
                     exclusive: bool = False) -> "JobspecV1":
        return cls(list(command), num_tasks, cores_per_task, gpus_per_task or 0, num_nodes,
                   exclusive)

    def setattr_shell_option(self, name: str, value: Any) -> None:
        self.shell_options[name] = value


class FluxExecutorFuture(concurrent.futures.Future):
    def __init__(self) -> None:
        super().__init__()
        self._jobid: int | None = None
        self._jobid_ready = threading.Event()

    def jobid(self, timeout: float | None = None) -> int:
        if not self._jobid_ready.wait(timeout):
            raise concurrent.futures.TimeoutError()
        if self._jobid is None:
            raise RuntimeError("job could not be submitted")
        return self._jobid


class _Job:
    def __init__(self, jobid: int, spec: JobspecV1, future: FluxExecutorFuture) -> None:
        self.jobid = jobid
        self.spec = spec
        self.future = future
        self.cores = spec.num_tasks * spec.cores_per_task
        self.gpus = spec.num_tasks * spec.gpus_per_task
        self.cancelled = False
        command = list(spec.command)
        environment = dict(spec.environment)
        if command[:2] == ["flux", "start"]:
            # A nested instance, as `flux start` makes one: the command runs inside an
            # instance of its own (its own FLUX_URI) that holds only the job's resources.
            command = command[2:]
            environment["FLUX_URI"] = f"local:///tmp/fakeflux-{os.getpid()}-job{jobid}"
            environment["FAKEFLUX_CORES"] = str(self.cores)
            environment["FAKEFLUX_GPUS"] = str(self.gpus)
        if spec.num_tasks > 1 and spec.shell_options.get("pmi") != "pmix":
            mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
            command = [mpiexec if os.access(mpiexec, os.X_OK) else shutil.which("mpiexec"),
                       "-n", str(spec.num_tasks), *command]
        stderr = open(spec.stderr, "wb") if spec.stderr else None
        count = spec.num_tasks if spec.shell_options.get("pmi") == "pmix" else 1
        self.processes = [subprocess.Popen(command, env=environment, cwd=spec.cwd,
                                           stdin=subprocess.DEVNULL, stderr=stderr,
                                           start_new_session=True) for _ in range(count)]
        if stderr:
            stderr.close()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        codes = [process.wait() for process in self.processes]
        with _lock:
            _jobs.pop(self.jobid, None)
        if self.cancelled:
            self.future.set_exception(JobException("job.exception type=cancel severity=0"))
        else:
            self.future.set_result(next((c for c in codes if c != 0), 0))

    def signal(self, signum: int) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                pass


class FluxExecutor:
    def __init__(self) -> None:
        self.closed = False

    def submit(self, spec: JobspecV1) -> FluxExecutorFuture:
        future = FluxExecutorFuture()
        future.set_running_or_notify_cancel()
        cores, gpus = flux.instance_size()
        if (spec.num_tasks * spec.cores_per_task > cores
                or spec.num_tasks * spec.gpus_per_task > gpus):
            future._jobid_ready.set()
            future.set_exception(JobException("unsatisfiable request"))
            return future
        jobid = next(_ids)
        future._jobid = jobid
        future._jobid_ready.set()
        with _lock:
            _jobs[jobid] = _Job(jobid, spec, future)
        return future

    def shutdown(self, wait: bool = True) -> None:
        self.closed = True


def cancel(handle: flux.Flux, jobid: int) -> None:
    with _lock:
        job = _jobs.get(jobid)
    if job is not None:
        job.cancelled = True
        job.signal(signal.SIGKILL)


def kill(handle: flux.Flux, jobid: int, signum: int = signal.SIGTERM) -> None:
    with _lock:
        job = _jobs.get(jobid)
    if job is not None:
        job.signal(signum)


def running_jobs() -> list[_Job]:
    with _lock:
        return list(_jobs.values())
