"""Running calls inside a worker: the function cache, ``init`` and one call's outcome.

Shared by the single-process worker and every rank of an MPI worker; it knows nothing of
sockets. What a call produced is an :data:`~remotefn.protocol.messages.Outcome`.
"""

from __future__ import annotations

import pickle
import time
import types
from typing import Any, Callable

from ..protocol import messages, pickling
from ..protocol.messages import Outcome
from ..protocol.segments import Pool


class Runner:
    """Unpickles functions once (by digest), runs ``init`` and calls functions."""

    def __init__(self) -> None:
        self.functions: dict[bytes, Callable[..., Any]] = {}
        self.parameters: dict[bytes, frozenset[str]] = {}
        self.init_kwargs: dict[str, Any] = {}
        #: CPU seconds of this process while the last call's function ran.
        self.cpu = 0.0
        #: The worker's event loop, made by the first ``async def`` call and kept for the next.
        self.loop: Any = None
        #: Where large results go (a worker on a socket pair), else None: copied as bytes.
        self.segments: Pool | None = None

    def initialize(self, payload: Any) -> str | None:
        """Run the pickled ``init`` (if any); the traceback text if it failed, else None."""
        if not len(payload):
            return None
        try:
            init = pickle.loads(payload)
            result = init()
            if not isinstance(result, dict):
                raise TypeError(f"init must return a dict of keyword arguments, "
                                f"got {type(result).__name__}")
        except BaseException:
            import traceback  # imported when needed: workers start faster without it

            return traceback.format_exc()
        self.init_kwargs = result
        return None

    def call(self, body: list[Any], before: Callable[[], None] = lambda: None,
             after: Callable[[], None] = lambda: None) -> Outcome:
        """Run the call in a TASK body; ``before``/``after`` bracket the user's code."""
        try:
            digest, payload, arguments = messages.read_task(body)
            function = self._function(digest, payload)
            args, kwargs = pickling.loads(arguments)
        except BaseException as error:
            return messages.unpicklable(f"the worker could not unpickle the call: "
                                        f"{type(error).__name__}: {error}")
        if self.init_kwargs:
            self._fill_from_init(digest, function, args, kwargs)
        before()
        cpu = time.process_time()
        try:
            value = function(*args, **kwargs)
            if type(value) is types.CoroutineType:
                value = self._run_coroutine(value)
        except BaseException as error:
            self.cpu = time.process_time() - cpu
            after()
            return failure(error)
        self.cpu = time.process_time() - cpu
        after()
        del args, kwargs
        return messages.success(value, self.segments)

    def _run_coroutine(self, coroutine: Any) -> Any:
        if self.loop is None:
            import asyncio  # imported when needed: workers start faster without it

            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        return self.loop.run_until_complete(coroutine)

    def _function(self, digest: bytes, payload: Any) -> Callable[..., Any]:
        function = self.functions.get(digest)
        if function is None:
            function = pickle.loads(payload)
            self.functions[digest] = function
            if self.init_kwargs:
                self.parameters[digest] = parameter_names(function)
        return function

    def _fill_from_init(self, digest: bytes, function: Callable[..., Any], args: tuple,
                        kwargs: dict[str, Any]) -> None:
        fill_from_init(function, self.parameters.get(digest, frozenset()), args, kwargs,
                       self.init_kwargs)


def parameter_names(function: Callable[..., Any]) -> frozenset[str]:
    """The names ``function`` takes as keyword arguments (none if it has no signature)."""
    import inspect  # imported when needed: workers start faster without it

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(name for name, p in signature.parameters.items()
                     if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def fill_from_init(function: Callable[..., Any], parameters: frozenset[str], args: tuple,
                   kwargs: dict[str, Any], init_kwargs: dict[str, Any]) -> None:
    """Add to ``kwargs`` the entries of ``init_kwargs`` that name parameters of ``function``
    the call leaves out (neither passed by position nor by keyword). Used by workers and by
    ``handle.local()``."""
    names = parameters - kwargs.keys()
    if not names & init_kwargs.keys():
        return
    import inspect

    try:
        bound = inspect.signature(function).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return
    for name in names:
        if name not in bound and name in init_kwargs:
            kwargs[name] = init_kwargs[name]


def failure(error: BaseException, note: str = "") -> Outcome:
    """The outcome of a call that raised ``error``: the exception and its traceback text."""
    import traceback

    text = note + "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return messages.failure(error, text)
