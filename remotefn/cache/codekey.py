"""The code key of a function: a digest of everything in the user's own code that can change
what the function computes.

What enters, walking from the function through the names its code reads:

- its code objects, nested ones included (bytecode, constants, names, flags), without file
  names or line numbers, so adding a line above a function or moving its file keeps its key;
- its defaults and its closure cells' values; a ``functools.partial``'s function and bound
  arguments; a bound method's function and the object it is bound to;
- the global names its code reads (``co_names``, which hold attribute names too), looked up in
  the function's module: user functions and classes by their code, transitively (a class by
  its bases and its attributes: methods, properties, class-level values); user modules by the
  attributes the code names; immutable values (numbers, strings, bytes, tuples and frozensets
  of them) by value; mutable or unpicklable values by name, with a warning the first time;
- installed libraries (modules under an installed ``site-packages``, the standard library, and
  remotefn itself) by name and version, never by code.

User code is a module whose file is not under an installed package's directory nor the
standard library: the script (``__main__``), its modules, and an editable install of one's own
library. What cannot be followed: C extensions, data files, names looked up dynamically
(``getattr(module, name)``, ``globals()[name]``), and calls through objects passed in.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.metadata
import logging
import os
import site
import sys
import sysconfig
import threading
import types
import warnings
from typing import Any, Callable

logger = logging.getLogger(__name__)

#: Values entered by value: immutable, and equal values mean the same thing.
_SCALARS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))

#: Class attributes that carry no code of the class's own (dataclass fields, slots...).
_SKIPPED = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__",
                      "__annotations__", "__slots__", "__dataclass_fields__",
                      "__dataclass_params__", "__match_args__", "__orig_bases__",
                      "__parameters__", "__abstractmethods__", "_abc_impl"})

_DESCRIPTORS = (types.MemberDescriptorType, types.GetSetDescriptorType,
                types.WrapperDescriptorType, types.MethodDescriptorType)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def code_key(function: Any, value_digest: Callable[[Any], bytes]) -> bytes:
    """The code key of ``function`` (any callable). ``value_digest`` turns a value (a default,
    a cell, a partial's argument) into bytes, raising for one it cannot hash."""
    walk = _Walk(value_digest)
    walk.callable(function, getattr(function, "__qualname__", type(function).__qualname__))
    return walk.digest.digest()


class _Walk:
    """One walk from one function; each object is visited once (a second visit, or a cycle,
    enters by name)."""

    def __init__(self, value_digest: Callable[[Any], bytes]) -> None:
        self.digest = hashlib.sha256()
        self.value_digest = value_digest
        self.seen: dict[int, str] = {}
        self.keep: list[Any] = []  # holds visited objects so that their ids stay unique

    def put(self, *parts: str | bytes) -> None:
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            self.digest.update(len(data).to_bytes(8, "little") + data)

    def first_visit(self, obj: Any, label: str) -> bool:
        known = self.seen.get(id(obj))
        if known is not None:
            self.put("seen", known)
            return False
        self.seen[id(obj)] = label
        self.keep.append(obj)
        return True

    # -- callables ---------------------------------------------------------------------------

    def callable(self, function: Any, label: str) -> None:
        if getattr(type(function), "__remotefn_handle__", False):  # a handle: its function
            function = function.__wrapped__
        if isinstance(function, functools.partial):
            self.put("partial")
            self.callable(function.func, label + ".func")
            self.value(function.args, label + ".args", by_name_ok=False)
            self.value(function.keywords, label + ".keywords", by_name_ok=False)
            return
        if isinstance(function, types.MethodType):
            self.put("method")
            self.callable(function.__func__, label)
            self.value(function.__self__, label + ".__self__", by_name_ok=False)
            return
        if isinstance(function, types.FunctionType):
            self.function(function, label)
        elif isinstance(function, type):
            self.cls(function)
        elif callable(function) and not isinstance(function, types.BuiltinFunctionType) \
                and _is_user(type(function).__module__):
            self.put("instance")  # a callable object: its class's code and its state
            self.cls(type(function))
            self.value(function, label, by_name_ok=False)
        else:
            self.library(function)

    def function(self, function: types.FunctionType, label: str) -> None:
        if not _is_user(function.__module__):
            self.library(function)
            return
        if not self.first_visit(function, label):
            return
        self.put("function", function.__qualname__)
        names: set[str] = set()
        self.code(function.__code__, names)
        for default in (function.__defaults__, function.__kwdefaults__):
            self.value(default, label + ".defaults", by_name_ok=False)
        for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell: a name not yet bound when the closure was made
                self.put("empty cell", name)
                continue
            self.reference(content, f"{label}.<{name}>", by_name_ok=False)
        self.globals(function.__globals__, names)

    def code(self, code: types.CodeType, names: set[str]) -> None:
        """A code object and the ones nested in it, without file names or line numbers."""
        names.update(code.co_names)
        self.put("code", code.co_code, repr((code.co_argcount, code.co_posonlyargcount,
                                             code.co_kwonlyargcount, code.co_flags,
                                             code.co_names, code.co_varnames,
                                             code.co_freevars, code.co_cellvars)),
                 getattr(code, "co_exceptiontable", b""))
        for constant in code.co_consts:
            self.constant(constant, names)

    def constant(self, constant: Any, names: set[str]) -> None:
        if isinstance(constant, types.CodeType):
            self.code(constant, names)
        elif isinstance(constant, (tuple, frozenset)):
            items = constant if isinstance(constant, tuple) else sorted(constant, key=repr)
            self.put(f"{type(constant).__name__}[{len(constant)}]")
            for item in items:
                self.constant(item, names)
        else:
            self.put(type(constant).__name__, repr(constant))

    def globals(self, namespace: dict[str, Any], names: set[str]) -> None:
        module = namespace.get("__name__", "?")
        for name in sorted(names):
            if name in namespace:
                self.reference(namespace[name], f"{module}.{name}", names=names)

    # -- what a name refers to ---------------------------------------------------------------

    def reference(self, obj: Any, label: str, *, by_name_ok: bool = True,
                  names: set[str] | None = None) -> None:
        self.put("name", label)
        if isinstance(obj, types.ModuleType):
            self.module(obj, names or set())
        elif isinstance(obj, (types.FunctionType, functools.partial, types.MethodType)) or \
                getattr(type(obj), "__remotefn_handle__", False):
            self.callable(obj, label)
        elif isinstance(obj, type):
            self.cls(obj)
        elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)) or \
                callable(obj) and not _is_user(type(obj).__module__):
            self.library(obj)  # a library's callable object (numpy's ufuncs, dispatchers)
        else:
            self.value(obj, label, by_name_ok=by_name_ok)

    def module(self, module: types.ModuleType, names: set[str]) -> None:
        if not _is_user(module.__name__):
            self.library(module)
            return
        if not self.first_visit(module, module.__name__):
            return
        self.put("module", module.__name__)
        namespace = vars(module)
        for name in sorted(names):
            if name in namespace:
                self.reference(namespace[name], f"{module.__name__}.{name}", names=names)

    def cls(self, cls: type) -> None:
        if not _is_user(cls.__module__):
            self.library(cls)
            return
        label = f"{cls.__module__}.{cls.__qualname__}"
        if not self.first_visit(cls, label):
            return
        self.put("class", label)
        for base in cls.__bases__:
            self.cls(base)
        for name, attribute in sorted(vars(cls).items()):
            if name in _SKIPPED:
                continue
            if isinstance(attribute, _DESCRIPTORS):  # slots and C-level attributes
                continue
            if isinstance(attribute, (staticmethod, classmethod)):
                attribute = attribute.__func__
            if isinstance(attribute, functools.cached_property):
                attribute = attribute.func
            if isinstance(attribute, property):
                for accessor in (attribute.fget, attribute.fset, attribute.fdel):
                    if accessor is not None:
                        self.reference(accessor, f"{label}.{name}")
                continue
            if name.startswith("_") and name.endswith("_") and \
                    not isinstance(attribute, types.FunctionType):
                continue  # dunder and sunder values: what Python and enum keep for a class
            self.reference(attribute, f"{label}.{name}")

    def library(self, obj: Any) -> None:
        """Code we do not read: its qualified name and its distribution's version."""
        module = obj.__name__ if isinstance(obj, types.ModuleType) else \
            getattr(obj, "__module__", None) or type(obj).__module__
        name = "" if isinstance(obj, types.ModuleType) else \
            getattr(obj, "__qualname__", None) or type(obj).__qualname__
        self.put("library", str(module), str(name), _version(str(module)))

    def value(self, value: Any, label: str, *, by_name_ok: bool) -> None:
        """A value: by value when it is immutable (or, for cells, defaults and bound arguments,
        always); else by name, with a warning the first time."""
        if value is None:
            self.put("None")
            return
        if by_name_ok and not _immutable(value):
            if isinstance(value, logging.Logger):
                return
            self.put("by name", label)
            if not isinstance(value, type) and _is_user(type(value).__module__):
                self.cls(type(value))
            _warn_once(label, f"{label} ({type(value).__name__}) is mutable: the cache key "
                              "holds its name, not its contents; change cache_salt= when "
                              "you change it")
            return
        if isinstance(value, (types.FunctionType, functools.partial, types.MethodType)):
            self.callable(value, label)
            return
        if isinstance(value, enum.Enum):
            self.put("enum", type(value).__qualname__, value.name)
            return
        if isinstance(value, dict) and any(callable(item) for item in value.values()):
            self.put(f"dict[{len(value)}]")
            for name in sorted(value, key=repr):
                self.put(repr(name))
                self.value(value[name], f"{label}[{name!r}]", by_name_ok=False)
            return
        if isinstance(value, (tuple, list)) and any(callable(item) for item in value):
            self.put(f"{type(value).__name__}[{len(value)}]")
            for index, item in enumerate(value):
                self.value(item, f"{label}[{index}]", by_name_ok=False)
            return
        if not isinstance(value, type) and _is_user(type(value).__module__):
            self.cls(type(value))  # its methods, by code; its state below, without its class
            state = getattr(value, "__dict__", None)
            if isinstance(state, dict) and type(value).__reduce_ex__ is object.__reduce_ex__:
                value = state
        try:
            self.put("value", self.value_digest(value))
        except Exception as error:
            self.put("unhashable", label, type(value).__qualname__)
            _warn_once(label, f"{label} cannot be hashed ({type(error).__name__}: {error}): "
                              "the cache key holds its name, not its contents; change "
                              "cache_salt= when you change it")


def _immutable(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, enum.Enum):
        return _immutable(value.value)
    if type(value) in (tuple, frozenset):
        return all(_immutable(item) for item in value)
    return False


def _warn_once(label: str, message: str) -> None:
    with _warned_lock:
        if label in _warned:
            return
        _warned.add(label)
    warnings.warn(f"remotefn cache: {message}", RuntimeWarning, stacklevel=2)


@functools.lru_cache(maxsize=None)
def _library_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(name) for name in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")}
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # site of some virtual environments
        pass
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # remotefn itself
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths if p))


@functools.lru_cache(maxsize=4096)
def _is_user_file(path: str) -> bool:
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not real.startswith(_library_roots())


def _is_user(module_name: str | None) -> bool:
    """Whether the module is the user's own code (see the module docstring)."""
    if module_name is None or module_name == "__main__":
        return True
    if module_name == "remotefn" or module_name.startswith("remotefn."):
        return False
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None:  # code made at run time (exec) under a name of its own
        return True
    return path is not None and _is_user_file(path)  # no file: built in or frozen


@functools.lru_cache(maxsize=None)
def _version(module_name: str) -> str:
    """The version of the distribution that provides ``module_name`` (Python's for the
    standard library and built-in modules)."""
    top = module_name.split(".", 1)[0]
    python = f"python {sys.version.split()[0]}"
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return python
    version = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(version, str):
        return f"{top} {version}"
    try:
        return f"{top} {importlib.metadata.version(top)}"
    except Exception:  # the distribution is named otherwise: look it up (slower, once)
        pass
    try:
        distributions = importlib.metadata.packages_distributions().get(top, ())
        if distributions:
            return f"{distributions[0]} {importlib.metadata.version(distributions[0])}"
    except Exception:  # broken metadata: fall back on Python's version
        logger.debug("no distribution found for %s", top, exc_info=True)
    return python
