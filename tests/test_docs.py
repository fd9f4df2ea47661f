"""The documentation cannot drift from the code: every Python block of README.md and docs/
runs (docblocks.py says how blocks are marked), the API reference names every public name
and each has a docstring, and the notebook of examples/ runs from top to bottom."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess

import pytest

import docblocks
import remotefn
from remotefn import cache
from helpers import needs
from cluster import cluster_reason, salloc

ROOT = docblocks.ROOT
PAGES = docblocks.pages()
SLURM_PAGES = [page for page in PAGES if docblocks.runnable(page, "slurm")]

#: The classes whose public methods the reference shows, with the members it lists.
CLASSES = (remotefn.RemoteFunction, remotefn.Session, remotefn.RemoteFuture,
           remotefn.CallInfo, remotefn.CallOptions)


@pytest.mark.parametrize("page", [page for page in PAGES if docblocks.runnable(page, None)])
def test_the_python_blocks_of_each_page_run(page):
    docblocks.run(page)


@needs("slurm", cluster_reason())
@pytest.mark.parametrize("page", SLURM_PAGES or ["no page has SLURM blocks"])
def test_the_slurm_blocks_of_each_page_run_in_an_allocation(page):
    job = salloc("-N2", "--ntasks-per-node=2")
    try:
        docblocks.run(page, "slurm", env={"SLURM_JOB_ID": job})
    finally:
        subprocess.run(["scancel", job], check=False)


def test_every_python_block_runs_somewhere_or_says_why_not():
    """No block is silently left out: each runs here, with an engine, or is skipped with a
    reason; and the marks are spelled right (blocks() raises on a bad one)."""
    counted = {"here": 0, "slurm": 0, "flux": 0, "skipped": 0}
    for page in PAGES:
        for block in docblocks.blocks(page):
            if block.language != "python":
                assert block.language in ("", "sh", "text", "console", "toml", "json"), (
                    f"{page}:{block.line}: a ```{block.language} block")
                continue
            counted["skipped" if block.skip else block.engine or "here"] += 1
    assert counted["here"] >= 15 and counted["flux"] >= 1 and counted["slurm"] >= 1, counted


def test_a_failing_block_fails_naming_its_page_and_line(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- docs: setup\ny = 2\n-->\n"
                    "```python\nassert x + y == 4, 'wrong sum'\n```\n")
    monkeypatch.setattr(docblocks, "ROOT", str(tmp_path))
    with pytest.raises(AssertionError, match=r'(?s)page\.md", line 11.*wrong sum'):
        docblocks.run("page.md")


def test_a_block_with_a_different_output_fails(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint(6 * 7)\n```\n<!-- docs: output -->\n```\n41\n```\n")
    monkeypatch.setattr(docblocks, "ROOT", str(tmp_path))
    with pytest.raises(AssertionError, match="page.md:2: the block printed\n42"):
        docblocks.run("page.md")


def reference() -> str:
    return open(os.path.join(ROOT, "docs", "reference.md")).read()


def test_the_reference_shows_every_public_name():
    shown = set(re.findall(r"^::: remotefn\.([\w.]+)$", reference(), re.M))
    assert set(remotefn.__all__) - {"__version__"} - shown == set()
    assert {f"cache.{name}" for name in cache.__all__} - shown == set()


@pytest.mark.parametrize("name", sorted(set(remotefn.__all__) - {"__version__"})
                         + [f"cache.{name}" for name in cache.__all__])
def test_every_public_name_has_a_docstring(name):
    value = remotefn
    for part in name.split("."):
        value = getattr(value, part)
    assert (value.__doc__ or "").strip(), name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_public_method_has_a_docstring_and_is_listed(cls):
    """Methods and properties defined on the class (inherited ones keep the docstrings of
    concurrent.futures); the reference lists the members it shows, or shows them all."""
    own = {name: value for name, value in vars(cls).items()
           if (not name.startswith("_") or name in ("__call__", "__await__"))
           and (callable(value) or isinstance(value, property))}
    assert {name for name, value in own.items() if not (value.__doc__ or "").strip()} == set()
    listed = re.search(rf"^::: remotefn\.{cls.__name__}\n    options:\n      members: "
                       r"\[([^\]]*)\]", reference(), re.M)
    if listed is not None:
        assert set(own) - {name.strip() for name in listed.group(1).split(",")} == set()


def test_callinfo_names_each_of_its_fields():
    doc = remotefn.CallInfo.__doc__
    for name in inspect.signature(remotefn.CallInfo).parameters:
        assert f"``{name}``" in doc, name


def test_the_notebook_runs_and_shows_what_it_says(tmp_path):
    """examples/tour.ipynb, executed as Jupyter would (nbclient, an ipykernel kernel): each
    tagged cell shows the value its text promises."""
    import nbclient
    import nbformat

    notebook = nbformat.read(os.path.join(ROOT, "examples", "tour.ipynb"), as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), "saved with outputs"
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown: dict[str, str] = {}
    printed: dict[str, str] = {}
    for cell in notebook.cells:
        for tag in cell.metadata.get("tags", []):
            shown[tag] = "".join(output["data"]["text/plain"] for output in cell.outputs
                                 if output["output_type"] == "execute_result")
            printed[tag] = "".join(output.get("text", "") for output in cell.outputs
                                   if output["output_type"] == "stream")
    assert shown["call"] == "49"
    assert shown["elsewhere"] == "True"
    assert shown["map"] == "[0, 1, 4, 9, 16]"
    assert "squares: 100%" in printed["map"] and "20/20" in printed["map"]
    assert "failed=0, cached=1" in printed["map"]  # square(7) was stored by the first call
    assert shown["chain"] == "25"
    assert shown["cache"] == "(True, True)"
    assert shown["entries"] == "['add', 'energy', 'square']"
    assert shown["info"] == "(True, True, 1, True)"
    assert set(ast.literal_eval(shown["resources"])) == {"total", "in_use", "free"}
    assert {"queued", "started", "finished", "cached"} <= set(ast.literal_eval(shown["events"]))
    assert shown["shutdown"] == "True"
