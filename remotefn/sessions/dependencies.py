"""Futures inside call arguments: finding them, waiting for them, replacing them by results.

Arguments are searched at any depth through lists, tuples, dicts, sets, frozensets and deques,
their subclasses included, each container once (a container holding itself is fine). Once
every future is done, the containers on the way to them are rebuilt with their own types
(``copy.deepcopy`` with each future mapped to its result and every other object kept as it
is), so a ``defaultdict``, a ``Counter`` or a named tuple arrives as itself.

Waiting is driven by ``add_done_callback``: no thread and no polling per call. A failure
travels down a chain of any length: completions that a completion triggers run one after
another in the thread that finished the first, never nested.
"""

from __future__ import annotations

import abc
import copy
import threading
from collections import deque
from concurrent.futures import CancelledError, Future
from typing import Any, Callable, Sequence

from ..errors import DependencyError, SerializationError

_ATOMIC = frozenset([int, float, str, bytes, bool, type(None), complex])
_SEQUENCES = (list, tuple, set, frozenset, deque)
_EXACT = frozenset([list, tuple, set, frozenset, dict, deque])


def _walk(roots: Any, found: list[Future], leaves: list[Any] | None) -> None:
    """Append the futures inside ``roots`` to ``found`` and, if given, every other object
    that is not a container to ``leaves``."""
    seen: set[int] = set()
    pending = deque(roots)
    while pending:
        obj = pending.popleft()
        kind = type(obj)
        if kind in _ATOMIC:
            continue
        if isinstance(obj, Future):
            found.append(obj)
        elif isinstance(obj, (dict, *_SEQUENCES)):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, dict):
                pending.extend(obj.keys())
                pending.extend(obj.values())
            else:
                pending.extend(obj)
            if leaves is not None and kind not in _EXACT:
                leaves.append(obj)  # a subclass: checked at submission (see Arguments)
        elif leaves is not None:
            leaves.append(obj)


def find_futures(args: tuple, kwargs: dict[str, Any]) -> list[Future]:
    """The distinct futures in ``args`` and ``kwargs``, in order of first appearance."""
    atomic = _ATOMIC
    for item in args:
        if type(item) not in atomic:
            break
    else:
        if not kwargs or all(type(item) in atomic for item in kwargs.values()):
            return []  # the common case: plain scalars only
    found: list[Future] = []
    if args:
        _walk(args, found, None)
    if kwargs:
        _walk(kwargs.values(), found, None)
    if len(found) > 1:
        found = list({id(f): f for f in found}.values())
    return found


class Arguments:
    """A call's arguments while their futures are pending, and their rebuilding after.

    Raises :class:`~remotefn.SerializationError` at once, naming the container, when a
    container subclass on the way to a future cannot be rebuilt (pickle could not send it
    either).
    """

    __slots__ = ("args", "kwargs", "futures", "keep", "flat")

    def __init__(self, args: tuple, kwargs: dict[str, Any], futures: list[Future]) -> None:
        self.args, self.kwargs = args, kwargs
        self.keep: Sequence[Any] = ()
        #: No argument is a container, so every future is an argument itself (the common
        #: chain): nothing to rebuild.
        self.flat = not any(isinstance(a, (dict, *_SEQUENCES))
                            for a in (*args, *kwargs.values()))
        #: The futures to rebuild containers with; none kept when nothing is rebuilt (one
        #: object less per queued call).
        self.futures: Sequence[Future] = () if self.flat else futures
        if self.flat:
            return
        objects: list[Any] = []
        found: list[Future] = []
        _walk((args, kwargs), found, objects)
        #: Objects that are not containers: kept as they are, never copied.
        self.keep = [o for o in objects if not isinstance(o, (dict, *_SEQUENCES))]
        for container in objects:
            if isinstance(container, (dict, *_SEQUENCES)):
                try:
                    copy.deepcopy(container, self._memo(lambda future: None))
                except Exception as error:
                    raise SerializationError(
                        f"a {type(container).__qualname__} holding futures cannot be rebuilt "
                        f"with their results ({type(error).__name__}: {error}); pass a plain "
                        "list, tuple or dict instead") from error

    def _memo(self, value: Callable[[Future], Any]) -> dict[int, Any]:
        memo: dict[int, Any] = {id(o): o for o in self.keep}
        memo.update((id(f), value(f)) for f in self.futures)
        return memo

    def resolved(self) -> tuple[tuple, dict[str, Any]]:
        """The arguments with every (done) future replaced by its result."""
        if self.flat:
            return (tuple(a.result() if isinstance(a, Future) else a for a in self.args),
                    {k: v.result() if isinstance(v, Future) else v
                     for k, v in self.kwargs.items()})
        return copy.deepcopy((self.args, self.kwargs), self._memo(Future.result))


_local = threading.local()


def run_flat(action: Callable[[], None]) -> None:
    """Run ``action``; an action started while another runs in this thread (a completion
    that completes more futures) waits for it instead of nesting, so a chain of any length
    needs no deeper stack."""
    queued: deque[Callable[[], None]] | None = getattr(_local, "queued", None)
    if queued is not None:
        queued.append(action)
        return
    _local.queued = queued = deque([action])
    try:
        while queued:
            queued.popleft()()
    finally:
        _local.queued = None


class Waiter(abc.ABC):
    """Registered on every future in a call's arguments: calls :meth:`ready` with the resolved
    arguments once all are done, or :meth:`failed` as soon as one fails or is cancelled. Runs
    in whichever thread finishes the last future. Subclasses say what ready and failed do."""

    __slots__ = ("_arguments", "_left")
    #: Shared by all waiters: the critical section is a few operations.
    _lock = threading.Lock()

    def __init__(self, arguments: Arguments, futures: Sequence[Future]) -> None:
        self._arguments: Arguments | None = arguments
        self._left = len(futures)  # -1 once ready or failed
        for future in futures:
            future.add_done_callback(self)

    @abc.abstractmethod
    def ready(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Every future is done: run the call with these arguments."""

    @abc.abstractmethod
    def failed(self, error: BaseException) -> None:
        """A future failed or was cancelled: fail the call with ``error``."""

    def __call__(self, future: Future) -> None:
        error: BaseException | None = None
        if future.cancelled():
            error = DependencyError(f"an argument's future was cancelled: {future!r}")
            error.__cause__ = CancelledError()
        elif future.exception() is not None:
            upstream = future.exception()
            # Down a chain, quoting the upstream DependencyError would grow each link's
            # message by the one before it (quadratic in the chain's length): every link
            # says what happened at the head instead, and __cause__ still leads there.
            error = DependencyError(
                upstream.args[0] if isinstance(upstream, DependencyError) and upstream.args
                else f"an argument's future failed with {type(upstream).__name__}: {upstream}")
            error.__cause__ = upstream
        with self._lock:
            if self._left < 0:
                return
            self._left -= 1
            if error is None and self._left:
                return
            self._left = -1
            arguments, self._arguments = self._arguments, None
        if error is not None:
            run_flat(lambda: self.failed(error))
        elif arguments is not None:
            run_flat(lambda: self._resolve(arguments))

    def _resolve(self, arguments: Arguments) -> None:
        try:
            args, kwargs = arguments.resolved()
        except Exception as error:
            failure = SerializationError(f"the arguments could not be rebuilt with their "
                                         f"futures' results: {type(error).__name__}: {error}")
            failure.__cause__ = error
            self.failed(failure)
            return
        self.ready(args, kwargs)


class CallWhenReady(Waiter):
    """A call of session ``owner`` whose arguments hold futures: ``owner._launch_ready(self,
    args, kwargs)`` runs once they are all done; ``future``, the call's, fails as soon as one
    of them does. The call's function, its pickled reference, options and whether it is cached
    are kept on this one object (no partial, no tuple): 100k queued calls are that many objects
    fewer for the garbage collector to walk."""

    __slots__ = ("owner", "future", "function", "ref", "options", "caching")

    def __init__(self, owner: Any, future: Any, function: Any, ref: Any, options: Any,
                 caching: bool, arguments: Arguments, futures: Sequence[Future]) -> None:
        self.owner, self.future, self.function = owner, future, function
        self.ref, self.options, self.caching = ref, options, caching
        super().__init__(arguments, futures)

    def ready(self, args: tuple, kwargs: dict[str, Any]) -> None:
        owner, self.owner = self.owner, None
        owner._launch_ready(self, args, kwargs)
        self.future = self.function = self.ref = self.options = None

    def failed(self, error: BaseException) -> None:
        future, self.future, self.owner = self.future, None, None
        self.function = self.ref = self.options = None
        future._fail(error)
