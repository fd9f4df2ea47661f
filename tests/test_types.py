"""Static types: mypy reads a typed example and reports the types a user of remotefn sees."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "typecheck", "typed_example.py")

#: The marker on each line of the example -> what mypy must say about that line.
EXPECTED = {
    "R1": 'Revealed type is "remotefn.future.RemoteFuture[float]"',
    "R2": 'Revealed type is "float"',
    "R3": 'Revealed type is "remotefn.future.RemoteFuture[str]"',
    "R4": 'Revealed type is "list[remotefn.future.RemoteFuture[float]]"',
    "R5": 'Revealed type is "float"',
    "R6": 'Revealed type is "remotefn.future.RemoteFuture[float]"',
    "R7": 'Revealed type is "list[float]"',
    "R8": 'Revealed type is "remotefn.decorator.RemoteFunction[float]"',
    "R9": 'Revealed type is "remotefn.future.RemoteFuture[int]"',
    "R10": 'Revealed type is "float"',
    "R11": 'Revealed type is "remotefn.future.RemoteFuture[bytes]"',
    "R12": 'Revealed type is "int"',
    "E1": 'Incompatible types in assignment (expression has type "float", variable has type '
          '"str")',
}


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory) -> dict[str, list[str]]:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    cache = tmp_path_factory.mktemp("mypy-cache")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
         "--hide-error-context", "--no-pretty", "--follow-imports=silent", "--cache-dir", str(cache), EXAMPLE],
        capture_output=True, text=True, timeout=600, cwd=os.path.dirname(HERE))
    assert done.returncode in (0, 1), done.stdout + done.stderr
    markers = {}
    for number, line in enumerate(open(EXAMPLE), start=1):
        found = re.search(r"# ([RE]\d+)", line)
        if found:
            markers[number] = found.group(1)
    report: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        found = re.match(r".*typed_example\.py:(\d+): (\w+): (.*)", line)
        assert found, f"unexpected mypy output: {line}\n{done.stdout}\n{done.stderr}"
        number, _, message = found.groups()
        message = message.replace("builtins.", "")  # older mypy spells builtins out
        report.setdefault(markers.get(int(number), f"line {number}"), []).append(message)
    return report


def test_mypy_sees_the_return_types_of_decorated_functions(mypy_report):
    for marker, expected in EXPECTED.items():
        assert any(expected in message for message in mypy_report.get(marker, [])), \
            (marker, mypy_report.get(marker))


def test_mypy_reports_nothing_else(mypy_report):
    assert set(mypy_report) == set(EXPECTED), mypy_report


def test_the_package_itself_type_checks(tmp_path):
    """``mypy remotefn`` finds nothing (the settings are pyproject.toml's): the hints a user's
    type checker reads are the ones the code keeps."""
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path),
                           "--no-pretty", "remotefn"], capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(HERE))
    assert done.returncode == 0, done.stdout + done.stderr
