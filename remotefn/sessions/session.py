"""The session: an :class:`concurrent.futures.Executor` that validates calls, waits for the
futures in their arguments, answers them from the cache, and hands the rest to its hub.

Which session a handle called now submits to is :mod:`.defaults`' business.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import sys
import threading
import time
import types
import weakref
from typing import (TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence,
                    TypeGuard, TypeVar)

from .. import backends
from ..cache.front import CacheFront
from ..errors import SerializationError
from ..future import CallInfo, RemoteFuture, session_thread
from ..hub.hub import Hub
from ..hub.recorder import Recorder
from ..hub.records import Call
from ..options import DEFAULT_OPTIONS, CallOptions
from ..protocol import pickling, segments
from ..protocol.shipping import FunctionRef, function_ref
from . import registry
from .admission import Admission
from .chunks import Chunked, chunks
from .dependencies import Arguments, CallWhenReady, find_futures
from .settings import SESSION_SETTINGS, check_settings

if TYPE_CHECKING:  # the dashboard is imported when a session serves one
    from ..dashboard.server import Dashboard

logger = logging.getLogger(__name__)
_FINISHED = "FINISHED"  # concurrent.futures' state of a future with a result or exception

T = TypeVar("T")

class Session(concurrent.futures.Executor):
    """Runs calls on workers that its backend launches; see :func:`~remotefn.session`.

    Besides its methods, a session has three attributes: ``backend``, the backend that
    launches its workers (``backend.name`` is ``"local"``, ``"slurm"`` or ``"flux"``);
    ``cache_directory``, the absolute path of its cache (None without one); and
    ``dashboard``, its live dashboard when it serves one (``dashboard.url``, the address with
    its token, and ``dashboard.url_file``, the file of mode 0600 that holds it), else None.
    """

    def __init__(self, backend: str | None = None, *, forward_output: bool = True,
                 start_timeout: float = 300.0, cache_directory: str | os.PathLike | None = None,
                 cache_by: str = "code", record: str | os.PathLike | None = None,
                 measure_memory: bool = False, dashboard: bool | int = False,
                 **settings: Any) -> None:
        check_settings(forward_output=forward_output, start_timeout=start_timeout,
                       cache_directory=cache_directory, cache_by=cache_by, record=record,
                       measure_memory=measure_memory, dashboard=dashboard)
        self.cache_directory = os.path.abspath(cache_directory) if cache_directory else None
        self._cache = CacheFront(self.cache_directory, by_code=cache_by == "code")
        if backend is None and registry.confined() is not None:
            # Inside a worker: the worker's share, unless settings say otherwise.
            confined = dict(registry.confined() or {})
            backend = confined.pop("backend")
            settings = {**confined, **settings}
        name = backend if backend is not None else backends.detect(os.environ)
        self.backend = backends.create(name, settings, also_valid=SESSION_SETTINGS)
        self._recorder = Recorder(record)
        self._hub = Hub(self.backend, forward_output=forward_output,
                        start_timeout=float(start_timeout), recorder=self._recorder,
                        measure_memory=measure_memory)
        self._pending: set[concurrent.futures.Future] = set()
        #: Shared memory for large arguments (passed to forked workers, copied to the rest).
        self._segments = segments.Pool() if segments.supported() else None
        #: The live dashboard, when the session serves one (``dashboard=True`` or a port).
        self.dashboard: Dashboard | None = None
        self._done_tap: Any = None  # where done calls go for the dashboard
        if dashboard is not False:
            self._open_dashboard(0 if dashboard is True else dashboard)
        self._closed = False
        self._lock = threading.Lock()
        self._call_ids = itertools.count(1)
        self._functions: weakref.WeakKeyDictionary[Any, FunctionRef] = weakref.WeakKeyDictionary()
        self._tokens: list[Any] = []
        self._admission = Admission(self._hub.ledger, self.backend)
        #: The last function submitted (weakly) and its reference: calls come in runs.
        self._last_function: tuple[Callable[[], Any], FunctionRef] | None = None
        #: ``_call_done``, bound once: every future holds the same callback.
        self._on_done = self._call_done
        registry.register(self)

    # -- the Executor interface ------------------------------------------------------------

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> RemoteFuture[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; returns a future at once.

        ``fn`` may be a plain callable or a :func:`~remotefn.remote` handle, whose options
        apply. Futures in the arguments are waited for without blocking. Raises
        ``RuntimeError`` after shutdown, :class:`~remotefn.SerializationError` when an argument
        does not pickle, ``ValueError`` when the call can never fit in the session.
        """
        options = DEFAULT_OPTIONS
        if _is_handle(fn):
            handle = fn
            fn, options = handle.__wrapped__, handle.remote_options
        elif not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r} ({type(fn).__name__})")
        if isinstance(fn, types.MethodType):
            # Ship the function once and its instance with each call, as a bound handle does.
            method = fn
            fn, args = method.__func__, (method.__self__, *args)
        return self._submit(fn, options, args, kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: submits every call at once and
        returns an iterator of the results in order, which blocks on each in turn (raising
        its exception, or ``TimeoutError`` once ``timeout`` seconds have passed since the
        call of ``map``); ``chunksize`` > 1 sends that many calls to a worker at a time."""
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int, got {chunksize!r}")
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize!r}")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)

        chunked = (Chunked(fn.__wrapped__, fn.remote_options) if _is_handle(fn)
                   else Chunked(fn, DEFAULT_OPTIONS))
        return itertools.chain.from_iterable(  # a Chunked stands for a handle: submit() takes it
            super().map(chunked, chunks(zip(*iterables), chunksize),  # type: ignore[arg-type]
                        timeout=timeout))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls and stop every worker once the submitted calls are done.

        ``wait=True`` blocks until then, except in a done-callback of a remote future, where
        waiting would stop the session for good: there it returns at once, as ``wait=False``
        does. ``cancel_futures=True`` cancels calls not yet running. Ctrl-C while waiting
        stops the workers at once.
        """
        with self._lock:
            self._closed = True
        if cancel_futures:
            for future in list(self._pending):
                future.cancel()
        if threading.current_thread() is self._hub.thread:
            self._close_dashboard()
            self._hub.stop(kill=False)
            self._close_segments()  # the free ones now; lent ones as their calls end
            return
        if not wait or session_thread.active:  # a done-callback (see hub.direct) cannot wait
            threading.Thread(target=self._stop_when_done, name="remotefn-shutdown",
                             daemon=True).start()
            return
        try:
            self._stop_when_done()
        except BaseException:
            self._abort()
            raise

    def _stop_when_done(self) -> None:
        while self._pending:
            concurrent.futures.wait(list(self._pending))
        self._cache.close()  # results may resolve before their cache entries are written
        self._close_dashboard()
        self._hub.stop(kill=False)
        self._hub.stopped.wait()
        self._close_segments()

    def _abort(self) -> None:
        """Cancel what has not started and kill every worker now (an error or Ctrl-C)."""
        with self._lock:
            self._closed = True
        for future in list(self._pending):
            future.cancel()
        self._close_dashboard()
        self._hub.stop(kill=True)
        self._hub.stopped.wait(10)
        self._close_segments()

    def _close_segments(self) -> None:
        if self._segments is not None:
            self._segments.close()

    def _kill_workers(self) -> None:
        self._hub.kill_now()

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._closed

    def activate(self) -> "Session":
        """Make this session the one handles submit to outside ``with`` blocks (in every
        thread), until it is shut down; for notebooks and interactive use. Returns the
        session. Raises ``RuntimeError`` when another session already holds that place (an
        activated one, or the default session an earlier call started); see
        :func:`remotefn.set_default`."""
        registry.make_default(self)
        return self

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "open"
        return f"<remotefn.Session {self.backend.name} {state} at {id(self):#x}>"

    def __enter__(self) -> "Session":
        self._tokens.append(registry.current_session.set(self))
        registry.entered(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if self._tokens:
            registry.current_session.reset(self._tokens.pop())
        registry.exited(self)
        if exc_type is None:
            self.shutdown(wait=True)
        else:
            self._abort()

    # -- monitoring --------------------------------------------------------------------------

    def resources(self) -> dict[str, Any]:
        """What the session has and what runs where: ``cores`` and ``gpus`` (total, in use,
        free), ``nodes`` (each one's, where the backend knows them), ``workers``, ``running``
        calls and ``queued`` ones with the reason each waits. A snapshot; it does not block
        the hub."""
        return {"backend": self.backend.name, "allocation": self.backend.describe(),
                **self._hub.resources()}

    def events(self) -> list[dict[str, Any]]:
        """The session's recent events, oldest first: what happened to calls and workers and
        when (see docs/monitoring.md). The last 100,000 are kept; ``record=PATH`` writes
        them all to a file."""
        return self._recorder.events()

    def report(self, path: str | os.PathLike) -> str:
        """Write the report of this session so far (the task stream, progress per function,
        workers, failed calls) to ``path`` as one self-contained HTML file; returns the path.
        Made from the record file when the session writes one, else from the events kept in
        memory. Raises :class:`~remotefn.errors.MissingDependency` without Bokeh
        (``pip install 'remotefn[dashboard]'``)."""
        from ..dashboard.report import read_events, write_report_elsewhere

        self._recorder.flush()
        events = (read_events(self._recorder.path) if self._recorder.path
                  else self._recorder.events())
        write_report_elsewhere(events, path, title=f"remotefn session ({self.backend.name})")
        return os.fspath(path)

    def _open_dashboard(self, port: int) -> None:
        from ..dashboard.server import Dashboard

        try:
            self.dashboard = Dashboard(port, self._hub.runtime_dir, self.resources,
                                       self._recorder, title=f"remotefn session "
                                       f"({self.backend.name}, pid {os.getpid()})")
        except BaseException:
            self._hub.stop(kill=True)
            self._hub.stopped.wait(10)
            raise
        self._done_tap = self.dashboard.done
        print(f"remotefn: the dashboard's address (with its access token) is in "
              f"{self.dashboard.url_file}", file=sys.stderr)

    def _close_dashboard(self) -> None:
        dashboard, self.dashboard, self._done_tap = self.dashboard, None, None
        if dashboard is not None:
            dashboard.close()

    def release(self, handle: Any) -> None:
        """Stop the block pool of ``handle``'s options once it is idle; its cores and GPUs go
        back to the session. A later call starts the pool again. Returns at once."""
        if not _is_handle(handle):
            raise TypeError(f"release() takes a remote handle, got {handle!r}")
        self._hub.release(handle.remote_options.pool_key())

    # -- submission --------------------------------------------------------------------------

    def _submit(self, function: Callable[..., Any], options: CallOptions, args: tuple,
                kwargs: dict[str, Any]) -> RemoteFuture[Any]:
        if self._closed:
            raise RuntimeError("cannot submit calls to a session that was shut down")
        self._admission.check(options)
        ref = self._function_ref(function)
        caching = self._cache.applies(options)
        dependencies = find_futures(args, kwargs)
        if dependencies:
            pending, arguments = Arguments(args, kwargs, dependencies), None
        else:
            arguments = pickling.dumps_arguments(ref.name, args, kwargs, self._segments)
        call_id = next(self._call_ids)
        future: RemoteFuture[Any] = RemoteFuture(CallInfo(ref.name, call_id, time.time()),
                                                 self._on_done)
        self._pending.add(future)
        if arguments is not None:
            self._launch(future, function, ref, options, args, kwargs, arguments, caching)
        else:
            CallWhenReady(self, future, function, ref, options, caching, pending, dependencies)
        return future

    def _launch_ready(self, waiting: CallWhenReady, args: tuple,
                      kwargs: dict[str, Any]) -> None:
        """Launch a call whose arguments' futures are done."""
        future, function, ref, options, caching = (waiting.future, waiting.function,
                                                   waiting.ref, waiting.options,
                                                   waiting.caching)
        if future.done():
            return
        try:
            arguments = pickling.dumps_arguments(ref.name, args, kwargs, self._segments)
        except SerializationError as error:
            future._fail(error)
            return
        self._launch(future, function, ref, options, args, kwargs, arguments, caching)

    def _launch(self, future: RemoteFuture, function: Callable[..., Any], ref: FunctionRef,
                options: CallOptions, args: tuple, kwargs: dict[str, Any],
                arguments: Sequence[Any], caching: bool) -> None:
        """Serve the call from the cache or an identical call in flight, else queue it."""
        call = Call(future.info.call_id, future, ref, arguments, options)
        if caching:
            store = self._cache.answer(future, function, ref, options, args, kwargs)
            if store is None:  # answered by the cache: recorded as "cached" once done
                return
            call.on_success = store
        self._recorder.emit("queued", call.call_id, "", ref.name)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("queued %s with %s", call.describe(), options)
        self._hub.submit(call)

    def _call_done(self, future: RemoteFuture) -> None:
        self._pending.discard(future)
        # Read without the future's lock: it is done, so its state no longer changes.
        if future._state != _FINISHED:
            kind = "cancelled"
        elif future._exception is not None:
            kind = "failed"
        else:
            kind = "cached" if future.info.from_cache else "finished"
        self._recorder.emit(kind, future.info.call_id, future.info.worker_id or "")
        tap = self._done_tap
        if tap is not None:  # the dashboard's: a finished call's info, or (kind, future)
            tap.append(future.info if kind == "finished" else (kind, future))

    def _function_ref(self, function: Callable[..., Any]) -> FunctionRef:
        last = self._last_function
        if last is not None and last[0]() is function:
            return last[1]
        try:
            ref = self._functions.get(function)
        except TypeError:  # neither hashable nor weakly referenceable
            ref = None
        if ref is None:
            ref = function_ref(function)
            try:
                self._functions[function] = ref
            except TypeError:
                return ref
        self._last_function = (weakref.ref(function), ref)
        return ref


class _Handle(Protocol):
    __wrapped__: Callable[..., Any]
    remote_options: CallOptions


def _is_handle(fn: Any) -> TypeGuard[_Handle]:
    """Whether ``fn`` is a :func:`~remotefn.remote` handle (or stands for one)."""
    return getattr(type(fn), "__remotefn_handle__", False)


def session(backend: str | None = None, **settings: Any) -> Session:
    """Open a session on ``backend`` (``"local"``, ``"slurm"`` or ``"flux"``; default: detected
    from the environment). Use it as a context manager: inside the ``with`` block, calls of
    :func:`~remotefn.remote` handles go to it, and leaving the block waits for them and stops
    the workers (an exception in the block stops them at once). Opening a session changes
    nothing else: without ``with``, call ``activate()`` on it (see :func:`remotefn.set_default`) to
    make handles use it, in a notebook for example.

    Settings: ``forward_output`` (print the calls' output here, default True),
    ``cache_directory`` (store results there and reuse them, also in later runs),
    ``cache_by`` (``"code"``, default: a change to a function's code, or to the user code it
    reaches, invalidates its entries; ``"name"``: only its qualified name counts; see
    docs/cache.md for what the key holds),
    ``start_timeout`` (seconds a worker may take to connect, default 300),
    ``record`` (write the event record to this file), ``measure_memory``, ``dashboard``
    (True or a port: serve the live dashboard on 127.0.0.1; see docs/monitoring.md) and the
    backend's
    own (local: ``max_cores``, ``max_gpus``/``gpu_ids``, ``python``, ``mpiexec``,
    ``transport``, ``interface``, ``fork_server``; see docs/ for slurm and flux).
    """
    return Session(backend, **settings)


__all__ = ["Session", "session"]
