"""MkDocs hooks of the documentation site (mkdocs.yml): the home page is README.md.

The README's links point into docs/ and examples/ from the repository's top; on the site,
pages in docs/ are siblings of the home page, and the examples are named as code.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def home_page() -> str:
    """README.md with its links made to work from the site's top."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    readme = re.sub(r"\]\(docs/", "](", readme)
    # [examples/x.py](examples/x.py) -> examples/x.py: the site does not hold the examples.
    return re.sub(r"\[([^\]]+)\]\((?:examples|benchmarks|scripts)/[^)]+\)", r"\1", readme)


def on_files(files: Files, config: Any, **_: Any) -> Files:
    files.append(File.generated(config, "index.md", content=home_page()))
    return files
