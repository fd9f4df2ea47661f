"""The public names: imported on first use, an unknown one refused, and the error hierarchy
docs/api.md describes."""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import re
import subprocess
import sys

import pytest

import remotefn
from remotefn import errors
from remotefn.errors import MissingDependency

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'remotefn' has no attribute 'Sesion'"):
        remotefn.Sesion  # noqa: B018
    assert not hasattr(remotefn, "nothing_here")
    with pytest.raises(ImportError, match="nothing_here"):
        exec("from remotefn import nothing_here")


def test_public_names_are_imported_on_first_use():
    """Importing remotefn loads none of its layers; decorating loads the decorator but not
    the session machinery, which loads on the first call."""
    code = ("import sys, remotefn\n"
            "loaded = lambda: ['remotefn.decorator' in sys.modules, "
            "'remotefn.sessions.session' in sys.modules]\n"
            "print(*loaded())\n"
            "handle = remotefn.remote(abs)\n"
            "print(*loaded())\n"
            "with remotefn.session('local', forward_output=False):\n"
            "    handle(-1).result(timeout=60)\n"
            "print(*loaded())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["False", "False", "True", "False", "True", "True"], out.stderr
    for name in remotefn.__all__:
        assert getattr(remotefn, name) is not None


#: What a library that only decorates its functions must not pay for at import.
HEAVY = ("cloudpickle", "zmq", "wrapt", "dataclasses", "inspect", "hashlib", "pickle", "asyncio",
         "socket", "remotefn.protocol", "remotefn.sessions", "remotefn.hub")


def test_importing_and_decorating_loads_nothing_heavy():
    """Decorating functions, methods, class and static methods (and reading a handle's name
    and options) loads none of the modules a call needs, beyond what a bare
    ``import concurrent.futures`` loads in this interpreter."""
    show = "import sys; print(' '.join(sorted(sys.modules)))"
    code = ("import remotefn\n"
            "from remotefn import remote\n"
            "@remote(block=True, retries=1)\n"
            "def f(x: int) -> int:\n"
            "    return x\n"
            "class Model:\n"
            "    @remote\n"
            "    def energy(self, x): return x\n"
            "    @remote\n"
            "    @classmethod\n"
            "    def make(cls): return cls()\n"
            "    @remote\n"
            "    @staticmethod\n"
            "    def twice(x): return 2 * x\n"
            "g = f.options(retries=2)\n"
            "assert (f.__name__, g.remote_options.retries, repr(Model.twice)) == "
            "('f', 2, '<remote Model.twice()>')\n"
            "assert Model().energy.__name__ == 'energy'\n" + show)
    baseline = subprocess.run([sys.executable, "-c", "import concurrent.futures\n" + show],
                              capture_output=True, text=True, timeout=120)
    decorated = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120)
    assert decorated.returncode == 0, decorated.stderr
    before, after = set(baseline.stdout.split()), set(decorated.stdout.split())
    heavy = {name for name in after - before
             if any(name == h or name.startswith(h + ".") for h in HEAVY)}
    assert not heavy


@pytest.mark.parametrize("error, bases", [
    (remotefn.WorkerDied, ()),
    (remotefn.WorkerStartError, ()),
    (remotefn.ProtocolError, (remotefn.WorkerStartError,)),
    (remotefn.CallTimeout, (TimeoutError,)),
    (remotefn.DependencyError, ()),
    (remotefn.SerializationError, (TypeError,)),
    (remotefn.RemoteError, ()),
    (MissingDependency, (ImportError,)),
    (remotefn.MissingDependency, (ImportError,)),
], ids=lambda value: value.__name__ if isinstance(value, type) else "")
def test_the_error_hierarchy(error, bases):
    """Every remotefn error derives from RemoteFnError; CallTimeout is a TimeoutError,
    SerializationError a TypeError, ProtocolError a WorkerStartError, MissingDependency an
    ImportError, so that code catching the standard type catches them too."""
    assert issubclass(error, remotefn.RemoteFnError)
    for base in bases:
        assert issubclass(error, base)


def test_every_error_class_remotefn_defines_is_a_remotefn_error():
    """RemoteTraceback is no error of remotefn's: it only carries the remote traceback as
    the __cause__ of one, and is never raised."""
    defined = [value for _, value in inspect.getmembers(errors, inspect.isclass)
               if issubclass(value, BaseException) and value.__module__ == errors.__name__]
    assert {e for e in defined if not issubclass(e, remotefn.RemoteFnError)} == {
        remotefn.RemoteTraceback}


def raised_names() -> dict[str, list[str]]:
    """The exception class named by every ``raise`` in remotefn/, and by every future failed
    with one (``future._fail(Error(...))``, ``set_exception``): name -> where it is."""
    found: dict[str, list[str]] = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "remotefn")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    exc = node.exc
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr in ("_fail", "set_exception") and node.args
                      and isinstance(node.args[0], ast.Call)):  # one made there
                    exc = node.args[0]
                else:
                    continue
                exc = exc.func if isinstance(exc, ast.Call) else exc
                if isinstance(exc, ast.Name):
                    where = f"{os.path.relpath(path, ROOT)}:{node.lineno}"
                    found.setdefault(exc.id, []).append(where)
    return found


def error_tables() -> dict[str, set[str]]:
    """The exception names of docs/api.md's Errors section, by the header of their table."""
    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, set[str]] = {}
    header = None
    for line in section.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells[0]
            tables[header] = set()
        elif not set(cells[0]) <= {"-"}:
            column = cells[1] if header == "what happened" else cells[0]
            tables[header].update(re.findall(r"`([A-Za-z]+)`", column)[:1])
    return tables


def test_every_exception_remotefn_raises_is_in_the_errors_tables_of_the_docs():
    """Each raise names a RemoteFnError, a standard exception of the second table, or an
    internal one of the third; and the tables name nothing that is never raised."""
    raised = raised_names()
    tables = error_tables()
    assert set(tables) == {"what happened", "standard exception", "internal exception"}
    own = {name for name in raised if name in remotefn.__all__ and issubclass(
        getattr(remotefn, name), remotefn.RemoteFnError)}
    standard = {name for name in raised
                if isinstance(getattr(builtins, name, None), type) and name not in own}
    internal = set(raised) - own - standard
    assert {name: raised[name] for name in own - tables["what happened"]} == {}
    undocumented = standard - tables["standard exception"]
    assert {name: raised[name] for name in undocumented} == {}
    assert tables["standard exception"] <= standard, "the table names one that is never raised"
    assert internal | {"OSError"} == tables["internal exception"], {
        name: raised[name] for name in internal}
    assert tables["standard exception"] <= {"TypeError", "ValueError", "RuntimeError",
                                            "TimeoutError", "AttributeError", "OSError"}


def test_internal_exceptions_are_no_remotefn_errors_and_never_public():
    from remotefn.cache.store import DamagedEntry
    from remotefn.protocol.framing import AuthenticationError, ProtocolMismatch
    from remotefn.protocol.socketpair import StreamClosed

    for error in (AuthenticationError, ProtocolMismatch, StreamClosed, DamagedEntry):
        assert error.__name__ not in remotefn.__all__
    assert issubclass(DamagedEntry, ValueError)
