"""Cache keys: a hash of everything that can change a call's value.

The function enters by its qualified name and its code key (:mod:`.codekey`: its code, the
user code it reaches, closures, partials), or by its name alone with ``cache_by="name"``; the
options that shape the result (``cores``, ``threads_per_core``, ``gpus``, ``env``, ``cwd``,
``init`` and its code) and an optional salt or user key are mixed in. Arguments are hashed
canonically: equal containers hash equal whatever their order, arrays by dtype, shape and bytes
without copies, functions by their code key, anything else by its pickle.
"""

from __future__ import annotations

import hashlib
import types
from functools import partial
from typing import Any, Callable

import cloudpickle

from ..options import CallOptions
from . import codekey

#: Changes whenever what a key covers changes, so that older entries are never read.
KEY_VERSION = b"remotefn-cache-key 2"

CodeOf = Callable[[Any], bytes]


def code_digest(function: Callable[..., Any]) -> bytes:
    """The code key of ``function``: its code and the user code it reaches (see
    :mod:`.codekey`). Raises nothing: what cannot be hashed enters by name, with a warning."""
    return codekey.code_key(function, value_digest)


def value_digest(value: Any, code_of: CodeOf | None = None) -> bytes:
    """A digest of ``value``, hashed canonically; raises ``TypeError`` when it cannot be."""
    digest = hashlib.sha256()
    _hash_value(digest, value, code_of)
    return digest.digest()


def options_digest(options: CallOptions, code_of: CodeOf = code_digest) -> bytes:
    """The options that shape a call's value: its ranks, threads, GPUs, environment, working
    directory and ``init`` (by its code key)."""
    digest = hashlib.sha256()
    digest.update(repr((options.cores, options.threads_per_core, options.gpus,
                        tuple(options.env), options.cwd)).encode())
    if options.init is not None:
        digest.update(b"\0init\0" + code_of(options.init))
    return digest.digest()


def call_key(function: Callable[..., Any], name: str, args: tuple, kwargs: dict[str, Any], *,
             by_code: bool = True, salt: str | None = None,
             key: Callable[..., Any] | None = None, options: CallOptions | None = None,
             code: bytes | None = None, shape: bytes | None = None,
             code_of: CodeOf = code_digest) -> str:
    """The hex key of a call; raises ``TypeError`` when an argument cannot be hashed.

    ``code`` (the function's code key) and ``shape`` (:func:`options_digest`) may be passed
    when the caller keeps them; ``code_of`` computes the code key of a function (the
    function's own, ``init``, a key function, functions among the arguments).
    """
    digest = hashlib.sha256(KEY_VERSION)
    digest.update(name.encode())
    if by_code:
        digest.update(code if code is not None else code_of(function))
    if shape is None and options is not None:
        shape = options_digest(options, code_of)
    if shape is not None:
        digest.update(b"\0options\0" + shape)
    if salt is not None:
        digest.update(b"\0salt\0" + salt.encode())
    if key is not None:
        custom = key(*args, **kwargs)
        digest.update(b"\0key\0" + code_of(key))
        digest.update(b"\0value\0" + (custom if isinstance(custom, bytes)
                                        else repr(custom).encode()))
    else:
        _hash_value(digest, args, code_of)
        _hash_value(digest, kwargs, code_of)
    return digest.hexdigest()


def _hash_value(digest: Any, value: Any, code_of: CodeOf | None = None) -> None:
    """Feed ``value`` into ``digest`` canonically: equal containers hash equal whatever their
    order (dicts, sets), and arrays by dtype, shape and bytes without copying them."""
    kind = type(value)
    if value is None or kind in (bool, int, float, complex, str, bytes):
        digest.update(f"{kind.__name__}:{value!r};".encode())
    elif kind in (list, tuple):
        digest.update(f"{kind.__name__}[{len(value)}](".encode())
        for item in value:
            _hash_value(digest, item, code_of)
        digest.update(b")")
    elif kind is dict:
        digest.update(f"dict[{len(value)}](".encode())
        for item_key, item in sorted(value.items(), key=lambda kv: repr(kv[0])):
            _hash_value(digest, item_key, code_of)
            _hash_value(digest, item, code_of)
        digest.update(b")")
    elif kind in (set, frozenset):
        digest.update(f"{kind.__name__}[{len(value)}](".encode())
        for item in sorted(value, key=repr):
            _hash_value(digest, item, code_of)
        digest.update(b")")
    elif is_array(value):
        import numpy as np

        array = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        digest.update(f"ndarray:{array.dtype.str}:{array.shape};".encode())
        if array.dtype.hasobject:
            _hash_value(digest, array.tolist(), code_of)
        else:
            digest.update(array.data.cast("B"))
    elif code_of is not None and (kind in _CALLABLES or getattr(kind, "__remotefn_handle__",
                                                                 False)):
        digest.update(b"code:" + code_of(value))
    else:
        digest.update(b"pickle:")
        digest.update(cloudpickle.dumps(value, protocol=5))


_CALLABLES = (types.FunctionType, types.MethodType, partial)


def is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"
