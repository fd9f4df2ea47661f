"""Futures inside call arguments: finding them, waiting for them, replacing them by results.

Arguments are searched at any depth through lists, tuples (named tuples too), dicts, sets and
frozensets. Waiting is driven by ``add_done_callback``: no thread and no polling per call.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future
from functools import singledispatch
from typing import Any

from ..errors import DependencyError

_ATOMIC = (int, float, str, bytes, bool, type(None), complex)


@singledispatch
def _gather(obj: Any, found: list[Future]) -> None:
    """Append the futures inside ``obj`` to ``found``."""


@_gather.register
def _(obj: Future, found: list[Future]) -> None:
    found.append(obj)


@_gather.register(list)
@_gather.register(tuple)
@_gather.register(set)
@_gather.register(frozenset)
def _(obj: Any, found: list[Future]) -> None:
    for item in obj:
        if type(item) not in _ATOMIC:
            _gather(item, found)


@_gather.register
def _(obj: dict, found: list[Future]) -> None:
    for key, value in obj.items():
        if type(key) not in _ATOMIC:
            _gather(key, found)
        if type(value) not in _ATOMIC:
            _gather(value, found)


def find_futures(args: tuple, kwargs: dict[str, Any]) -> list[Future]:
    """The distinct futures in ``args`` and ``kwargs``, in order of first appearance."""
    found: list[Future] = []
    for item in args:
        if type(item) not in _ATOMIC:
            _gather(item, found)
    for item in kwargs.values():
        if type(item) not in _ATOMIC:
            _gather(item, found)
    return list({id(f): f for f in found}.values())


@singledispatch
def resolve(obj: Any) -> Any:
    """A copy of ``obj`` with every (done) future replaced by its result."""
    return obj


@resolve.register
def _(obj: Future) -> Any:
    return obj.result()


@resolve.register
def _(obj: list) -> list:
    return [resolve(item) for item in obj]


@resolve.register
def _(obj: tuple) -> tuple:
    items = [resolve(item) for item in obj]
    if hasattr(obj, "_fields"):
        return type(obj)(*items)
    return type(obj)(items) if type(obj) is not tuple else tuple(items)


@resolve.register
def _(obj: dict) -> dict:
    return type(obj)((resolve(k), resolve(v)) for k, v in obj.items())


@resolve.register(set)
@resolve.register(frozenset)
def _(obj: Any) -> Any:
    return type(obj)(resolve(item) for item in obj)


class Waiter:
    """Registered on every future in a call's arguments: calls :meth:`ready` with the resolved
    arguments once all are done, or :meth:`failed` as soon as one fails or is cancelled. Runs
    in whichever thread finishes the last future. Subclasses say what ready and failed do."""

    __slots__ = ("_args", "_kwargs", "_left")
    #: Shared by all waiters: the critical section is a few operations.
    _lock = threading.Lock()

    def __init__(self, futures: list[Future], args: tuple, kwargs: dict[str, Any]) -> None:
        self._args = args
        self._kwargs = kwargs or None  # most calls have none: no dict kept while waiting
        self._left = len(futures)  # -1 once ready or failed
        for future in futures:
            future.add_done_callback(self)

    def ready(self, args: tuple, kwargs: dict[str, Any]) -> None:
        raise NotImplementedError

    def failed(self, error: BaseException) -> None:
        raise NotImplementedError

    def __call__(self, future: Future) -> None:
        error: BaseException | None = None
        if future.cancelled():
            error = DependencyError(f"an argument's future was cancelled: {future!r}")
            error.__cause__ = CancelledError()
        elif future.exception() is not None:
            upstream = future.exception()
            error = DependencyError(
                f"an argument's future failed with {type(upstream).__name__}: {upstream}")
            error.__cause__ = upstream
        with self._lock:
            if self._left < 0:
                return
            self._left -= 1
            if error is None and self._left:
                return
            self._left = -1
            args, kwargs = self._args, self._kwargs
            self._args = self._kwargs = None  # type: ignore[assignment]
        if error is not None:
            self.failed(error)
        else:
            self.ready(resolve(args), resolve(kwargs) if kwargs else {})
