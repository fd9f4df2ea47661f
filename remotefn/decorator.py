"""``@remote``: turn a function into a handle whose calls run on workers and return futures.

Importing this module and decorating stay cheap (a library that decorates its functions pays
it on every import): cloudpickle, the session machinery and the protocol load on first need.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import (Any, Callable, Coroutine, Generic, Iterable, Mapping, Protocol, SupportsIndex,
                    TypeVar, overload)

from .future import RemoteFuture
from .options import DEFAULT_OPTIONS, CallOptions, resolve

R = TypeVar("R")


def current() -> Any:
    """The session a call submits to. The session module (sockets, threads, the hub) is
    imported on the first call, not when a library that decorates its functions is imported;
    this function then replaces itself with the session module's."""
    global current
    from .sessions.defaults import current as found

    _register_with_cloudpickle()
    current = found
    return found()

#: How a handle found on a class binds (see :meth:`RemoteFunction.__get__`).
_INSTANCE, _CLASS, _STATIC = "instance", "class", "static"


#: What a handle copies from its function (the rest is read from the function on access).
_ASSIGNED = ("__module__", "__name__", "__qualname__", "__doc__")


class RemoteFunction(Generic[R]):
    """A function whose calls run remotely. Keeps the function's name, docstring, signature
    and module (other attributes are read from the function); a handle of a module-level
    function pickles by reference.

    On a class it binds like the function it wraps: ``Model(3).energy(2)`` submits
    ``energy(model, 2)``, so the instance is pickled with every call (and enters the cache
    key); what the worker changes in it is not sent back.
    """

    __slots__ = ("__wrapped__", "_self_options", "_self_binding", "__dict__", "__weakref__")
    __remotefn_handle__ = True

    def __init__(self, function: Callable[..., R], options: CallOptions = DEFAULT_OPTIONS,
                 binding: str = _INSTANCE) -> None:
        self.__wrapped__ = function
        attributes = self.__dict__
        for name in _ASSIGNED:
            try:
                attributes[name] = getattr(function, name)
            except AttributeError:
                pass
        self._self_options = options
        self._self_binding = binding
        if not _registered and "cloudpickle" in sys.modules:
            _register_with_cloudpickle()

    def __getattr__(self, name: str) -> Any:
        # Only for names the handle lacks: the function's own attributes (__code__,
        # __defaults__, what a user set on it).
        if name.startswith("_self_") or name == "__wrapped__":
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteFuture[R]:
        """Submit the call to the current session (see :func:`remotefn.current`); returns a
        future at once. Raises :class:`~remotefn.SerializationError` when an argument does
        not pickle, ``ValueError`` when the call can never fit in the session."""
        return current()._submit(self.__wrapped__, self._self_options, args, kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> "RemoteFunction[R]":
        """Bind as the wrapped function would: to the instance (a method), to the class
        (``@remote`` over ``@classmethod``) or not at all (over ``@staticmethod``)."""
        binding = self._self_binding
        if binding == _STATIC or (instance is None and binding == _INSTANCE):
            return self
        target = instance if binding == _INSTANCE else (owner or type(instance))
        return BoundRemoteFunction(self, target)

    @property
    def remote_options(self) -> CallOptions:
        """The validated options of this handle."""
        return self._self_options

    def options(self, **overrides: Any) -> "RemoteFunction[R]":
        """A new handle with some options changed; this one is left as it is. Raises
        ``TypeError`` or ``ValueError`` for a bad option, as :func:`remote` does."""
        return RemoteFunction(self.__wrapped__, resolve(overrides, self._self_options),
                              self._self_binding)

    def map(self, *iterables: Iterable[Any], progress: bool | Mapping[str, Any] = False,
            **keyword_iterables: Iterable[Any]) -> list[RemoteFuture[R]]:
        """Submit one call per element of ``zip(*iterables, *keyword_iterables.values())``;
        the futures, in order. Each keyword is an iterable too, giving that keyword argument
        of each call; for a keyword that is the same in every call, pass
        ``itertools.repeat(value)``. Returns without waiting, unless ``progress`` is set:
        then it shows a progress bar until every call is done, as :func:`remotefn.progress`
        does (``progress`` may be a dict of keywords for the bar, such as ``desc``). A
        function argument named ``progress`` is mapped positionally."""
        if not isinstance(progress, (bool, Mapping)):
            raise TypeError(f"map() progress must be True, False or a dict of progress bar "
                            f"keywords, got {progress!r} (to map a function argument named "
                            f"'progress', pass its values positionally)")
        futures = self._submit_each(iterables, keyword_iterables)
        if progress is False:
            return futures
        bar = {"desc": getattr(self.__wrapped__, "__name__", None)}
        bar.update(progress if isinstance(progress, Mapping) else {})
        from .progress import progress as show_progress
        return show_progress(futures, **bar)

    def _submit_each(self, iterables: tuple[Iterable[Any], ...],
                     keyword_iterables: dict[str, Iterable[Any]]) -> list[RemoteFuture[R]]:
        if not keyword_iterables:
            return [self(*args) for args in zip(*iterables)]
        names = list(keyword_iterables)
        columns = []
        for name, values in keyword_iterables.items():
            try:
                columns.append(iter(values))
            except TypeError:
                raise TypeError(f"map() keyword {name!r} must be an iterable with one value per "
                                f"call (for a constant, itertools.repeat(value)), got "
                                f"{values!r}") from None
        count = len(iterables)
        return [self(*row[:count], **dict(zip(names, row[count:])))
                for row in zip(*iterables, *columns)]

    def local(self, *args: Any, **kwargs: Any) -> R:
        """Run the function here, in this process and thread, as one rank of the remote call
        would: ``init`` runs once per process (per ``init`` function) and its dict fills the
        keyword arguments the call leaves out; with ``cores > 1`` the result is a list of the
        one value; a coroutine is run to its end with ``asyncio.run``. Blocks; raises what
        the function (or ``init``) raises."""
        return _run_locally(self.__wrapped__, self._self_options, args, kwargs)

    def __repr__(self) -> str:
        name = getattr(self.__wrapped__, "__qualname__", repr(self.__wrapped__))
        changed = {k: v for k, v in self._self_options.as_dict().items()
                   if v != getattr(DEFAULT_OPTIONS, k)}
        settings = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"<remote {name}({settings})>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # The standard pickler: by name wherever the name finds this very handle (__main__
        # included, as for plain functions). cloudpickle uses _reduce_for_cloudpickle.
        if not _registered and "cloudpickle" in sys.modules:
            _register_with_cloudpickle()  # for cloudpickle's next handle
        name = _own_name(self)
        if name is not None:
            return (_import_handle, name)
        return self._by_value()

    def _by_value(self) -> tuple[Any, ...]:
        """A handle that its name does not find (``options()`` made it, or it is local):
        its options by value, its function by name where importable."""
        from .protocol.shipping import importable_name

        function = self.__wrapped__
        name = importable_name(function)
        if name is not None:
            return (_rebuild, (*name, self._self_options, self._self_binding))
        return (RemoteFunction, (function, self._self_options, self._self_binding))

    def __copy__(self) -> "RemoteFunction[R]":
        return RemoteFunction(self.__wrapped__, self._self_options, self._self_binding)

    def __deepcopy__(self, memo: dict[int, Any]) -> "RemoteFunction[R]":
        return self.__copy__()


class BoundRemoteFunction(RemoteFunction[R]):
    """A handle bound to an instance (or a class): calls submit the plain function with the
    instance as its first argument, so the function itself is shipped once, by name."""

    __slots__ = ("_self_handle", "_self_function", "_self_target")

    def __init__(self, handle: RemoteFunction[R], target: Any) -> None:
        function = handle.__wrapped__
        super().__init__(types.MethodType(function, target), handle._self_options, _STATIC)
        self._self_handle = handle
        self._self_function = function
        self._self_target = target

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteFuture[R]:
        """Submit the call to the current session (see :func:`remotefn.current`); returns a
        future at once. Raises :class:`~remotefn.SerializationError` when an argument does
        not pickle, ``ValueError`` when the call can never fit in the session."""
        return current()._submit(self._self_function, self._self_options,
                                 (self._self_target, *args), kwargs)

    def options(self, **overrides: Any) -> "RemoteFunction[R]":
        """A new bound handle with some options changed; this one is left as it is."""
        return BoundRemoteFunction(self._self_handle.options(**overrides), self._self_target)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (BoundRemoteFunction, (self._self_handle, self._self_target))

    def __copy__(self) -> "RemoteFunction[R]":
        return BoundRemoteFunction(self._self_handle, self._self_target)


def _import_handle(module: str, qualname: str) -> Any:
    """The object defined at ``module.qualname``, read from its class's ``__dict__`` when it
    is a class attribute (so that a handle on a class is found unbound)."""
    from .protocol.shipping import import_attribute

    parent_name, _, last = qualname.rpartition(".")
    parent = import_attribute(module, parent_name) if parent_name \
        else importlib.import_module(module)
    if isinstance(parent, type):
        return vars(parent)[last]
    return getattr(parent, last)


def _rebuild(module: str, qualname: str, options: CallOptions, binding: str
             ) -> RemoteFunction[Any]:
    from .protocol.shipping import import_function

    return RemoteFunction(import_function(module, qualname), options, binding)


def _own_name(handle: RemoteFunction[Any]) -> tuple[str, str] | None:
    """``(module, qualname)`` when importing that name gives this very handle, else None."""
    function = handle.__wrapped__
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    try:
        found = _import_handle(module, qualname)
    except Exception:
        return None
    return (module, qualname) if found is handle else None


def _reduce_for_cloudpickle(handle: RemoteFunction[Any]) -> tuple[Any, ...]:
    """cloudpickle's reduction of a handle: by name where a worker can import it, else by
    value, like cloudpickle's own for functions (``__main__`` and the modules given to
    ``cloudpickle.register_pickle_by_value`` go by value)."""
    from .protocol.shipping import pickled_by_value

    name = _own_name(handle)
    if name is None or name[0] == "__main__" or pickled_by_value(name[0]):
        return handle._by_value()
    return (_import_handle, name)


_registered = False


def _register_with_cloudpickle() -> None:
    """Give cloudpickle its reduction of handles. cloudpickle consults its dispatch table
    before ``__reduce_ex__``; the standard pickler does not see this entry (it lives in
    cloudpickle's own table, not in copyreg's). Done once cloudpickle is loaded: when a
    handle is made or pickled, and on the first call (which loads it)."""
    global _registered
    import cloudpickle  # type: ignore[import-untyped]

    cloudpickle.Pickler.dispatch_table[RemoteFunction] = _reduce_for_cloudpickle
    _registered = True


# -- running here ---------------------------------------------------------------------------

_init_lock = threading.Lock()
#: ``init`` function -> the dict it returned in this process (``.local()`` runs it once).
_init_results: dict[Any, dict[str, Any]] = {}


def _run_locally(function: Callable[..., Any], options: CallOptions, args: tuple,
                 kwargs: dict[str, Any]) -> Any:
    if options.init is not None:
        from .worker.runner import fill_from_init, parameter_names

        kwargs = dict(kwargs)
        fill_from_init(function, parameter_names(function), args, kwargs,
                       _local_init(options.init))
    value = function(*args, **kwargs)
    if type(value) is types.CoroutineType:
        import asyncio

        value = asyncio.run(value)
    return [value] if options.cores > 1 else value


def _local_init(init: Callable[[], Any]) -> dict[str, Any]:
    with _init_lock:
        try:
            return _init_results[init]
        except KeyError:
            pass
        result = init()
        if not isinstance(result, dict):
            raise TypeError(f"init must return a dict of keyword arguments, "
                            f"got {type(result).__name__}")
        _init_results[init] = result
        return result


# -- the decorator --------------------------------------------------------------------------


class _Decorator(Protocol):
    """What ``remote(**options)`` returns: a decorator, typed for plain and async functions."""

    @overload
    def __call__(self, function: Callable[..., Coroutine[Any, Any, R]], /
                 ) -> RemoteFunction[R]: ...

    @overload
    def __call__(self, function: Callable[..., R], /) -> RemoteFunction[R]: ...


@overload
def remote(function: Callable[..., Coroutine[Any, Any, R]], /, **options: Any
           ) -> RemoteFunction[R]: ...


@overload
def remote(function: Callable[..., R], /, **options: Any) -> RemoteFunction[R]: ...


@overload
def remote(function: None = None, /, **options: Any) -> _Decorator: ...


def remote(function: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make ``function`` run remotely: ``@remote``, ``@remote(cores=2, block=True)`` or
    ``remote(fn, **options)`` for a function you do not own.

    By default (``block=False``) every call starts a fresh worker process, which costs tens
    of milliseconds: for many short calls use ``block=True``, whose workers stay and take
    call after call. Methods, class methods and static methods work (put ``@remote`` above
    ``@classmethod`` or ``@staticmethod``); an instance is pickled with every call.

    An ``async def`` function runs in the worker's event loop (one per worker, kept between
    calls); its future's value is the coroutine's, and ``await handle(...)`` works in asyncio
    code since a :class:`~remotefn.RemoteFuture` is awaitable.

    Options are validated here: ``TypeError`` for an unknown option or a wrong type,
    ``ValueError`` for a wrong value. Each is a field of :class:`~remotefn.CallOptions`; the
    options table of docs/api.md gives their defaults and meaning.
    """
    if function is not None and isinstance(function, RemoteFunction):
        return function.options(**options)
    validated = resolve(options)
    if function is None:
        return lambda fn: remote(fn, **options) if isinstance(fn, RemoteFunction) \
            else _wrap(fn, validated)
    return _wrap(function, validated)


#: The code flag of async generators.
_ASYNC_GENERATOR = 0x200


def _wrap(function: Any, options: CallOptions) -> RemoteFunction[Any]:
    binding = _INSTANCE
    if isinstance(function, classmethod):
        function, binding = function.__func__, _CLASS
    elif isinstance(function, staticmethod):
        function, binding = function.__func__, _STATIC
    if not callable(function):
        raise TypeError(f"remote() needs a callable, got {function!r} ({type(function).__name__})")
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    if code is not None and code.co_flags & _ASYNC_GENERATOR:
        raise TypeError(f"remote() cannot run {getattr(function, '__qualname__', function)!r}: "
                        "it is an async generator, whose values cannot come back as one "
                        "result; collect them in an async def function and decorate that")
    if binding == _INSTANCE and not isinstance(function, types.FunctionType):
        binding = _STATIC  # builtins and other callables do not bind on a class
    return RemoteFunction(function, options, binding)
