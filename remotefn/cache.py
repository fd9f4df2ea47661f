"""The content-hash result cache: one HDF5 file per call, reused by later runs.

A call's key hashes the function (its qualified name and its code, or its name alone with
``cache_by="name"``), its arguments after dependencies are resolved, and an optional salt or
user key. Entries are written to a temporary name and renamed into place, so a crash never
leaves half an entry and concurrent writers of one key leave one valid file.

Inspect a cache from Python (:func:`entries`, :func:`load`, :func:`delete`) or the shell
(``python -m remotefn cache ls|show|clear DIRECTORY``).
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import pickle
import re
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import cloudpickle

from ._version import __version__

logger = logging.getLogger(__name__)

SUFFIX = ".h5"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# -- keys -------------------------------------------------------------------------------------


def code_digest(function: Callable[..., Any]) -> bytes:
    """A digest of a function's code: its bytecode, constants and names, recursively."""
    digest = hashlib.sha256()
    target = getattr(function, "__wrapped__", function)
    target = getattr(target, "__func__", target)
    code = getattr(target, "__code__", None)
    if code is None:  # builtins, callables without Python code: their name stands for them
        digest.update(repr(getattr(target, "__qualname__", type(target).__qualname__)).encode())
        return digest.digest()
    digest.update(marshal.dumps(code.replace(co_filename="", co_firstlineno=1)
                                if hasattr(code, "replace") else code))
    for value in (getattr(target, "__defaults__", None), getattr(target, "__kwdefaults__", None)):
        if value:
            _hash_value(digest, value)
    return digest.digest()


def call_key(function: Callable[..., Any], name: str, args: tuple, kwargs: dict[str, Any], *,
             by_code: bool = True, salt: str | None = None,
             key: Callable[..., Any] | None = None) -> str:
    """The hex key of a call; raises ``TypeError`` when an argument cannot be hashed."""
    digest = hashlib.sha256()
    digest.update(name.encode())
    if by_code:
        digest.update(code_digest(function))
    if salt is not None:
        digest.update(b"\0salt\0" + salt.encode())
    if key is not None:
        custom = key(*args, **kwargs)
        digest.update(b"\0key\0" + (custom if isinstance(custom, bytes) else repr(custom).encode()))
    else:
        _hash_value(digest, args)
        _hash_value(digest, kwargs)
    return digest.hexdigest()


def _hash_value(digest: Any, value: Any) -> None:
    """Feed ``value`` into ``digest`` canonically: equal containers hash equal whatever their
    order (dicts, sets), and arrays by dtype, shape and bytes without copying them."""
    kind = type(value)
    if value is None or kind in (bool, int, float, complex, str, bytes):
        digest.update(f"{kind.__name__}:{value!r};".encode())
    elif kind in (list, tuple):
        digest.update(f"{kind.__name__}[{len(value)}](".encode())
        for item in value:
            _hash_value(digest, item)
        digest.update(b")")
    elif kind is dict:
        digest.update(f"dict[{len(value)}](".encode())
        for item_key, item in sorted(value.items(), key=lambda kv: repr(kv[0])):
            _hash_value(digest, item_key)
            _hash_value(digest, item)
        digest.update(b")")
    elif kind in (set, frozenset):
        digest.update(f"{kind.__name__}[{len(value)}](".encode())
        for item in sorted(value, key=repr):
            _hash_value(digest, item)
        digest.update(b")")
    elif _is_array(value):
        import numpy as np

        array = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        digest.update(f"ndarray:{array.dtype.str}:{array.shape};".encode())
        if array.dtype.hasobject:
            _hash_value(digest, array.tolist())
        else:
            digest.update(memoryview(array).cast("B"))
    else:
        digest.update(b"pickle:")
        digest.update(cloudpickle.dumps(value, protocol=5))


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


# -- entries ----------------------------------------------------------------------------------


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

    payload = None if _is_array(value) and not value.dtype.hasobject else \
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
    if _is_array(value):
        return f"ndarray({value.dtype}, {value.shape})"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["CacheEntry", "call_key", "code_digest", "delete", "entries", "load", "metadata_of"]
