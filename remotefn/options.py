"""The options table: the one place where a per-call option is defined.

Each :class:`Option` carries its default, its validator and its doc line. :func:`resolve`
turns user keywords into a frozen :class:`CallOptions`, raising ``TypeError`` for a wrong type
and ``ValueError`` for a wrong value, each naming the option and the value received.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

Check = Callable[[str, Any], Any]


class Option:
    """One row of the options table."""

    __slots__ = ("name", "default", "check", "doc")

    def __init__(self, name: str, default: Any, check: Check, doc: str) -> None:
        self.name, self.default, self.check, self.doc = name, default, check, doc


def _type_name(value: Any) -> str:
    return type(value).__name__


def _integer(minimum: int) -> Check:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({_type_name(value)})")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        return value

    return check


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum``: ``TypeError`` for another type, ``ValueError``
    for a smaller value, each naming ``name``. Backends check their counts with it too."""
    return _integer(minimum)(name, value)


def _optional(check: Check) -> Check:
    def optional(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)

    return optional


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({_type_name(value)})")
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r} ({_type_name(value)})")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _directory(name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r} "
                        f"({_type_name(value)})")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return path


def _environment(name: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str, got {value!r} "
                        f"({_type_name(value)})")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"{name} must map str to str, got {key!r}: {item!r}")
        if not key or "=" in key or "\0" in key or "\0" in item:
            raise ValueError(f"{name} has an invalid variable {key!r}: {item!r}")
    return tuple(sorted(value.items()))


def _function(name: str, value: Any) -> Callable[..., Any]:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r} ({_type_name(value)})")
    return value


def _extras(name: str, value: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of backend settings, got {value!r} "
                        f"({_type_name(value)})")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, got {key!r}")
    return tuple(sorted(value.items()))


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({_type_name(value)})")
    return value


def _cache(name: str, value: Any) -> bool | None:
    return None if value is None else _boolean(name, value)


OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("cores", 1, _integer(1),
               "MPI ranks the function runs on; with more than 1 the result is every rank's "
               "return value, in rank order."),
        Option("threads_per_core", 1, _integer(1),
               "Cores (threads) per rank; sets OMP_NUM_THREADS and friends in the worker."),
        Option("gpus", 0, _integer(0),
               "GPUs per rank (alias: gpus_per_core); sets CUDA_VISIBLE_DEVICES per rank."),
        Option("cwd", None, _optional(_directory), "Working directory of the worker."),
        Option("env", (), _environment, "Extra environment variables of the worker."),
        Option("block", False, _boolean,
               "Keep a pool of persistent workers for these options. Without it every call "
               "starts a worker process of its own (tens of ms): use block=True for many "
               "short calls."),
        Option("max_workers", None, _optional(_integer(1)),
               "Workers in the block pool (default: as many as the session's cores allow)."),
        Option("init", None, _optional(_function),
               "Runs once per block worker; its dict fills keyword arguments a call leaves out."),
        Option("timeout", None, _optional(_seconds), "Seconds a call may run before CallTimeout."),
        Option("retries", 0, _integer(0), "Times a call is rerun when its worker dies."),
        Option("cache", None, _cache,
               "Reuse stored results (default: when the session has a cache_directory)."),
        Option("cache_salt", None, _optional(_text),
               "Mixed into the cache key: change it to recompute stored results."),
        Option("cache_key", None, _optional(_function),
               "Called with the call's arguments; its value keys the cache instead of them."),
        Option("nested", False, _boolean,
               "Run the call in its own scheduler instance on its share (Flux: flux start); "
               "sessions opened inside it schedule within that share."),
        Option("extras", (), _extras, "Backend-specific settings, passed to the backend as given."),
    )
}

ALIASES: dict[str, str] = {"gpus_per_core": "gpus"}


class CallOptions:
    """The validated options of a call: one field per option of the table in docs/api.md.
    Made by :func:`remotefn.remote` and ``handle.options()`` (``handle.remote_options``
    shows them); frozen and hashable, so equal options share a block pool. (A plain class,
    not a dataclass: importing dataclasses costs more than the rest of ``import remotefn``.)"""

    __slots__ = ("cores", "threads_per_core", "gpus", "cwd", "env", "block", "max_workers",
                 "init", "timeout", "retries", "cache", "cache_salt", "cache_key", "nested",
                 "extras")
    cores: int
    threads_per_core: int
    gpus: int
    cwd: str | None
    env: tuple[tuple[str, str], ...]
    block: bool
    max_workers: int | None
    init: Callable[..., Any] | None
    timeout: float | None
    retries: int
    cache: bool | None
    cache_salt: str | None
    cache_key: Callable[..., Any] | None
    nested: bool
    extras: tuple[tuple[str, Any], ...]

    def __init__(self, cores: int = 1, threads_per_core: int = 1, gpus: int = 0,
                 cwd: str | None = None, env: tuple[tuple[str, str], ...] = (),
                 block: bool = False, max_workers: int | None = None,
                 init: Callable[..., Any] | None = None, timeout: float | None = None,
                 retries: int = 0, cache: bool | None = None, cache_salt: str | None = None,
                 cache_key: Callable[..., Any] | None = None, nested: bool = False,
                 extras: tuple[tuple[str, Any], ...] = ()) -> None:
        values = locals()
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"CallOptions are frozen: cannot set {name!r} (use replace())")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"CallOptions are frozen: cannot delete {name!r}")

    def values(self) -> tuple[Any, ...]:
        """Every option's value, in the order of ``__slots__``."""
        return (self.cores, self.threads_per_core, self.gpus, self.cwd, self.env, self.block,
                self.max_workers, self.init, self.timeout, self.retries, self.cache,
                self.cache_salt, self.cache_key, self.nested, self.extras)

    def as_dict(self) -> dict[str, Any]:
        """Every option by name."""
        return dict(zip(self.__slots__, self.values()))

    def replace(self, **changes: Any) -> "CallOptions":
        """A copy with some options changed (not validated: see :func:`resolve`)."""
        return CallOptions(**{**self.as_dict(), **changes})

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not CallOptions:
            return NotImplemented
        return self is other or self.values() == other.values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.values())

    def __repr__(self) -> str:
        return "CallOptions(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallOptions, self.values())

    @property
    def cpus(self) -> int:
        """CPUs one worker of these options holds: ranks x threads per rank."""
        return self.cores * self.threads_per_core

    @property
    def total_gpus(self) -> int:
        """GPUs one worker of these options holds: ranks x GPUs per rank."""
        return self.cores * self.gpus

    def pool_key(self) -> tuple[Any, ...]:
        """What makes two calls share a worker: everything that shapes the worker process,
        and the timeout (a pool whose calls have one runs them one at a time per worker, each
        timed from its own start)."""
        return (self.cores, self.threads_per_core, self.gpus, self.cwd, self.env,
                self.block, self.max_workers, self.init, self.nested, repr(self.extras),
                self.timeout)


DEFAULT_OPTIONS = CallOptions()
assert set(CallOptions.__slots__) == set(OPTIONS), "options table out of sync"


def resolve(overrides: Mapping[str, Any], base: CallOptions = DEFAULT_OPTIONS) -> CallOptions:
    """Validate ``overrides`` and apply them on top of ``base``.

    Raises ``TypeError`` for an unknown option or a wrong type and ``ValueError`` for a wrong
    value.
    """
    if not overrides:
        return base
    named: dict[str, str] = {}
    for given in overrides:
        name = ALIASES.get(given, given)
        if name not in OPTIONS:
            valid = ", ".join(sorted([*OPTIONS, *ALIASES]))
            raise TypeError(f"unknown option {given!r}; valid options are: {valid}")
        if name in named:
            raise TypeError(f"option {name!r} given twice (as {named[name]!r} and {given!r})")
        named[name] = given
    changes: dict[str, Any] = {}
    for name, given in named.items():
        option, value = OPTIONS[name], overrides[given]
        changes[name] = option.check(given, value)
    options = base.replace(**changes)
    if options.init is not None and not options.block:
        raise ValueError(f"init={options.init!r} needs block=True: it runs once per "
                         "persistent worker")
    if options.max_workers is not None and not options.block:
        raise ValueError(f"max_workers={options.max_workers!r} needs block=True: without it "
                         "every call starts a worker of its own")
    return options


def describe() -> str:
    """The options table as text, one option per line."""
    return "\n".join(f"{o.name} (default {o.default!r}): {o.doc}" for o in OPTIONS.values())
