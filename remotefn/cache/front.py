"""The session's side of the result cache: answering calls from disk or from an identical
call in flight, and storing results off the session's threads.

Who does what::

    caller's thread   answer(): key (code keys kept per function), read the entry (no lock
                      held while reading), else register the call in ``in_flight``
    hub thread        on success, before the future resolves: snapshot the value (a pickle
                      or an array copy) and queue the write; never touches the disk
    remotefn-cache    writes the entry, then takes the call out of ``in_flight``: until
                      then an identical call is answered from the finished future
    shutdown / exit   flush(): waits for the queued writes (the writer thread is joined at
                      interpreter exit like any ThreadPoolExecutor's)
"""

from __future__ import annotations

import concurrent.futures
import threading
import warnings
import weakref
from functools import partial
from typing import Any, Callable

from ..errors import SerializationError
from ..future import CallInfo, RemoteFuture
from ..options import CallOptions
from ..protocol.shipping import FunctionRef
from . import keys, store


class CacheFront:
    """Used by a session from any thread; ``in_flight`` and ``writes`` are guarded by
    ``lock``, which is never held while a file is read or written."""

    def __init__(self, cache_directory: str | None, by_code: bool) -> None:
        self.cache_directory = cache_directory
        self.by_code = by_code
        self.in_flight: dict[str, RemoteFuture] = {}
        self.lock = threading.Lock()
        #: Code keys, computed once per function per session.
        self.code_keys: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
        self.shapes: dict[CallOptions, bytes] = {}
        self.writes: set[concurrent.futures.Future] = set()
        self.writer: concurrent.futures.ThreadPoolExecutor | None = None

    def applies(self, options: CallOptions) -> bool:
        """Whether calls with ``options`` use the cache; ``ValueError`` for cache=True
        without a cache directory."""
        if options.cache is True and self.cache_directory is None:
            raise ValueError("cache=True needs a session with a cache_directory: "
                             "remotefn.session(cache_directory='...')")
        return self.cache_directory is not None and options.cache is not False

    # -- keys --------------------------------------------------------------------------------

    def code_of(self, function: Any) -> bytes:
        """The code key of ``function``, kept for the session's life (weakly): computing it
        walks the user code the function reaches. A partial or a bound method combines its
        function's kept key with its bound values, hashed now."""
        if isinstance(function, partial):
            return keys.value_digest(("partial", self.code_of(function.func), function.args,
                                      function.keywords), self.code_of)
        bound = getattr(function, "__self__", None)
        inner = getattr(function, "__func__", None)
        if bound is not None and inner is not None:
            return keys.value_digest(("method", self.code_of(inner),
                                      self.code_of(bound) if isinstance(bound, type) else bound),
                                     self.code_of)
        try:
            known = self.code_keys.get(function)
        except TypeError:  # neither hashable nor weakly referenceable
            return keys.code_digest(function)
        if known is None:
            known = keys.code_digest(function)
            try:
                self.code_keys[function] = known
            except TypeError:
                pass
        return known

    def shape_of(self, options: CallOptions) -> bytes:
        try:
            known = self.shapes.get(options)
        except TypeError:  # extras holding lists
            return keys.options_digest(options, self.code_of)
        if known is None:
            known = self.shapes[options] = keys.options_digest(options, self.code_of)
        return known

    # -- answering ---------------------------------------------------------------------------

    def answer(self, future: RemoteFuture, function: Callable[..., Any], ref: FunctionRef,
               options: CallOptions, args: tuple,
               kwargs: dict[str, Any]) -> Callable[[Any, CallInfo], None] | None:
        """None when the call was answered (or will be) without running it; else the
        function that stores its result, to be called before its future resolves."""
        assert self.cache_directory is not None
        try:
            key = keys.call_key(function, ref.name, args, kwargs, by_code=self.by_code,
                                salt=options.cache_salt, key=options.cache_key,
                                code=self.code_of(function) if self.by_code else None,
                                shape=self.shape_of(options), code_of=self.code_of)
        except Exception as error:
            future._fail(SerializationError(
                f"the cache key of {ref.name} could not be computed: {type(error).__name__}: "
                f"{error}; pass cache_key= to key these arguments yourself"))
            return None
        path = store.entry_path(self.cache_directory, ref.name, key)
        with self.lock:
            primary = self.in_flight.get(key)
        if primary is None:
            hit, value = store.read_hit(path, key)  # no lock held: a slow disk blocks no one
            if hit:
                future.info.from_cache = True
                future._succeed(value)
                return None
            with self.lock:
                primary = self.in_flight.setdefault(key, future)
            if primary is future:
                future.add_done_callback(partial(self._unless_succeeded, key))
                return partial(self._store, key, path, ref, store.summarize(args, kwargs))
        future.info.from_cache = True
        primary.add_done_callback(partial(_copy_outcome, future))
        return None

    # -- storing -----------------------------------------------------------------------------

    def _store(self, key: str, path: str, ref: FunctionRef, summary: str, value: Any,
               info: CallInfo) -> None:
        """Runs in the hub thread before the future resolves: snapshot the value and queue its
        write. The call stays in ``in_flight`` until the entry is on disk."""
        metadata = {"function": ref.name, "key": key, "arguments": summary,
                    "runtime": info.runtime, "worker": info.worker_id}
        try:
            taken = store.snapshot(value)
        except Exception as error:
            self._leave_in_flight(key, info)
            self._not_stored(key, ref.name, error)
            return
        job = partial(self._write, key, info, path, ref.name, taken, metadata)
        with self.lock:
            if self.writer is None:
                self.writer = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="remotefn-cache")
            try:
                write: concurrent.futures.Future[None] | None = self.writer.submit(job)
            except RuntimeError:  # the interpreter is exiting: no new threads
                write = None
            if write is not None:
                self.writes.add(write)
                write.add_done_callback(self._written)
        if write is None:
            job()

    def _write(self, key: str, info: CallInfo, path: str, name: str, taken: Any,
               metadata: dict[str, Any]) -> None:
        try:
            store.write(path, taken, metadata, taken=True)
        except Exception as error:
            # Out of ``in_flight`` before the warning: whoever sees the warning and calls
            # again runs the call rather than being answered by the one that was not stored.
            self._leave_in_flight(key, info)
            self._not_stored(key, name, error)
        else:
            self._leave_in_flight(key, info)

    def _written(self, write: concurrent.futures.Future) -> None:
        with self.lock:
            self.writes.discard(write)

    def _not_stored(self, key: str, name: str, error: BaseException) -> None:
        warnings.warn(f"remotefn cache: the result of {name} was not stored: "
                      f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=1)

    def _unless_succeeded(self, key: str, future: RemoteFuture) -> None:
        """A failed or cancelled call leaves ``in_flight`` when it ends; one that succeeded
        leaves once its entry is written."""
        if future.cancelled() or future.exception() is not None:
            self._leave_in_flight(key, future.info)

    def _leave_in_flight(self, key: str, info: CallInfo) -> None:
        with self.lock:
            primary = self.in_flight.get(key)
            if primary is not None and primary.info is info:
                del self.in_flight[key]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is on disk; False if ``timeout`` passed first.
        Blocks; call it from no thread a write waits on (never the hub thread)."""
        with self.lock:
            pending = list(self.writes)
        done, not_done = concurrent.futures.wait(pending, timeout)
        return not not_done

    def close(self) -> None:
        """Flush the writes and stop the writer thread; a later write starts another."""
        with self.lock:
            writer, self.writer = self.writer, None
        if writer is not None:
            writer.shutdown(wait=True)


def _copy_outcome(target: RemoteFuture, source: concurrent.futures.Future) -> None:
    if source.cancelled():
        target.cancel()
        return
    error = source.exception()
    if error is not None:
        target._fail(error)
    else:
        target._succeed(source.result())
