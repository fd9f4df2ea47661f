"""Pickling values for the wire: arguments, results and exceptions.

Small plain data goes through the standard pickler; anything else through cloudpickle (imported
on first need: a worker that only sees plain data starts faster without it), with large
buffers such as numpy arrays as frames of their own (pickle protocol 5), copied into
shared-memory segments (:mod:`.segments`) where a pool is given.
"""

from __future__ import annotations

import pickle
from typing import Any, Sequence

from ..errors import SerializationError
from .segments import SHARED_MIN, Pool, Segment

_PLAIN = frozenset([int, float, str, bytes, bool, type(None), complex])


def _plain(obj: Any, depth: int = 0) -> bool:
    """True for data the standard pickler handles exactly as cloudpickle does: scalars and
    small containers of them (anything else may need pickling by value)."""
    kind = type(obj)
    if kind in _PLAIN:
        return True
    if depth >= 2:
        return False
    if kind is tuple or kind is list:
        if len(obj) > 16:
            return False
        for item in obj:
            if type(item) not in _PLAIN and not _plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        if len(obj) > 16:
            return False
        for name, item in obj.items():
            if type(name) is not str or (type(item) not in _PLAIN
                                         and not _plain(item, depth + 1)):
                return False
        return True
    return False


def dumps(obj: Any, pool: Pool | None = None) -> list[Any]:
    """Pickle ``obj``; large buffers (numpy arrays) become extra frames: segments of
    ``pool`` from :data:`~.segments.SHARED_MIN` bytes, else bytes.

    Those buffers are copied here, once: what is sent is the value at this moment, even if
    the caller changes its arrays while it is still being sent.
    """
    if _plain(obj):
        return [pickle.dumps(obj, protocol=5)]
    import cloudpickle  # imported on first need: a worker starts faster without it

    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [data, *(_copy(buffer.raw(), pool) for buffer in buffers)]


def _copy(buffer: memoryview, pool: Pool | None) -> Any:
    if pool is not None and buffer.nbytes >= SHARED_MIN:
        segment = pool.copy(buffer)
        if segment is not None:
            return segment
    return bytes(buffer)


def release(frames: Sequence[Any]) -> None:
    """Give the segments among ``frames`` back to their pool (the frames are sent and no
    longer needed)."""
    for frame in frames:
        if type(frame) is Segment:
            frame.release()


def loads(frames: Sequence[Any]) -> Any:
    """Unpickle what :func:`dumps` produced. Arrays use the received frames' memory, which
    is writable; read-only buffers are copied so that arrays always arrive writable."""
    buffers = [frame if not memoryview(frame).readonly else bytearray(frame)
               for frame in frames[1:]]
    return pickle.loads(frames[0], buffers=buffers)


def dumps_arguments(function: str, args: tuple, kwargs: dict[str, Any],
                    pool: Pool | None = None) -> Sequence[Any]:
    """:func:`dumps` of a call's ``(args, kwargs)``; raises
    :class:`~remotefn.SerializationError` naming the first argument that does not pickle."""
    if not kwargs and len(args) <= 16:  # the common case: a few scalars, checked inline
        for item in args:
            if type(item) not in _PLAIN:
                break
        else:
            return (pickle.dumps((args, kwargs), protocol=5),)  # a tuple: untracked by gc
    try:
        return dumps((args, kwargs), pool)
    except Exception as error:
        import cloudpickle

        culprit = "the arguments"
        for where, value in [*((f"argument {i}", a) for i, a in enumerate(args)),
                             *((f"keyword argument {k!r}", v) for k, v in kwargs.items())]:
            try:
                cloudpickle.dumps(value)
            except Exception:
                culprit = f"{where} ({type(value).__name__})"
                break
        raise SerializationError(f"cannot send {culprit} of {function} to a worker: "
                                 f"{type(error).__name__}: {error}") from error
