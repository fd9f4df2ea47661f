"""Cache keys: a hash of the function and of its arguments after dependencies are resolved.

The function enters by its qualified name and its code (bytecode, constants, names, defaults),
or by its name alone with ``cache_by="name"``; an optional salt or user key is mixed in.
Arguments are hashed canonically: equal containers hash equal whatever their order, arrays by
dtype, shape and bytes without copies, anything else by its pickle.
"""

from __future__ import annotations

import hashlib
import marshal
from typing import Any, Callable

import cloudpickle


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
    elif is_array(value):
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


def is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"
