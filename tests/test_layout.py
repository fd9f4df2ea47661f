"""The package's shape: no import cycles, and each layer imports only what it says it may.

Imports are read from the source (function-level ones included, ``if TYPE_CHECKING:`` blocks
excluded), so a cycle is caught even where it would only bite at run time.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re

import pytest

import remotefn
from remotefn import backends

ROOT = os.path.dirname(remotefn.__file__)

#: The bottom layer: imported by every other, importing nothing of the package.
BOTTOM = ("remotefn.options", "remotefn.errors", "remotefn.future", "remotefn._version")

LAYERS = ("remotefn.protocol", "remotefn.backends", "remotefn.hub", "remotefn.cache",
          "remotefn.dashboard", "remotefn.sessions", "remotefn.worker")


def allowed_by_docstring(layer: str) -> set[str]:
    """What a subpackage may import besides itself, as the ``May import:`` paragraph of its
    ``__init__`` docstring says: the modules it names, and "the bottom layer" (BOTTOM)."""
    doc = importlib.import_module(layer).__doc__ or ""
    paragraph = doc.split("May import:", 1)[1].split("\n\n", 1)[0].split("Never", 1)[0]
    named = set(re.findall(r":mod:`(remotefn[\w.]*)`", paragraph))
    return named | set(BOTTOM) if "the bottom layer" in paragraph else named


#: What each subpackage may import besides itself. The top-level modules are the public API
#: and the bottom layer.
ALLOWED = {layer: allowed_by_docstring(layer) for layer in LAYERS}


def _modules() -> dict[str, str]:
    """Every module of the package: dotted name -> file."""
    found = {"remotefn": os.path.join(ROOT, "__init__.py")}
    for info in pkgutil.walk_packages([ROOT], prefix="remotefn."):
        spec = info.module_finder.find_spec(info.name.rsplit(".", 1)[-1])  # type: ignore
        found[info.name] = spec.origin
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The modules of the package that ``name`` imports anywhere in its code."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    tree = ast.parse(open(path).read())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
                elif target in modules:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_graph_sees_the_package(graph):
    assert {"remotefn.hub.hub", "remotefn.protocol.messages", "remotefn.worker.startup",
            "remotefn.sessions.session", "remotefn.cache.front"} <= graph.keys()
    assert "remotefn.hub.scheduler" in graph["remotefn.hub.hub"]
    assert "remotefn.sessions.registry" in graph["remotefn.worker.loop"]  # function bodies too


def test_no_module_imports_itself_through_others(graph):
    # Tarjan's strongly connected components; any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    assert cycles == []


def test_each_layer_imports_only_what_its_docstring_allows(graph):
    wrong = []
    for name, targets in graph.items():
        layer = next((layer for layer in ALLOWED if name == layer
                      or name.startswith(layer + ".")), None)
        if layer is None:
            continue
        for target in targets:
            if target == layer or target.startswith(layer + "."):
                continue
            if not any(target == allowed or target.startswith(allowed + ".")
                       for allowed in ALLOWED[layer]):
                wrong.append(f"{name} imports {target}")
    assert wrong == []
    assert {name: graph[name] for name in BOTTOM} == {name: set() for name in BOTTOM}


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_says_what_it_owns_and_may_import_and_needs_all_of_it(layer, graph):
    """The docstring's list is the rule, and no wider than the layer's imports."""
    module = importlib.import_module(layer)
    assert module.__doc__ and "May import:" in module.__doc__
    imported = {target for name, targets in graph.items()
                if name == layer or name.startswith(layer + ".") for target in targets}
    unused = {allowed for allowed in ALLOWED[layer] - set(BOTTOM)
              if not any(t == allowed or t.startswith(allowed + ".") for t in imported)}
    assert unused == set()


def test_a_backend_is_one_module_and_one_row():
    for name, module, variable in backends.BACKENDS:
        path = os.path.join(ROOT, "backends", f"{module}.py")
        assert os.path.exists(path), f"{name}: no module {path}"
        assert "BACKEND = " in open(path).read(), f"{name}: {path} names no BACKEND class"
