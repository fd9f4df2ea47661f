"""The Flux backend: each worker is a Flux job, submitted with flux-python."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from typing import Any

from ..errors import MissingDependency
from ..options import CallOptions, check_int
from ..protocol import launch
from .base import (Backend, Capacity, LaunchedWorker, WorkerSpec, default_interface,
                   worker_environment)

PMI_MODES = ("simple", "pmi2", "pmix")


def build_jobspec(jobspec_class: Any, options: CallOptions, command: list[str],
                  environment: dict[str, str], pmi: str, stderr: str | None = None) -> Any:
    """The jobspec of one worker (a pure function of its arguments).

    ``jobspec_class`` is ``flux.job.JobspecV1``; ranks become tasks, threads cores per task.
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
    if stderr is not None:
        jobspec.stderr = stderr
    return jobspec


class FluxWorker(LaunchedWorker):
    """A Flux job. Its end is signalled through a pipe written by the job's done callback,
    so the hub watches it like any process."""

    def __init__(self, backend: "FluxBackend", future: Any, stderr_path: str) -> None:
        self.backend = backend
        self.future = future
        self.pid = None
        self.stderr_fd = None
        self.stderr_path = stderr_path
        self.exit_fd, self._wake = os.pipe()
        future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        try:
            os.write(self._wake, b"x")
        except OSError:
            pass

    def describe(self) -> dict[str, Any]:
        return {"flux_job": self.jobid()}

    def jobid(self) -> Any:
        try:
            return self.future.jobid(timeout=0)
        except Exception:
            return None

    def poll(self) -> int | None:
        if not self.future.done():
            return None
        if self.future.cancelled() or self.future.exception() is not None:
            return -signal.SIGKILL
        return int(self.future.result())

    def final_stderr(self) -> bytes:
        text = b""
        try:
            with open(self.stderr_path, "rb") as file:
                text = file.read()
        except OSError:
            pass
        if self.future.done() and not self.future.cancelled() and self.future.exception():
            text += f"flux: {self.future.exception()}\n".encode()
        return text

    def signal(self, signum: int) -> None:
        if self.future.done():
            return
        jobid = self.jobid()
        if jobid is None:
            self.future.cancel()
            return
        import flux.job

        try:
            if signum == signal.SIGKILL:
                flux.job.cancel(self.backend.handle, jobid)
            else:
                flux.job.kill(self.backend.handle, jobid, signum)
        except Exception:  # the job ended meanwhile
            pass

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
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


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
        self.pmi = pmi
        self.python = python or sys.executable
        self.interface = interface or default_interface()
        self.max_cores = max_cores
        self.executor: Any = None
        self.output_dir: str | None = None

    def start(self) -> None:
        import flux.job

        self.executor = flux.job.FluxExecutor()
        self.output_dir = tempfile.mkdtemp(prefix="remotefn-flux-")

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None
        if self.output_dir is not None:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def resources(self) -> Any:
        from flux.resource.list import resource_list

        return resource_list(self.handle).get()

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

    def launch(self, spec: WorkerSpec) -> LaunchedWorker:
        import flux.job

        assert self.executor is not None and self.output_dir is not None
        spec = replace(spec, gpu_ids=())  # the Flux shell sets CUDA_VISIBLE_DEVICES per task
        environment = worker_environment(spec, os.environ)
        environment[launch.PMI] = self.pmi
        if spec.options.nested:
            environment[launch.NESTED] = "flux"
        stderr = os.path.join(self.output_dir, f"{spec.worker_id}.err")
        jobspec = build_jobspec(flux.job.JobspecV1, spec.options, self.command(spec),
                                environment, self.pmi, stderr)
        return FluxWorker(self, self.executor.submit(jobspec), stderr)


BACKEND = FluxBackend
