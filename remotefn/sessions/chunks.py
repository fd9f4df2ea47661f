"""``Session.map(..., chunksize=k)``: calls sent to a worker k at a time."""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any, Callable, Iterable, Iterator

from ..options import CallOptions


class Chunked:
    """Stands for a handle in ``map(..., chunksize=k)``: runs a chunk of calls with the
    options of the mapped function."""

    __remotefn_handle__ = True

    def __init__(self, function: Callable[..., Any], options: CallOptions) -> None:
        self.__wrapped__ = partial(_run_chunk, function)
        self.remote_options = options


def chunks(items: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _run_chunk(function: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [function(*args) for args in chunk]
