"""tests/README.md maps every promise of docs/api.md to tests: each test it names exists."""

from __future__ import annotations

import ast
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def functions_of(module: str) -> set[str]:
    tree = ast.parse(open(os.path.join(HERE, f"{module}.py")).read())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def named_tests() -> list[tuple[str, str]]:
    """(module, test) for every test the table's second column names."""
    named = []
    for line in open(os.path.join(HERE, "README.md")):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[1].startswith("`test_"):
            continue
        module = None
        for reference in re.findall(r"`([^`]+)`", cells[1]):
            if "::" in reference:
                module, reference = reference.split("::")
            if reference.startswith("test_") and module is not None:
                named.append((module, reference))
    return named


def test_every_test_the_promise_table_names_exists():
    named = named_tests()
    assert len(named) > 100
    missing = [f"{module}::{test}" for module, test in named if test not in functions_of(module)]
    assert missing == []
