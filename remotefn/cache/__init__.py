"""The content-hash result cache: one HDF5 file per call, reused by later runs.

Keys (:mod:`.keys`: a call's key; :mod:`.codekey`: a function's code and the user code it
reaches), the HDF5 store (:mod:`.store`: checksummed entries) and the session's side of it
(:mod:`.front`: answering calls from disk or from an identical call in flight, writing entries
in a thread of its own). Inspect a
cache from Python (:func:`entries`, :func:`load`, :func:`delete`) or the shell
(``python -m remotefn cache ls|show|clear DIRECTORY``).

May import: :mod:`remotefn.future`, :mod:`remotefn.options`, :mod:`remotefn.errors`,
:mod:`remotefn.protocol.shipping`, :mod:`remotefn._version`; h5py and numpy lazily.
"""

from .keys import call_key, code_digest
from .store import CacheEntry, delete, entries, load, metadata_of

__all__ = ["CacheEntry", "call_key", "code_digest", "delete", "entries", "load", "metadata_of"]
