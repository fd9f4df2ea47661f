"""remotefn: run Python functions on HPC allocations with one decorator.

>>> from remotefn import remote
>>> @remote
... def square(x):
...     return x * x
>>> square(4).result()
16

Public names are imported on first use, so a worker process loads only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: Every public name and the module it comes from; ``__all__`` is made from it.
_EXPORTS = {
    "remote": "decorator", "RemoteFunction": "decorator",
    "session": "sessions.session", "Session": "sessions.session",
    "current": "sessions.defaults", "set_default": "sessions.defaults",
    "RemoteFuture": "future", "CallInfo": "future", "gather": "future",
    "CallOptions": "options", "progress": "progress",
    "RemoteFnError": "errors", "WorkerDied": "errors", "WorkerStartError": "errors",
    "CallTimeout": "errors", "DependencyError": "errors", "SerializationError": "errors",
    "ProtocolError": "errors", "RemoteError": "errors", "RemoteTraceback": "errors",
    "MissingDependency": "errors",
}

if TYPE_CHECKING:
    from .decorator import RemoteFunction, remote
    from .errors import (CallTimeout, DependencyError, MissingDependency, ProtocolError,
                         RemoteError, RemoteFnError, RemoteTraceback, SerializationError,
                         WorkerDied, WorkerStartError)
    from .future import CallInfo, RemoteFuture, gather
    from .options import CallOptions
    from .progress import progress
    from .sessions.defaults import current, set_default
    from .sessions.session import Session, session


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'remotefn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted([*_EXPORTS, "__version__"])
