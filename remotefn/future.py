"""The future a remote call returns, with where and when the call ran and what it printed."""

from __future__ import annotations

import _thread
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, InvalidStateError, wait
from concurrent.futures._base import FINISHED, LOGGER as _LOGGER, PENDING, RUNNING
from time import monotonic
from typing import Any, Callable, Generator, Generic, Iterable, TypeVar

R = TypeVar("R")
T = TypeVar("T")


class _SessionThread(threading.local):
    #: True in a session's own thread, where futures' callbacks run.
    active = False


session_thread = _SessionThread()
_NOT_DONE = (PENDING, RUNNING)

_WAITING_HERE = ("waiting for a remote call inside a done-callback (or anything else that "
                 "runs in a session's own thread) would stop the session for good: the "
                 "thread that would finish the call is the one waiting. Chain the call "
                 "instead (pass the future as an argument), or wait in a thread of your own")


#: The threads waiting on each :class:`_Condition` that has any, by the condition's id: read
#: and changed only by a thread holding that condition.
_WAITING: dict[int, list[Any]] = {}


class _Condition(_thread.RLock):  # type: ignore[misc]  # subclassable at run time
    """What a future needs of :class:`threading.Condition` (``with``, ``acquire``,
    ``release``, ``wait``, ``notify_all``): the lock itself, its waiters kept apart.

    The standard class wraps a lock and keeps five bound methods and a deque per instance:
    seven objects that the garbage collector traces for every queued call, and a Python
    frame for every ``with``. This one is the lock (its ``with`` runs in C) and nothing else;
    the list of threads waiting on it exists, in ``_WAITING``, only while some do.
    """

    __slots__ = ()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock until notified or ``timeout`` seconds pass, then take it again;
        False on a timeout. Called holding the lock, as with the standard class."""
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = threading.Lock()
        waiter.acquire()
        waiters = _WAITING.setdefault(id(self), [])
        waiters.append(waiter)
        saved = self._release_save()  # type: ignore[attr-defined]
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            elif timeout > 0:
                notified = waiter.acquire(True, timeout)
            else:
                notified = waiter.acquire(False)
            return notified
        finally:
            # A signal that arrives while the lock is being taken back (it cannot interrupt
            # that) raises as soon as it is held: the inner ``finally`` still takes this
            # thread out of _WAITING, where a waiter left behind would outlive the condition
            # (its entry is not freed with it, unlike the standard class's own list).
            try:
                self._acquire_restore(saved)  # type: ignore[attr-defined]
            finally:
                if not notified:
                    try:
                        waiters.remove(waiter)
                    except ValueError:
                        pass
                if not waiters and _WAITING.get(id(self)) is waiters:
                    del _WAITING[id(self)]

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true or ``timeout`` seconds pass; its last value."""
        deadline = None if timeout is None else monotonic() + timeout
        result = predicate()
        while not result:
            left = None if deadline is None else deadline - monotonic()
            if left is not None and left <= 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = _WAITING.get(id(self))
        while waiters and n > 0:
            waiters.pop(0).release()
            n -= 1

    def notify_all(self) -> None:
        self.notify(len(_WAITING.get(id(self), ())))


class CallInfo:
    """Where and when a call ran, and what it used: a future's ``info``.

    ``function`` (its name) and ``call_id`` (its number in the session); ``queued``,
    ``started`` and ``finished``, ``time.time()`` seconds when it was submitted, began and
    ended; ``worker_id``, ``host`` and ``pid`` of the worker that ran it (rank 0's host and
    pid), ``pool`` (the pool's kind and shape), ``ranks`` and ``gpus`` (the GPUs each rank
    saw, in rank order); ``cpu_times``
    (CPU seconds, one per rank) and ``peak_memory`` (bytes, with
    ``session(measure_memory=True)``); ``from_cache``; ``output``, what it printed. A field
    is None until it is known.
    """

    __slots__ = ("function", "call_id", "queued", "worker_id", "host", "pid", "pool", "ranks",
                 "gpus", "started", "finished", "cpu_times", "peak_memory", "from_cache",
                 "output")

    def __init__(self, function: str, call_id: int, queued: float) -> None:
        self.function = function
        self.call_id = call_id
        self.queued = queued
        self.worker_id: str | None = None
        self.host: str | None = None
        self.pid: int | None = None
        #: The kind and shape of the pool whose worker ran the call.
        self.pool: str | None = None
        #: MPI ranks of the worker (``cores``).
        self.ranks: int | None = None
        #: The GPUs each rank saw (its ``CUDA_VISIBLE_DEVICES`` split at commas), in rank
        #: order: ``(("0",), ("1",))`` for two ranks with one GPU each, ``((),)`` for a rank
        #: shown none, ``(None,)`` for a rank whose ``CUDA_VISIBLE_DEVICES`` was unset (it
        #: saw every GPU of its node).
        self.gpus: tuple[tuple[str, ...] | None, ...] | None = None
        self.started: float | None = None
        self.finished: float | None = None
        #: CPU seconds the call used, one per rank (measured in the worker).
        self.cpu_times: tuple[float, ...] | None = None
        #: Bytes the worker's resident memory rose during the call, when the session
        #: measures memory (``session(measure_memory=True)``).
        self.peak_memory: int | None = None
        #: True when the result came from the session's cache (or from an identical call
        #: in flight).
        self.from_cache = False
        #: What the call printed: (stream, text) pairs, stream 1 for stdout and 2 for stderr.
        self.output: list[tuple[int, str]] | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__[:-1])
        return f"CallInfo({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not CallInfo:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    @property
    def cpu_time(self) -> float | None:
        """CPU seconds the call used, all ranks together."""
        return sum(self.cpu_times) if self.cpu_times is not None else None

    @property
    def runtime(self) -> float | None:
        """Seconds the function ran in the worker."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


class RemoteFuture(Future[R], Generic[R]):
    """A :class:`concurrent.futures.Future` for a remote call; ``R`` is the type of its value.

    ``info`` says where and when the call ran; ``stdout`` and ``stderr`` hold what the call
    printed (it is also forwarded live to this process's streams).
    """

    #: Set by the session when a thread waiting for the call may read the worker's answer
    #: itself: ``_direct(future, timeout)`` returns what is left of the timeout. A class
    #: default, so that a queued call's future holds no more than before.
    _direct: Callable[[RemoteFuture[Any], float | None], float | None] | None = None

    def __init__(self, info: CallInfo,
                 done: Callable[[RemoteFuture[Any]], object] | None = None) -> None:
        # Future.__init__'s state, with a lighter condition and no lists until they are
        # needed; ``done`` is the first done-callback (the session's), set before the future
        # is shared with any thread.
        self._condition = _Condition()  # type: ignore[assignment]  # its interface
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiter_list: list[Any] | None = None
        self._first_callback = done
        self._callback_list: list[Callable[[Any], object]] | None = None
        self.info = info

    # concurrent.futures reads and changes these two lists (wait() and as_completed() add
    # their waiters, add_done_callback its callbacks): each is made on first use, so that a
    # call nobody waits on or adds a callback to holds neither.

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]  # made on first use
        waiters = self._waiter_list
        if waiters is None:
            waiters = self._waiter_list = []
        return waiters

    @property
    def _done_callbacks(self) -> list[Callable[[Any], object]]:  # type: ignore[override]
        callbacks = self._callback_list
        if callbacks is None:
            callbacks = self._callback_list = []
        return callbacks

    def _invoke_callbacks(self) -> None:
        first = self._first_callback
        if first is not None:
            try:
                first(self)
            except Exception:
                _LOGGER.exception("exception calling callback for %r", self)
        for callback in self._callback_list or ():
            try:
                callback(self)
            except Exception:
                _LOGGER.exception("exception calling callback for %r", self)

    def result(self, timeout: float | None = None) -> R:
        """The call's value, waiting up to ``timeout`` seconds; raises the call's exception,
        ``TimeoutError``, or ``RuntimeError`` when called where it could never return (in
        a done-callback, before the call is done)."""
        return super().result(self._before_waiting(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception or None, waiting as :meth:`result` does."""
        return super().exception(self._before_waiting(timeout))

    def _before_waiting(self, timeout: float | None) -> float | None:
        if self._state in _NOT_DONE:
            if session_thread.active:
                raise RuntimeError(_WAITING_HERE)
            direct = self._direct
            if direct is not None:
                self._direct = None
                return direct(self, timeout)
        return timeout

    def __await__(self) -> Generator[Any, None, R]:
        """``await future`` in asyncio code: waits without blocking the event loop."""
        import asyncio  # imported when needed: most programs never await a future

        return (yield from asyncio.wrap_future(self).__await__())

    @property
    def stdout(self) -> str:
        """What the call printed to its standard output so far."""
        return "".join(text for stream, text in self.info.output or () if stream == 1)

    @property
    def stderr(self) -> str:
        """What the call wrote to its standard error so far."""
        return "".join(text for stream, text in self.info.output or () if stream == 2)

    def _add_output(self, stream: int, text: str) -> None:
        if self.info.output is None:
            self.info.output = []
        self.info.output.append((stream, text))

    def __repr__(self) -> str:
        base = super().__repr__()
        return f"{base[:-1]} {self.info.function}>"

    def _fail(self, error: BaseException) -> None:
        """Set an exception unless the future is already finished (or cancelled)."""
        try:
            self.set_exception(error)
        except InvalidStateError:
            pass

    def _succeed(self, value: Any) -> None:
        """Set the result unless the future is already finished (or cancelled): what
        ``set_result`` does, without raising, and waking waiters only if there are some."""
        condition = self._condition
        with condition:
            if self._state not in _NOT_DONE:
                return
            self._result = value
            self._state = FINISHED
            for waiter in self._waiter_list or ():
                waiter.add_result(self)
            if id(condition) in _WAITING:
                condition.notify_all()
        self._invoke_callbacks()


def gather(futures: Iterable[Future[T]], timeout: float | None = None) -> list[T]:
    """The values of ``futures`` (of remotefn or of any executor), in their order. Blocks
    until all are done, or until one fails: then raises its exception (the first in the list,
    if several have failed), or ``CancelledError`` for a cancelled one. Raises
    ``TimeoutError`` when ``timeout`` seconds pass first, and ``RuntimeError`` in a
    done-callback of a remote future (see :meth:`~remotefn.RemoteFuture.result`)."""
    futures = list(futures)
    if session_thread.active and not all(future.done() for future in futures):
        raise RuntimeError(_WAITING_HERE)
    done, waiting = wait(futures, timeout, return_when=FIRST_EXCEPTION)
    for future in futures:
        if future in done and (future.cancelled() or future.exception() is not None):
            future.result()  # raises its exception
    if waiting:
        raise TimeoutError(f"{len(waiting)} of {len(futures)} futures were not done "
                           f"after {timeout} seconds")
    return [future.result() for future in futures]
