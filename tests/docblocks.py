"""The Python code blocks of README.md and docs/*.md, read and run as a reader would run them.

Every ```python block of a page runs, in page order, in one fresh interpreter per page (a
script, so functions are ``__main__``'s as in a user's script), with a temporary directory as
the working directory. An HTML comment on the line right above a block marks it:

- ``<!-- docs: skip REASON -->``: not run; the reason is required (a shell session's output,
  a fragment of a larger program);
- ``<!-- docs: needs slurm -->`` or ``<!-- docs: needs flux -->``: run only with that engine
  (test_docs.py runs the SLURM blocks in an allocation, test_flux_real.py the Flux ones);
- ``<!-- docs: setup ... -->`` (code inside the comment): hidden code that runs before the
  block, for the names a fragment uses without defining them.

A fenced block right after a python block, marked ``<!-- docs: output -->``, is the exact
standard output of that python block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ("slurm", "flux")
_MARK = re.compile(r"<!-- docs: (skip|needs|output|setup)\b(.*?)-->", re.S)
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_SEPARATOR = "\x1edocs-block\x1e"


@dataclass
class Block:
    """One fenced code block of a page."""

    page: str  # relative to the repository
    line: int  # of the block's first line of code
    language: str
    code: str
    skip: str | None = None
    engine: str | None = None
    setup: str = ""
    output: str | None = None  # the expected standard output, when the page gives it
    marks: list[str] = field(default_factory=list)


def pages() -> list[str]:
    """README.md and every page of docs/, relative to the repository."""
    docs = sorted(f"docs/{name}" for name in os.listdir(os.path.join(ROOT, "docs"))
                  if name.endswith(".md"))
    return ["README.md", *docs]


def blocks(page: str) -> list[Block]:
    """The fenced blocks of ``page`` with their marks; raises ValueError on a bad mark."""
    text = open(os.path.join(ROOT, page)).read()
    found: list[Block] = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        block = Block(page, line, match.group(1), match.group(2))
        before = text[:match.start()].rstrip("\n")
        while before.endswith("-->"):
            mark = list(_MARK.finditer(before))
            if not mark or mark[-1].end() != len(before):
                raise ValueError(f"{page}:{line}: a comment above the block is not a "
                                 "docs mark (skip, needs, output, setup)")
            kind, rest = mark[-1].group(1), mark[-1].group(2)
            block.marks.append(kind)
            if kind == "skip":
                if not rest.strip():
                    raise ValueError(f"{page}:{line}: `docs: skip` needs a reason")
                block.skip = rest.strip()
            elif kind == "needs":
                if rest.strip() not in ENGINES:
                    raise ValueError(f"{page}:{line}: `docs: needs` takes one of {ENGINES}, "
                                     f"got {rest.strip()!r}")
                block.engine = rest.strip()
            elif kind == "setup":
                block.setup = rest.strip("\n") + "\n" + block.setup
            before = before[:mark[-1].start()].rstrip("\n")
        if "output" in block.marks:
            if not found or found[-1].language != "python":
                raise ValueError(f"{page}:{line}: `docs: output` follows no python block")
            found[-1].output = block.code
            continue
        found.append(block)
    return found


def runnable(page: str, engine: str | None) -> list[Block]:
    """The python blocks of ``page`` that run with ``engine`` (None: on any machine)."""
    return [block for block in blocks(page) if block.language == "python"
            and block.skip is None and block.engine == engine]


def script(selected: list[Block]) -> str:
    """A program that runs ``selected`` in order, each compiled with its page and line so a
    traceback points into the page, and prints a separator before each block's output."""
    pieces = [(block.page, block.line, block.code, block.setup) for block in selected]
    return (
        "import sys\n"
        f"for _page, _line, _code, _setup in {pieces!r}:\n"
        f"    print({_SEPARATOR!r}, flush=True)\n"
        "    if _setup:\n"
        "        exec(compile(_setup, _page + ' (setup comment)', 'exec'), globals())\n"
        "    exec(compile('\\n' * (_line - 1) + _code, _page, 'exec'), globals())\n"
        "    sys.stdout.flush()\n")


def run(page: str, engine: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> None:
    """Run the blocks of ``page`` for ``engine``; raise AssertionError naming the page and
    what went wrong (a traceback into the page, or the block whose output differs)."""
    selected = runnable(page, engine)
    if not selected:
        return
    with tempfile.TemporaryDirectory(prefix="remotefn-docs-") as directory:
        path = os.path.join(directory, "blocks.py")
        with open(path, "w") as file:
            file.write(script(selected))
        done = subprocess.run([sys.executable, path], cwd=directory, capture_output=True,
                              text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise AssertionError(f"the code blocks of {page} failed:\n{done.stderr}")
    outputs = done.stdout.split(_SEPARATOR + "\n")[1:]
    for block, output in zip(selected, outputs):
        if block.output is not None and output != block.output:
            raise AssertionError(f"{page}:{block.line}: the block printed\n{output}\n"
                                 f"where the page shows\n{block.output}")
