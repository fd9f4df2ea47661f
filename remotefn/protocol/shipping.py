"""Shipping functions to workers: pickled once, by name where the worker can import them,
else by value.

Kept free of heavy imports: a worker unpickling a function imports this module. A function
without a closure (a script's plain ``def``) is pickled by value with its compiled code and the
globals it reads, rebuilt here, so that a worker running it does not import cloudpickle (about
8 ms of a fresh worker's start); anything else pickled by value (closures, classes, lambdas with
captured values) is cloudpickle's.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import io
import marshal
import sys
import types
from typing import Any, Callable, Iterator, NamedTuple

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
    try:
        payload = dumps(_ByName(*importable) if importable else function)
    except Exception as error:
        raise SerializationError(f"the function {label} cannot be pickled: "
                                 f"{type(error).__name__}: {error}") from error
    return FunctionRef(hashlib.blake2b(payload, digest_size=16).digest(), payload, label)


# -- plain functions by value ---------------------------------------------------------------

_PICKLER: Any = None


def dumps(obj: Any) -> bytes:
    """cloudpickle's pickle of ``obj``, except that plain functions and importable modules in
    it need only this module to load."""
    file = io.BytesIO()
    _pickler_class()(file, protocol=5).dump(obj)
    return file.getvalue()


def _pickler_class() -> Any:
    """cloudpickle's pickler, with plain functions by value as :func:`_function_skeleton`
    rebuilds them (made on first use: cloudpickle is imported only where functions are
    pickled)."""
    global _PICKLER
    if _PICKLER is None:
        import cloudpickle  # here, not at the top: workers import this module too

        class Pickler(cloudpickle.CloudPickler):
            def reducer_override(self, obj: Any) -> Any:
                if type(obj) is types.FunctionType and obj.__closure__ is None \
                        and importable_name(obj) is None:
                    # globals_ref: id of a module's globals -> the one dict its functions
                    # share over there, closures (cloudpickle's) included
                    return _reduce_plain_function(obj, self.globals_ref)
                if type(obj) is types.ModuleType and _importable_module(obj):
                    return importlib.import_module, (obj.__name__,)
                return super().reducer_override(obj)

        _PICKLER = Pickler
    return _PICKLER


def _reduce_plain_function(function: types.FunctionType,
                           shared_globals: dict[int, dict[str, Any]]) -> tuple[Any, ...]:
    """A function without a closure as a skeleton (its code) and a state (the globals its code
    reads, its defaults and attributes), set once the skeleton is memoized, so that a function
    that calls itself, or functions that call each other, pickle."""
    namespace = function.__globals__
    shared = shared_globals.get(id(namespace))
    if shared is None:  # what relative imports and globals() read, as cloudpickle sends it
        shared = shared_globals[id(namespace)] = {
            name: namespace[name] for name in _MODULE_ATTRIBUTES if name in namespace}
    reads = {name: namespace[name] for name in _global_names(function.__code__)
             if name in namespace}
    attributes = {name: getattr(function, name) for name in _ATTRIBUTES
                  if hasattr(function, name)}
    attributes["__dict__"] = function.__dict__
    return (_function_skeleton, (marshal.dumps(function.__code__), function.__name__, shared,
                                 sys.version_info[:2]),
            (reads, attributes, _submodules(function.__code__, reads.values())), None, None,
            _function_setstate)


def _submodules(code: types.CodeType, values: Any) -> list[types.ModuleType]:
    """The loaded submodules of the packages in ``values`` that ``code`` can reach as
    attributes (``xml.etree.ElementTree``): sent by name, so that the worker imports them."""
    names = _all_names(code)
    found = []
    for value in values:
        if type(value) is types.ModuleType and getattr(value, "__package__", None):
            prefix = value.__name__ + "."
            for name, module in list(sys.modules.items()):
                if name.startswith(prefix) and type(module) is types.ModuleType \
                        and not set(name[len(prefix):].split(".")) - names:
                    found.append(module)
    return found


def _all_names(code: types.CodeType) -> set[str]:
    """The names ``code`` and the code nested in it use."""
    return set().union(*(nested.co_names for nested in _nested(code)))


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code nested in it (comprehensions, inner functions, lambdas)."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _nested(constant)


def _importable_module(module: types.ModuleType) -> bool:
    """Whether a worker can import ``module`` by its name (cloudpickle's choice too)."""
    name = module.__name__
    return (name != "__main__" and sys.modules.get(name) is module
            and not pickled_by_value(name))


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"})
_MODULE_ATTRIBUTES = ("__package__", "__name__", "__path__", "__file__")
_ATTRIBUTES = ("__qualname__", "__module__", "__doc__", "__defaults__", "__kwdefaults__",
               "__annotations__", "__type_params__")


def _global_names(code: types.CodeType) -> set[str]:
    """The global names ``code`` and the code nested in it (comprehensions, inner functions)
    load, store or delete (not every name it uses: ``x.session`` reads no global ``session``)."""
    import dis  # the session's side only

    return {instruction.argval for nested in _nested(code)
            for instruction in dis.get_instructions(nested)
            if instruction.opname in _GLOBAL_OPS}


def _function_skeleton(code: bytes, name: str, namespace: dict[str, Any],
                       python: tuple[int, int]) -> types.FunctionType:
    """The function of compiled ``code``, its globals ``namespace`` (filled by
    :func:`_function_setstate`)."""
    if tuple(python) != sys.version_info[:2]:
        raise SerializationError(
            f"the function {name} was defined under Python {python[0]}.{python[1]} and cannot "
            f"run under this worker's Python {sys.version_info[0]}.{sys.version_info[1]}: "
            "workers must run the session's Python version (the backend's python= setting)")
    given = namespace.get("__builtins__", builtins)
    namespace["__builtins__"] = builtins  # the worker's, whatever another function's globals read
    function = types.FunctionType(marshal.loads(code), namespace, name)
    namespace["__builtins__"] = given
    return function


def _function_setstate(function: types.FunctionType,
                       state: tuple[dict[str, Any], dict[str, Any], list[Any]]) -> None:
    reads, attributes = state[:2]  # state[2]: the submodules, imported as they loaded
    function.__globals__.update(reads)
    function.__dict__.update(attributes.pop("__dict__"))
    for name, value in attributes.items():
        setattr(function, name, value)
