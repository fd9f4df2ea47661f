"""The local backend: workers are subprocesses of the session on this machine."""

from __future__ import annotations

import os
import sys

from .base import Backend, Capacity, WorkerSpec


class LocalBackend(Backend):
    """Workers as ``python -m remotefn.worker`` subprocesses.

    Settings: ``max_cores`` (cores the session may use at once; may exceed the machine),
    ``python`` (the interpreter that runs workers), ``transport`` (``"ipc"`` or ``"tcp"``) and
    ``interface`` (the address to bind with tcp).
    """

    name = "local"

    def __init__(self, *, max_cores: int | None = None, python: str | None = None,
                 transport: str = "ipc", interface: str = "127.0.0.1") -> None:
        if max_cores is not None and (isinstance(max_cores, bool) or not isinstance(max_cores, int)):
            raise TypeError(f"max_cores must be an int, got {max_cores!r}")
        if max_cores is not None and max_cores < 1:
            raise ValueError(f"max_cores must be >= 1, got {max_cores!r}")
        if python is not None and not isinstance(python, str):
            raise TypeError(f"python must be the path of an interpreter, got {python!r}")
        if transport not in ("ipc", "tcp"):
            raise ValueError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
        self.max_cores = max_cores
        self.python = python or sys.executable
        self.transport = transport
        self.interface = interface

    def capacity(self) -> Capacity:
        cores = self.max_cores or len(os.sched_getaffinity(0))
        return Capacity(cores=cores)

    def address(self, runtime_dir: str) -> str:
        if self.transport == "ipc":
            return f"ipc://{runtime_dir}/session"
        return f"tcp://{self.interface}"

    def command(self, spec: WorkerSpec) -> list[str]:
        return [self.python, "-m", "remotefn.worker"]


BACKEND = LocalBackend
