"""Backends decide how a worker process is launched and stopped; nothing else.

A backend is one module here exposing a class that implements :class:`~.base.Backend`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Capacity, LaunchedWorker, WorkerSpec

_MODULES = {"local": "local", "slurm": "slurm", "flux": "flux"}


def create(name: str, settings: dict[str, Any]) -> Backend:
    """Instantiate the backend called ``name`` with its settings.

    Raises ``ValueError`` for an unknown backend and ``TypeError`` for an unknown setting.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {name!r} ({type(name).__name__})")
    module = _MODULES.get(name)
    if module is None:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(_MODULES)}")
    backend_class = importlib.import_module(f"{__name__}.{module}").BACKEND
    return backend_class(**settings)


__all__ = ["Backend", "Capacity", "LaunchedWorker", "WorkerSpec", "create"]
