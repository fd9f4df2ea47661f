"""Shipping functions to workers: pickled once, by name where the worker can import them.

Kept free of heavy imports: a worker unpickling a function imports this module.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from typing import Any, Callable, NamedTuple

from ..errors import SerializationError


class FunctionRef(NamedTuple):
    """A function pickled once; workers receive ``payload`` once and ``digest`` afterwards."""

    digest: bytes
    payload: bytes
    name: str


class _ByName:
    """Pickles as 'import this attribute', for functions importable in the worker."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (import_function, (self.module, self.qualname))


def import_attribute(module: str, qualname: str) -> Any:
    """The object at ``module.qualname``, importing the module."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_function(module: str, qualname: str) -> Callable[..., Any]:
    """Import ``module.qualname``; a remote handle found there is unwrapped to its function
    (a handle bound to its class, ``@remote`` over ``@classmethod``, to the plain function)."""
    obj = import_attribute(module, qualname)
    if not getattr(obj, "__remotefn_handle__", False):
        return obj
    obj = obj.__wrapped__
    return obj.__func__ if isinstance(obj, types.MethodType) else obj


def pickled_by_value(module: str) -> bool:
    """Whether ``module`` was given to ``cloudpickle.register_pickle_by_value``."""
    found = sys.modules.get(module)
    if found is None:
        return False
    from cloudpickle import cloudpickle as implementation

    check = getattr(implementation, "_is_registered_pickle_by_value", None)
    return bool(check is not None and check(found))


def importable_name(function: Any) -> tuple[str, str] | None:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    if pickled_by_value(module):
        return None
    try:
        found = import_function(module, qualname)
    except Exception:
        return None
    return (module, qualname) if found is function else None


def function_ref(function: Callable[..., Any]) -> FunctionRef:
    """Pickle ``function`` once: by name when the worker can import it, else by value."""
    name = getattr(function, "__qualname__", None) or type(function).__name__
    module = getattr(function, "__module__", None)
    label = f"{module}.{name}" if module and module != "__main__" else name
    importable = importable_name(function)
    import cloudpickle  # here, not at the top: workers import this module too

    try:
        payload = (cloudpickle.dumps(_ByName(*importable)) if importable
                   else cloudpickle.dumps(function))
    except Exception as error:
        raise SerializationError(f"the function {label} cannot be pickled: "
                                 f"{type(error).__name__}: {error}") from error
    return FunctionRef(hashlib.blake2b(payload, digest_size=16).digest(), payload, label)
