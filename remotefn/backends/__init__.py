"""Backends: how a worker process is launched and stopped, and nothing else.

A backend is one module here whose ``BACKEND`` class implements :class:`~.base.Backend`,
plus one row in :data:`BACKENDS`. May import: :mod:`remotefn.protocol` (the launch
variables), :mod:`remotefn.options` and :mod:`remotefn.errors`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterable, Mapping

from .base import Backend, Capacity, LaunchedWorker, Node, WorkerSpec

#: Every backend: its name, its module here, and the environment variable that says a script
#: runs inside its allocation (None: never detected). A default session takes the first
#: backend whose variable is set, so a Flux instance inside a SLURM job is seen as Flux.
BACKENDS: tuple[tuple[str, str, str | None], ...] = (
    ("flux", "flux", "FLUX_URI"),
    ("slurm", "slurm", "SLURM_JOB_ID"),
    ("local", "local", None),
)
_MODULES = {name: module for name, module, _ in BACKENDS}


def detect(environ: Mapping[str, str]) -> str:
    """The backend a default session uses in this environment: ``REMOTEFN_BACKEND`` if set,
    else the first backend whose allocation variable is set, else ``"local"``."""
    chosen = environ.get("REMOTEFN_BACKEND")
    if chosen:
        return chosen
    for name, _, variable in BACKENDS:
        if variable is not None and environ.get(variable):
            return name
    return "local"


def create(name: str, settings: dict[str, Any], also_valid: Iterable[str] = ()) -> Backend:
    """Instantiate the backend called ``name`` with its settings.

    Raises ``ValueError`` for an unknown backend and ``TypeError`` for an unknown setting,
    naming the valid ones: the backend's and ``also_valid`` (the caller's own).
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {name!r} ({type(name).__name__})")
    module = _MODULES.get(name)
    if module is None:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(_MODULES)}")
    backend_class = importlib.import_module(f"{__name__}.{module}").BACKEND
    parameters = inspect.signature(backend_class).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        valid = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
        unknown = [key for key in settings if key not in valid]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise TypeError(f"unknown session setting{'s' if len(unknown) > 1 else ''} {names} "
                            f"for the {name} backend; valid settings: "
                            f"{', '.join(sorted([*also_valid, *valid]))}")
    return backend_class(**settings)


__all__ = ["BACKENDS", "Backend", "Capacity", "LaunchedWorker", "Node", "WorkerSpec", "create",
           "detect"]
