"""``@remote``: turn a function into a handle whose calls run on workers and return futures."""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterable, TypeVar, overload

import wrapt

from .future import RemoteFuture
from .options import DEFAULT_OPTIONS, CallOptions, resolve
from .protocol.shipping import import_attribute, importable_name
from .sessions.session import current

R = TypeVar("R")


class RemoteFunction(wrapt.ObjectProxy, Generic[R]):
    """A function whose calls run remotely. Keeps the function's name, docstring, signature
    and module; a handle of a module-level function pickles by reference."""

    __remotefn_handle__ = True

    def __init__(self, function: Callable[..., R], options: CallOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(function)
        self._self_options = options

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteFuture:
        """Submit the call to the current session; returns a future at once."""
        return current()._submit(self.__wrapped__, self._self_options, args, kwargs)

    # A handle must not pass for a plain function, or picklers would pickle the bare function.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self)

    @property
    def remote_options(self) -> CallOptions:
        """The validated options of this handle."""
        return self._self_options

    def options(self, **overrides: Any) -> "RemoteFunction[R]":
        """A new handle with some options changed; this one is left as it is."""
        return RemoteFunction(self.__wrapped__, resolve(overrides, self._self_options))

    def map(self, *iterables: Iterable[Any]) -> list[RemoteFuture]:
        """Submit one call per element of ``zip(*iterables)``; the futures, in order."""
        return [self(*args) for args in zip(*iterables)]

    def local(self, *args: Any, **kwargs: Any) -> R:
        """Run the plain function here, in this process and thread."""
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        name = getattr(self.__wrapped__, "__qualname__", repr(self.__wrapped__))
        changed = {k: v for k, v in vars(self._self_options).items()
                   if v != getattr(DEFAULT_OPTIONS, k)}
        settings = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"<remote {name}({settings})>"

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        name = importable_name(self.__wrapped__)
        if name is not None:
            return (import_attribute, name)
        return (RemoteFunction, (self.__wrapped__, self._self_options))

    def __copy__(self) -> "RemoteFunction[R]":
        return RemoteFunction(self.__wrapped__, self._self_options)

    def __deepcopy__(self, memo: dict[int, Any]) -> "RemoteFunction[R]":
        return self.__copy__()


@overload
def remote(function: Callable[..., R], /, **options: Any) -> RemoteFunction[R]: ...


@overload
def remote(function: None = None, /, **options: Any) -> Callable[[Callable[..., R]],
                                                                  RemoteFunction[R]]: ...


def remote(function: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make ``function`` run remotely: ``@remote``, ``@remote(cores=2, block=True)`` or
    ``remote(fn, **options)`` for a function you do not own.

    Options are validated here: ``TypeError`` for an unknown option or a wrong type,
    ``ValueError`` for a wrong value. See :mod:`remotefn.options` for the table.
    """
    if function is not None and isinstance(function, RemoteFunction):
        return function.options(**options)
    validated = resolve(options)
    if function is None:
        return lambda fn: remote(fn, **options) if isinstance(fn, RemoteFunction) \
            else _wrap(fn, validated)
    return _wrap(function, validated)


#: Code flags of ``async def`` functions and async generators.
_ASYNC = 0x80 | 0x200


def _wrap(function: Callable[..., Any], options: CallOptions) -> RemoteFunction[Any]:
    if not callable(function):
        raise TypeError(f"remote() needs a callable, got {function!r} ({type(function).__name__})")
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    if code is not None and code.co_flags & _ASYNC:
        raise TypeError(f"remote() cannot run {getattr(function, '__qualname__', function)!r}: "
                        "it is an async function; decorate a plain function that runs it, "
                        "for example with asyncio.run")
    return RemoteFunction(function, options)
