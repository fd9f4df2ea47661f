"""Which session a call goes to when none is named: the innermost ``with`` session, else the
default one, which an earlier call created or :func:`set_default` chose (see
:mod:`.registry`). A default session that no one chose detects its backend from the
environment (see :func:`remotefn.backends.detect`).
"""

from __future__ import annotations

import os

from .. import backends
from . import registry
from .session import Session


def current() -> Session:
    """The session a handle called now submits to: the innermost ``with`` session (in this
    context, else in any thread), else the default one, which this creates on first use.
    Does not block."""
    session = registry.innermost()
    if session is not None:
        return session
    return default()


def default() -> Session:
    """The process-wide default session (created on first use, shut down at exit)."""
    with registry.lock:
        session = registry.default_session
        if session is None or session.closed:
            confined = registry.confined()
            session = Session(**confined) if confined is not None \
                else Session(backends.detect(os.environ))
            registry.default_session = session
        return session


def set_default(session: Session) -> Session:
    """Make ``session`` the default: handles called outside any ``with`` block submit to it
    (instead of to a default session of their own) until it is shut down; at interpreter exit
    it is shut down, waiting for its calls. Returns the session.

    Raises ``RuntimeError`` when another open session is the default already, whether
    activated or started by an earlier call: shut that one down first.
    """
    if not isinstance(session, Session):
        raise TypeError(f"set_default() takes a Session, got {session!r}")
    registry.make_default(session)
    return session


__all__ = ["current", "default", "set_default"]
