"""The HDF5 store: one file per entry, named by the function and the call's key.

Entries are written to a temporary name and renamed into place, so a crash never leaves half
an entry and concurrent writers of one key leave one valid file. Each entry carries the
SHA-256 of its payload (``checksum``) and the store's format (``format``): an entry that fails
either check is a miss with a warning, and is replaced when the call's result is stored. Any
other read error (permissions, locks, file limits) is a miss with a warning too, but leaves the
file alone: it may well be good.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import re
import socket
import stat
import time
import warnings
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .._version import __version__
from .keys import is_array

logger = logging.getLogger(__name__)

SUFFIX = ".h5"
#: The layout of an entry; an entry of another format is a miss (and is replaced).
FORMAT = 2
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


def snapshot(value: Any) -> Any:
    """What :func:`write` stores for ``value``, taken now: a copy of a numpy array, else the
    pickle (bytes), so that a caller changing the value later does not change the entry.
    Raises ``TypeError`` (from pickle) when the value cannot be stored."""
    if is_array(value) and not value.dtype.hasobject:
        return value.copy()
    return cloudpickle.dumps(value, protocol=5)


def write(path: str, value: Any, metadata: dict[str, Any], *, taken: bool = False) -> None:
    """Store ``value`` at ``path`` atomically (``taken``: ``value`` is already a
    :func:`snapshot`); numpy arrays become real HDF5 datasets. Raises ``TypeError`` (from
    pickle) when the value cannot be stored, ``OSError`` when the file cannot be written."""
    import h5py

    stored = value if taken else snapshot(value)
    payload = stored if isinstance(stored, bytes) else None
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                        f"{time.monotonic_ns()}.tmp")
    try:
        with h5py.File(temporary, "w") as file:
            if payload is None:
                file.create_dataset("result", data=stored)
                checksum = _checksum(stored)
            else:
                import numpy as np

                file.create_dataset("pickle", data=np.frombuffer(payload, dtype=np.uint8))
                checksum = _checksum(payload)
            for name, item in {**metadata, "checksum": checksum, "format": FORMAT,
                               "remotefn_version": __version__,
                               "created": time.time(), "host": socket.gethostname()}.items():
                if item is not None:
                    file.attrs[name] = item
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class DamagedEntry(ValueError):
    """An entry whose payload fails its checksum, or whose layout is not this store's."""


#: errno values of a read that failed for a reason other than the file's content.
_TRANSIENT = {errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.EAGAIN,
              errno.ENOLCK, errno.EBUSY, errno.EINTR, errno.ENOMEM, errno.ESTALE,
              errno.ETIMEDOUT}


def load(path: str, key: str | None = None) -> Any:
    """The value stored at ``path`` (whose key must be ``key``, if given); raises
    :class:`DamagedEntry` (a ``ValueError``) when the file's content is not a good entry
    (checksum, format, a file HDF5 cannot read), and ``OSError`` when the file cannot be
    read (permissions, locks, file limits)."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read below
        raise DamagedEntry("not a regular file")
    with open(path, "rb") as raw:  # permissions and file limits fail here, with their errno
        raw.read(8)
    try:
        stored, pickled = _read(path, key)
    except DamagedEntry:
        raise
    except OSError as error:
        if _transient(error) or isinstance(error, FileNotFoundError):  # deleted meanwhile
            raise
        raise DamagedEntry(f"HDF5 cannot read it ({error})") from error
    except Exception as error:  # h5py's (and numpy's) errors for a damaged layout
        raise DamagedEntry(f"HDF5 cannot read it ({type(error).__name__}: {error})") from error
    return pickle.loads(stored) if pickled else stored


def _read(path: str, key: str | None) -> tuple[Any, bool]:
    """The checked payload of the entry at ``path``, and whether it is a pickle."""
    import h5py

    try:
        file = h5py.File(path, "r", locking=False)
    except TypeError:  # an h5py without the locking keyword
        file = h5py.File(path, "r")
    with file:
        attrs = file.attrs
        if attrs.get("format") != FORMAT or "checksum" not in attrs:
            raise DamagedEntry(f"format {attrs.get('format')!r}, expected {FORMAT}")
        if key is not None and _text(attrs.get("key")) != key:
            raise DamagedEntry(f"key {_text(attrs.get('key'))!r}, expected {key!r}")
        expected = _text(attrs["checksum"])
        pickled = "result" not in file
        stored = file["pickle"][()].tobytes() if pickled else file["result"][()]
    found = _checksum(stored)
    if found != expected:
        raise DamagedEntry(f"checksum {found[:16]}... of the payload, stored "
                           f"{expected[:16]}...")
    return stored, pickled


def read_hit(path: str, key: str | None = None) -> tuple[bool, Any]:
    """``(True, value)`` for a good entry; ``(False, None)`` when absent. A damaged entry
    (checksum, format, a file HDF5 cannot read) is a miss with a warning naming the file; it
    is replaced when the result is stored. Any other read error (permissions, locks, file
    limits) is a miss with a warning, and the file is left alone."""
    try:
        return True, load(path, key)
    except FileNotFoundError:
        return False, None
    except Exception as error:  # DamagedEntry, OSError, or what unpickling the value raised
        if _transient(error):
            warnings.warn(f"remotefn cache: could not read {path} ({type(error).__name__}: "
                          f"{error}); the call runs, and the entry is left in place",
                          RuntimeWarning, stacklevel=2)
        else:
            warnings.warn(f"remotefn cache: ignoring the damaged entry {path} "
                          f"({type(error).__name__}: {error}); it will be recomputed",
                          RuntimeWarning, stacklevel=2)
        return False, None


def _transient(error: BaseException) -> bool:
    """Whether a read failed for a reason other than the file's content."""
    if isinstance(error, DamagedEntry) or not isinstance(error, OSError):
        return False
    if error.errno in _TRANSIENT:
        return True
    text = str(error).lower()  # HDF5's own errors: "unable to lock file, errno = 11, ..."
    return ("unable to lock" in text  # not "sblock" of a truncated file's message
            or any(f"errno = {number}," in text for number in _TRANSIENT))


def _checksum(payload: Any) -> str:
    """The SHA-256 of a pickle, or of an array's bytes (read in place)."""
    if isinstance(payload, bytes):
        return hashlib.sha256(payload).hexdigest()
    import numpy as np

    flat = np.ascontiguousarray(payload).reshape(-1)
    return hashlib.sha256(flat.view(np.uint8).data).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entries(directory: str, function: str | None = None) -> list[CacheEntry]:
    """The entries in ``directory`` (those of ``function`` only, if given), oldest first."""
    import h5py

    found: list[CacheEntry] = []
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
    """The attributes stored with the entry at ``path`` (function, key, arguments, runtime,
    worker, versions, ...), as ``python -m remotefn cache show`` prints them; raises
    ``OSError`` when the file cannot be read."""
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

