"""The session's side of the result cache: answering calls from disk or from an identical
call in flight, and storing results before their futures resolve."""

from __future__ import annotations

import concurrent.futures
import threading
import warnings
from functools import partial
from typing import Any, Callable

from ..errors import SerializationError
from ..future import CallInfo, RemoteFuture
from ..options import CallOptions
from ..protocol.shipping import FunctionRef
from . import keys, store


class CacheFront:
    """Used by a session from any thread; ``in_flight`` is guarded by ``lock``."""

    def __init__(self, cache_directory: str | None, by_code: bool) -> None:
        self.cache_directory = cache_directory
        self.by_code = by_code
        self.in_flight: dict[str, RemoteFuture] = {}
        self.lock = threading.Lock()

    def applies(self, options: CallOptions) -> bool:
        """Whether calls with ``options`` use the cache; ``ValueError`` for cache=True
        without a cache directory."""
        if options.cache is True and self.cache_directory is None:
            raise ValueError("cache=True needs a session with a cache_directory: "
                             "remotefn.session(cache_directory='...')")
        return self.cache_directory is not None and options.cache is not False

    def answer(self, future: RemoteFuture, function: Callable[..., Any], ref: FunctionRef,
               options: CallOptions, args: tuple,
               kwargs: dict[str, Any]) -> Callable[[Any, CallInfo], None] | None:
        """None when the call was answered (or will be) without running it; else the
        function that stores its result, to be called before its future resolves."""
        assert self.cache_directory is not None
        try:
            key = keys.call_key(function, ref.name, args, kwargs, by_code=self.by_code,
                                salt=options.cache_salt, key=options.cache_key)
        except Exception as error:
            future._fail(SerializationError(
                f"the cache key of {ref.name} could not be computed: {type(error).__name__}: "
                f"{error}; pass cache_key= to key these arguments yourself"))
            return None
        path = store.entry_path(self.cache_directory, ref.name, key)
        with self.lock:
            primary = self.in_flight.get(key)
            if primary is None:
                hit, value = store.read_hit(path)
                if not hit:
                    self.in_flight[key] = future
        if primary is not None:
            future.info.from_cache = True
            primary.add_done_callback(partial(_copy_outcome, future))
            return None
        if hit:
            future.info.from_cache = True
            future._succeed(value)
            return None
        future.add_done_callback(partial(self._leave_in_flight, key))
        return partial(self._store, key, path, ref, store.summarize(args, kwargs))

    def _store(self, key: str, path: str, ref: FunctionRef, summary: str, value: Any,
               info: CallInfo) -> None:
        """Write the entry; runs before the future resolves, so it is there once it has."""
        try:
            store.write(path, value, {"function": ref.name, "key": key, "arguments": summary,
                                      "runtime": info.runtime, "worker": info.worker_id})
        except Exception as error:
            warnings.warn(f"remotefn cache: the result of {ref.name} was not stored: "
                          f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=1)

    def _leave_in_flight(self, key: str, future: RemoteFuture) -> None:
        with self.lock:
            self.in_flight.pop(key, None)


def _copy_outcome(target: RemoteFuture, source: concurrent.futures.Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target._fail(source.exception())
    else:
        target._succeed(source.result())
