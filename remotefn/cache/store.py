"""The HDF5 store: one file per entry, named by the function and the call's key.

Entries are written to a temporary name and renamed into place, so a crash never leaves half
an entry and concurrent writers of one key leave one valid file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .._version import __version__
from .keys import is_array

logger = logging.getLogger(__name__)

SUFFIX = ".h5"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CacheEntry:
    """One stored result."""

    path: str
    function: str
    key: str
    created: float
    runtime: float | None
    size: int

    def load(self) -> Any:
        return load(self.path)


def entry_path(directory: str, function_name: str, key: str) -> str:
    safe = _UNSAFE.sub("_", function_name).strip("_") or "function"
    return os.path.join(directory, f"{safe}_{key}{SUFFIX}")


def write(path: str, value: Any, metadata: dict[str, Any]) -> None:
    """Store ``value`` at ``path`` atomically; numpy arrays become real HDF5 datasets.
    Raises ``TypeError`` (from pickle) when the value cannot be stored."""
    import h5py

    payload = None if is_array(value) and not value.dtype.hasobject else \
        cloudpickle.dumps(value, protocol=5)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                        f"{time.monotonic_ns()}.tmp")
    try:
        with h5py.File(temporary, "w") as file:
            if payload is None:
                file.create_dataset("result", data=value)
            else:
                import numpy as np

                file.create_dataset("pickle", data=np.frombuffer(payload, dtype=np.uint8))
            for name, item in {**metadata, "remotefn_version": __version__,
                               "created": time.time(), "host": socket.gethostname()}.items():
                if item is not None:
                    file.attrs[name] = item
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load(path: str) -> Any:
    """The value stored at ``path``; raises ``OSError``/``ValueError`` for a damaged file."""
    import h5py

    with h5py.File(path, "r") as file:
        if "result" in file:
            return file["result"][()]
        return pickle.loads(file["pickle"][()].tobytes())


def read_hit(path: str) -> tuple[bool, Any]:
    """``(True, value)`` for a readable entry; ``(False, None)`` when absent. A damaged entry
    is a miss with a warning naming the file, and is removed so that it gets replaced."""
    if not os.path.exists(path):
        return False, None
    try:
        return True, load(path)
    except Exception as error:  # h5py raises OSError, KeyError, ValueError...
        warnings.warn(f"remotefn cache: ignoring the damaged entry {path} "
                      f"({type(error).__name__}: {error}); it will be recomputed",
                      RuntimeWarning, stacklevel=2)
        try:
            os.unlink(path)
        except OSError:
            pass
        return False, None


def entries(directory: str, function: str | None = None) -> list[CacheEntry]:
    """The entries in ``directory`` (those of ``function`` only, if given), oldest first."""
    import h5py

    found = []
    if not os.path.isdir(directory):
        return found
    for name in os.listdir(directory):
        if not name.endswith(SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            with h5py.File(path, "r") as file:
                attrs = dict(file.attrs)
        except Exception:
            continue
        entry = CacheEntry(path, str(attrs.get("function", "?")), str(attrs.get("key", "?")),
                           float(attrs.get("created", 0.0)),
                           float(attrs["runtime"]) if "runtime" in attrs else None,
                           os.path.getsize(path))
        if function is None or function in (entry.function,
                                             entry.function.rsplit(".", 1)[-1]):
            found.append(entry)
    return sorted(found, key=lambda e: e.created)


def delete(directory: str, function: str | None = None,
           older_than: float | None = None) -> int:
    """Delete entries (of ``function``; older than ``older_than`` seconds); how many went."""
    now = time.time()
    removed = 0
    for entry in entries(directory, function):
        if older_than is None or now - entry.created > older_than:
            os.unlink(entry.path)
            removed += 1
    return removed


def metadata_of(path: str) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as file:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in file.attrs.items()}


def summarize(args: tuple, kwargs: dict[str, Any], limit: int = 200) -> str:
    text = ", ".join([*(_short(a) for a in args), *(f"{k}={_short(v)}" for k, v in kwargs.items())])
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: Any) -> str:
    if is_array(value):
        return f"ndarray({value.dtype}, {value.shape})"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

