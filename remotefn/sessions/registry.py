"""The session registry: which session a handle submits to, and the sessions alive here.

The current session lives in a :class:`~contextvars.ContextVar`; threads that do not see it
(started inside a ``with`` block) find the innermost open ``with`` session. The process-wide
default session is kept here once :func:`remotefn.sessions.defaults.current` has created it,
or :func:`make_default` (``Session.activate``, ``remotefn.set_default``) has chosen one.
Inside a worker, sessions are confined to the worker's own share (:func:`confine_default`).

Imported by workers, so it imports nothing heavy and never the session module itself.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

current_session: ContextVar["Session | None"] = ContextVar("remotefn_session", default=None)

#: Guards the default session and the open blocks.
lock = threading.Lock()
#: The process-wide default session (made on first use, or activated), set by the session
#: module under ``lock``.
default_session: "Session | None" = None
_confined: dict[str, Any] | None = None
_live: "weakref.WeakSet[Session]" = weakref.WeakSet()
#: Sessions inside an open ``with`` block, innermost last, for threads that were started
#: inside the block and so do not see its context variable.
_open_blocks: list["Session"] = []


def innermost() -> "Session | None":
    """This context's ``with`` session, else the innermost ``with`` session open in any
    thread, else None."""
    session = current_session.get()
    if session is not None:
        return session
    with lock:
        for session in reversed(_open_blocks):
            if not session.closed:
                return session
    return None


def open_blocks() -> list["Session"]:
    """The sessions whose ``with`` block is open, innermost last."""
    with lock:
        return list(_open_blocks)


def entered(session: "Session") -> None:
    with lock:
        _open_blocks.append(session)


def exited(session: "Session") -> None:
    with lock:
        for index in range(len(_open_blocks) - 1, -1, -1):
            if _open_blocks[index] is session:
                del _open_blocks[index]
                return


def make_default(session: "Session") -> None:
    """Make ``session`` the default; ``RuntimeError`` when it was shut down, or when another
    open session is the default already (activated, or started by an earlier call)."""
    global default_session
    if session.closed:
        raise RuntimeError(f"{session!r} was shut down; open a new session to activate")
    with lock:
        previous = default_session
        if previous is not None and previous is not session and not previous.closed:
            raise RuntimeError(
                f"{previous!r} is already the default session; shut it down first "
                "(remotefn.current().shutdown() outside any with block), or use "
                "'with remotefn.session(...):' to scope a session to a block")
        default_session = session


def confine_default(backend: str = "local", max_cores: int | None = None,
                    gpu_ids: list[int] | None = None) -> None:
    """Inside a worker: sessions opened without a backend use only the worker's share of the
    allocation (a local session on its CPUs and GPUs, or the worker's own Flux instance)."""
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
    """Shut the default session down (runs at interpreter exit): wait for its calls, or, when
    the script is ending because of Ctrl-C, stop every worker at once."""
    with lock:
        session = default_session
    if session is None:
        return
    interrupted = getattr(sys, "last_type", None)
    if isinstance(interrupted, type) and issubclass(interrupted, KeyboardInterrupt):
        session._abort()
    else:
        session.shutdown(wait=True)


def kill_local_sessions() -> None:
    """Stop every worker of every session in this process at once (last resort before exit)."""
    for session in list(_live):
        session._kill_workers()


atexit.register(shutdown_default)
