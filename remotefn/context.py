"""Which session a handle submits to: the innermost ``with`` session, else a default one.

The current session lives in a :class:`~contextvars.ContextVar`. With none open, the first call
creates a process-wide default session whose backend comes from the environment
(``REMOTEFN_BACKEND``, else ``FLUX_URI`` -> flux, ``SLURM_JOB_ID`` -> slurm, else local); it is
shut down at interpreter exit. Inside a worker the default is a local session confined to the
worker's own cores.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sessions import Session

current_session: ContextVar["Session | None"] = ContextVar("remotefn_session", default=None)

_lock = threading.Lock()
_default: "Session | None" = None
_confined: dict[str, Any] | None = None
_live: "weakref.WeakSet[Session]" = weakref.WeakSet()


def backend_from_environment(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> str:
    """The backend a default session uses in this environment."""
    chosen = environ.get("REMOTEFN_BACKEND")
    if chosen:
        return chosen
    if environ.get("FLUX_URI"):
        return "flux"
    if environ.get("SLURM_JOB_ID"):
        return "slurm"
    return "local"


#: Sessions inside an open ``with`` block, innermost last, for threads that were started
#: inside the block and so do not see its context variable.
_open_blocks: list["Session"] = []


def current() -> "Session":
    """The session a handle called now submits to: this context's ``with`` session, else the
    innermost ``with`` session open in any thread, else the default one (created if needed)."""
    session = current_session.get()
    if session is not None:
        return session
    with _lock:
        for session in reversed(_open_blocks):
            if not session.closed:
                return session
    return default()


def entered(session: "Session") -> None:
    with _lock:
        _open_blocks.append(session)


def exited(session: "Session") -> None:
    with _lock:
        for index in range(len(_open_blocks) - 1, -1, -1):
            if _open_blocks[index] is session:
                del _open_blocks[index]
                return


def default() -> "Session":
    """The process-wide default session (created on first use)."""
    global _default
    with _lock:
        if _default is None or _default.closed:
            from .sessions import Session

            if _confined is not None:
                _default = Session(**_confined)
            else:
                _default = Session(backend_from_environment())
        return _default


def confine_default(backend: str = "local", max_cores: int | None = None,
                    gpu_ids: list[int] | None = None) -> None:
    """Inside a worker: the default session uses only the worker's share of the allocation
    (a local session on its cores and GPUs, or the worker's own Flux instance)."""
    global _confined
    if backend == "flux":
        _confined = {"backend": "flux"}
    else:
        _confined = {"backend": "local", "max_cores": max_cores,
                     "gpu_ids": gpu_ids if gpu_ids is not None else []}


def confined() -> dict[str, Any] | None:
    """The settings of a session inside this worker's share, or None outside workers."""
    return _confined


def register(session: "Session") -> None:
    _live.add(session)


def shutdown_default() -> None:
    """Shut the default session down, waiting for its calls (runs at interpreter exit)."""
    with _lock:
        session = _default
    if session is not None:
        session.shutdown(wait=True)


def kill_local_sessions() -> None:
    """Stop every worker of every session in this process at once (last resort before exit)."""
    for session in list(_live):
        session._kill_workers()


atexit.register(shutdown_default)
