"""Functions shipped by value: a script's plain functions reach workers without cloudpickle,
and arrive as cloudpickle would have sent them."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import textwrap

import pytest

from remotefn import SerializationError
from remotefn.protocol import shipping

#: A script's functions: each name below is called with no arguments in a fresh interpreter.
SCRIPT = textwrap.dedent('''
    import math, os.path, threading, types
    from dataclasses import dataclass

    RATE = 3
    counter = 0

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def is_even(n):
        return n == 0 or is_odd(n - 1)

    def is_odd(n):
        return n != 0 and is_even(n - 1)

    def bump():
        global counter
        counter += 1
        return counter

    def read_counter():
        return counter

    def shape(x: int, y=2, *, z=RATE) -> str:
        "What the function carries besides its code."
        return repr((x, y, z, shape.__doc__, shape.__qualname__, shape.__module__,
                     shape.__annotations__, getattr(shape, "tag", None)))
    shape.tag = "kept"

    def comprehension():
        def inner(i):
            return math.sqrt(i) * RATE
        return [round(inner(i), 6) for i in range(4)] + [os.path.basename("/a/b")]

    @dataclass
    class Point:
        x: int

    def with_a_class():
        return repr(Point(RATE))

    lock = threading.Lock()  # never sent: only read as an attribute below

    def attribute_only():
        return types.SimpleNamespace(lock=RATE).lock

    def generator():
        yield from range(RATE)

    CALLS = {
        "fib": lambda: fib(10),
        "mutual": lambda: [is_even(10), is_odd(7)],
        "shared globals": lambda: [bump(), bump(), read_counter()],
        "attributes": lambda: shape(1),
        "comprehension": comprehension,
        "class": with_a_class,
        "generator": lambda: list(generator()),
        "attribute": attribute_only,
    }
''')

RUN = textwrap.dedent('''
    import json, pickle, sys
    functions = pickle.loads(sys.stdin.buffer.read())
    def outcome(call):
        try:
            return repr(call())
        except Exception as error:
            return f"{type(error).__name__}: {error}"
    results = {name: outcome(call) for name, call in functions.items()}
    print(json.dumps({"results": results, "cloudpickle": "cloudpickle" in sys.modules}))
''')


def script_functions() -> dict:
    namespace = {"__name__": "__main__"}
    exec(compile(SCRIPT, "<script>", "exec"), namespace)
    return namespace


def run_elsewhere(payload: bytes) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN], input=payload, capture_output=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_plain_functions_arrive_as_cloudpickle_sends_them():
    import cloudpickle

    namespace = script_functions()
    names = ["fib", "is_even", "is_odd", "bump", "read_counter", "shape", "comprehension",
             "generator", "attribute_only"]
    ours = {name: shipping.function_ref(namespace[name]).payload for name in names}
    assert not [name for name, payload in ours.items() if b"cloudpickle" in payload]

    calls = namespace["CALLS"]
    ours = run_elsewhere(shipping.dumps(calls))
    theirs = run_elsewhere(cloudpickle.dumps(calls))
    assert ours["results"] == theirs["results"]
    assert ours["results"]["fib"] == "55"
    assert ours["results"]["shared globals"] == "[1, 2, 2]"
    assert "'kept'" in ours["results"]["attributes"]
    assert "What the function carries" in ours["results"]["attributes"]


def test_a_worker_running_a_scripts_plain_function_does_not_import_cloudpickle(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent('''
        import sys
        import remotefn
        from remotefn import remote

        def plain():
            return "cloudpickle" in sys.modules

        def closure(x):
            def inner():
                return x, "cloudpickle" in sys.modules
            return inner

        with remotefn.session("local", fork_server=False, forward_output=False):
            print(remote(plain)().result(timeout=60), remote(closure(1))().result(timeout=60))
    '''))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "(1,", "True)"]


def test_a_function_from_another_python_version_is_refused_naming_both():
    code = marshal.dumps(compile("def f(): pass", "<x>", "exec"))
    with pytest.raises(SerializationError, match=r"f was defined under Python 3\.1 .*"
                                                 r"worker's Python 3\.\d+"):
        shipping._function_skeleton(code, "f", {}, (3, 1))


def defined_in_main(source: str) -> dict:
    namespace = {"__name__": "__main__", "__file__": "/somewhere/script.py"}
    exec(compile(textwrap.dedent(source), "<script>", "exec"), namespace)
    return namespace


def both_ways(calls: dict) -> tuple[dict, dict]:
    import cloudpickle

    return (run_elsewhere(shipping.dumps(calls))["results"],
            run_elsewhere(cloudpickle.dumps(calls))["results"])


def test_submodules_reached_through_a_package_are_imported_in_the_worker():
    namespace = defined_in_main('''
        import xml.etree.ElementTree
        import email.mime.text

        def parse():
            return xml.etree.ElementTree.fromstring("<a/>").tag

        def in_a_comprehension():
            return [type(email.mime.text.MIMEText(s)).__name__ for s in "x"]
    ''')
    ours, theirs = both_ways({"parse": namespace["parse"],
                              "comprehension": namespace["in_a_comprehension"]})
    assert ours == {"parse": "'a'", "comprehension": "['MIMEText']"}
    assert theirs["parse"] == ours["parse"]


def test_a_module_pickled_by_value_keeps_its_relative_imports_and_name(tmp_path, monkeypatch):
    import cloudpickle

    package = tmp_path / "shipped_by_value"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("VALUE = 5\n")
    (package / "tasks.py").write_text(textwrap.dedent('''
        def relative():
            from .settings import VALUE
            return VALUE

        def own_name():
            return globals()["__name__"], globals()["__package__"]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(tmp_path), os.environ.get("PYTHONPATH")])))  # the worker has the package too
    import shipped_by_value.tasks as tasks

    cloudpickle.register_pickle_by_value(sys.modules["shipped_by_value"])
    try:
        ours, theirs = both_ways({"relative": tasks.relative, "name": tasks.own_name})
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules["shipped_by_value"])
        for name in [name for name in sys.modules if name.startswith("shipped_by_value")]:
            del sys.modules[name]
    assert ours == theirs == {"relative": "5",
                              "name": "('shipped_by_value.tasks', 'shipped_by_value')"}


def test_a_scripts_function_sees_its_modules_name_in_globals():
    namespace = defined_in_main('''
        def name():
            return globals()["__name__"], globals()["__file__"]
    ''')
    ours, theirs = both_ways({"name": namespace["name"]})
    assert ours == theirs == {"name": "('__main__', '/somewhere/script.py')"}


def test_functions_made_by_exec_with_restricted_builtins_get_the_workers_builtins():
    namespace = {"__builtins__": {"len": len}}
    exec(textwrap.dedent('''
        def restricted():
            return __builtins__["len"]("ab")

        def sorts():
            return sorted([2, 1])
    '''), namespace)
    ours, theirs = both_ways({"restricted": namespace["restricted"], "sorts": namespace["sorts"]})
    assert ours == theirs == {"restricted": "2", "sorts": "[1, 2]"}


def test_a_plain_function_and_a_closure_share_the_globals_of_their_script():
    namespace = defined_in_main('''
        counter = 0

        def bump():
            global counter
            counter += 1

        def scaled_by(k):
            def read():
                return counter * k
            return read

        read = scaled_by(10)

        def bump_twice_and_read():
            bump()
            bump()
            return read()
    ''')
    ours, theirs = both_ways({"read": namespace["bump_twice_and_read"]})
    assert ours == theirs == {"read": "20"}
