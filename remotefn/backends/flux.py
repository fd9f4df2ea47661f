"""The Flux backend: each worker is a Flux job, submitted with flux-python.

Who uses Flux from which thread:

    hub thread ----- launch -----> FluxExecutor.submit --> executor thread (its own handle):
                                    submits, completes the job futures, runs their callbacks
    hub thread ----- cancel, kill, output of a failed job --+
    hub thread ----- capacity, address (session opening)  --+--> self.handle, under self.lock
    any thread ----- describe (session.resources())       --+

A Flux handle is not safe to share between threads, so the backend's one handle is only used
under its lock; the executor's thread keeps a handle of its own.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
from dataclasses import replace
from typing import Any

from ..errors import MissingDependency
from ..options import CallOptions, check_int
from ..protocol import launch
from .base import (Backend, Capacity, LaunchedWorker, WorkerSpec, default_interface,
                   describe_exit, worker_environment)

PMI_MODES = ("simple", "pmi2", "pmix")
#: A job of several ranks ends this long after one rank exits. Not ``exit-on-error``: that
#: kills the job before the shells have forwarded what the dead rank wrote to stderr.
EXIT_TIMEOUT = "2s"


def build_jobspec(jobspec_class: Any, options: CallOptions, command: list[str],
                  environment: dict[str, str], pmi: str) -> Any:
    """The jobspec of one worker (a pure function of its arguments).

    ``jobspec_class`` is ``flux.job.JobspecV1``; ranks become tasks, threads cores per task.
    A job of several ranks ends EXIT_TIMEOUT after one of them exits (the shell's
    ``exit-timeout``; Flux's default is 30 s). A nested call is one process (the call's own Flux
    instance runs it), however many cores its instance has. Raises what
    ``JobspecV1.from_command`` raises for combinations Flux rejects.
    """
    extras = dict(options.extras)
    arguments: dict[str, Any] = {"num_tasks": options.cores,
                                 "cores_per_task": options.threads_per_core}
    if options.gpus:
        arguments["gpus_per_task"] = options.gpus
    if "nodes" in extras:
        arguments["num_nodes"] = extras["nodes"]
    if extras.get("exclusive"):
        arguments["exclusive"] = True
    jobspec = jobspec_class.from_command(command, **arguments)
    jobspec.cwd = options.cwd or os.getcwd()
    jobspec.environment = environment
    if options.cores > 1:
        jobspec.setattr_shell_option("pmi", pmi)
        jobspec.setattr_shell_option("exit-timeout", EXIT_TIMEOUT)
    return jobspec


def job_name(jobid: Any) -> str:
    """A job id as Flux prints it (f58, e.g. ``ƒ2Xb7cz``)."""
    from flux.job import JobID

    return JobID(jobid).f58


def describe_status(status: int | None) -> str:
    """What a Flux job's exit status means: Flux reports a task killed by signal N as the
    exit code 128+N."""
    if status is not None and status > 128:
        try:
            name = signal.Signals(status - 128).name
        except ValueError:
            return describe_exit(status)
        return f"signal {status - 128} ({name}), exit status {status}"
    return describe_exit(status)


class FluxWorker(LaunchedWorker):
    """A Flux job. Its end is signalled through a pipe written by the job's done callback,
    so the hub watches it like any process."""

    def __init__(self, backend: "FluxBackend", future: Any) -> None:
        self.backend = backend
        self.future = future
        self.pid = None
        self.stderr_fd: int | None = None
        self.exit_fd: int | None
        self._wake: int | None
        self.exit_fd, self._wake = os.pipe()
        future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        wake = self._wake
        if wake is None:  # closed: nobody watches any more
            return
        try:
            os.write(wake, b"x")
        except OSError:
            pass

    def describe(self) -> dict[str, Any]:
        return {"flux_job": self.jobid()}

    def jobid(self) -> Any:
        try:
            return self.future.jobid(timeout=0)
        except Exception:
            return None

    def _error(self) -> BaseException | None:
        """The job's exception (Flux's cancel, alloc, exec...), once the job has ended."""
        if not self.future.done() or self.future.cancelled():
            return None
        return self.future.exception()

    def poll(self) -> int | None:
        if not self.future.done():
            return None
        if self.future.cancelled() or self._error() is not None:
            return -signal.SIGKILL
        status = int(self.future.result())
        return -(status - 128) if status > 128 else status

    def describe_exit(self, code: int | None) -> str:
        jobid = self.jobid()
        where = f"Flux job {job_name(jobid)}" if jobid is not None else "a Flux job"
        if self.future.cancelled():
            return f"{where} cancelled before Flux accepted it"
        error = self._error()
        if error is not None:
            kind = getattr(error, "type", None)
            if kind is None:
                return f"{where} failing: {error}"
            note = getattr(error, "note", "")
            return f"Flux's exception {kind}{': ' + note if note else ''} ({where})"
        status = int(self.future.result())
        return f"{describe_status(status)} ({where})"

    def final_stderr(self) -> bytes:
        """The job's stderr, read from Flux (any node's tasks), when the job failed."""
        jobid = self.jobid()
        if jobid is None or self.poll() == 0:
            return b""
        return self.backend.stderr_of(jobid).encode()

    def signal(self, signum: int) -> None:
        if self.future.done():
            return
        jobid = self.jobid()
        if jobid is None:
            self.future.cancel()
            return
        self.backend.signal_job(jobid, signum)

    def wait(self, timeout: float) -> int | None:
        try:
            self.future.exception(timeout)
        except Exception:
            pass
        return self.poll()

    def close(self) -> None:
        for fd in (self.exit_fd, self._wake):
            if fd is not None:
                os.close(fd)
        self.exit_fd = self._wake = None  # type: ignore[assignment]


class FluxBackend(Backend):
    """Workers as Flux jobs in the instance at ``FLUX_URI``.

    Settings: ``pmi`` (``"simple"``, the default, ``"pmi2"`` or ``"pmix"``), ``python`` (the
    workers' interpreter), ``interface`` (the address workers connect to; default: this node's
    address) and ``max_cores`` (use fewer cores than the instance has).
    """

    name = "flux"

    def __init__(self, *, pmi: str = "simple", python: str | None = None,
                 interface: str | None = None, max_cores: int | None = None) -> None:
        if pmi not in PMI_MODES:
            raise ValueError(f"pmi must be one of {', '.join(PMI_MODES)}, got {pmi!r}")
        if max_cores is not None:
            check_int("max_cores", max_cores, 1)
        try:
            import flux
            import flux.job
            import flux.resource.list  # noqa: F401
        except ImportError as error:
            raise MissingDependency(
                f"the flux backend needs flux-python and a Flux instance ({error}); run the "
                "script under `flux start`, `flux alloc` or `flux batch`") from None
        self.flux = flux
        self.handle = flux.Flux()
        self.lock = threading.Lock()
        self.pmi = pmi
        self.python = python or sys.executable
        self.interface = interface or default_interface()
        self.max_cores = max_cores
        self.executor: Any = None

    def start(self) -> None:
        import flux.job

        # The executor's thread picks up submitted jobs every poll_interval (0.1 s by default):
        # each one-shot call would wait for it once a core frees.
        self.executor = flux.job.FluxExecutor(poll_interval=0.01)
        # flux-python joins the executor's threads at interpreter exit, and they run until
        # every job has ended; but a session still open then (the default session, one never
        # shut down) stops its workers only in remotefn's own exit hook, which runs later: the
        # script would never exit. The threads are daemon threads and remotefn ends its jobs
        # itself (the session's shutdown, or each worker's watchdog once the session is gone),
        # so the executor needs no join at exit.
        finalizer = getattr(self.executor, "_finalizer", None)
        if finalizer is not None:
            finalizer.atexit = False

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None

    def resources(self) -> Any:
        from flux.resource.list import resource_list

        with self.lock:
            return resource_list(self.handle).get()

    def signal_job(self, jobid: Any, signum: int) -> None:
        """Cancel the job (SIGKILL) or send it ``signum``; nothing if it ended meanwhile."""
        import flux.job

        with self.lock:
            try:
                if signum == signal.SIGKILL:
                    flux.job.cancel(self.handle, jobid)
                else:
                    flux.job.kill(self.handle, jobid, signum)
            except OSError:  # the job ended meanwhile
                pass

    def stderr_of(self, jobid: Any) -> str:
        """What the tasks of an ended job wrote to stderr, from Flux's output eventlog."""
        from flux.job.output import job_output

        with self.lock:
            try:
                return job_output(self.handle, jobid, nowait=True).stderr
            except OSError:  # the job never started
                return ""

    def capacity(self) -> Capacity:
        view = self.resources()
        cores = min(view.all.ncores, self.max_cores or view.all.ncores)
        return Capacity(cpus=cores, gpu_ids=tuple(range(view.all.ngpus)))

    def describe(self) -> dict[str, Any]:
        view = self.resources()
        return {"uri": os.environ.get("FLUX_URI"), "nodes": view.all.nnodes,
                "cores_all": view.all.ncores, "cores_free": view.free.ncores,
                "cores_allocated": view.allocated.ncores, "gpus_all": view.all.ngpus,
                "gpus_free": view.free.ngpus, "gpus_allocated": view.allocated.ngpus}

    def address(self, runtime_dir: str) -> str:
        """The session's address; raises ``ValueError`` when it is a loopback address and the
        instance spans several hosts, whose workers could never connect."""
        try:
            loopback = ipaddress.ip_address(self.interface).is_loopback
        except ValueError:  # a host or interface name
            loopback = self.interface == "localhost"
        if loopback:
            hosts = set(self.resources().all.nodelist)
            if len(hosts) > 1:
                raise ValueError(
                    f"the address workers connect to, {self.interface}, is a loopback address "
                    f"that the other nodes of this Flux instance ({', '.join(sorted(hosts))}) "
                    "cannot reach; pass interface= an address of this node they can reach")
        return f"tcp://{self.interface}"

    def command(self, spec: WorkerSpec) -> list[str]:
        worker = [self.python, "-m", "remotefn.worker"]
        return ["flux", "start", *worker] if spec.options.nested else worker

    def check_extras(self, extras: Any) -> None:
        for name, value in extras:
            if name not in ("nodes", "exclusive"):
                raise ValueError(f"unknown flux extra {name!r}; valid: nodes, exclusive")
            if name == "nodes" and (isinstance(value, bool) or not isinstance(value, int)
                                    or value < 1):
                raise ValueError(f"extras['nodes'] must be an int >= 1, got {value!r}")

    def check_options(self, options: CallOptions) -> None:
        """Raise ``ValueError`` for a ``cwd`` that does not exist, and for options Flux's own
        jobspec rules reject, before a job is submitted."""
        import flux.job

        if options.cwd is not None and not os.path.isdir(options.cwd):
            raise ValueError(f"cwd {options.cwd!r} does not exist or is not a directory")
        try:
            build_jobspec(flux.job.JobspecV1, options, ["true"], {}, self.pmi)
        except (ValueError, TypeError) as error:
            raise ValueError(f"Flux rejects cores={options.cores} with "
                             f"extras={dict(options.extras)}: {error}") from None

    def launch(self, spec: WorkerSpec) -> LaunchedWorker:
        import flux.job

        assert self.executor is not None
        spec = replace(spec, gpu_ids=())  # the Flux shell sets CUDA_VISIBLE_DEVICES per task
        environment = worker_environment(spec, os.environ)
        environment[launch.PMI] = self.pmi
        pmi = self.pmi
        if spec.options.nested:
            # The job's tasks are the brokers of the call's own instance (they bootstrap over
            # the shell's simple PMI); the call runs once, as that instance's initial program.
            environment[launch.NESTED] = "flux"
            environment[launch.RANKS] = "1"
            pmi = "simple"
        jobspec = build_jobspec(flux.job.JobspecV1, spec.options, self.command(spec),
                                environment, pmi)
        return FluxWorker(self, self.executor.submit(jobspec))


BACKEND = FluxBackend
