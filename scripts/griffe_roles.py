"""A griffe extension for the API reference: Sphinx roles in docstrings become code.

remotefn's docstrings are read by ``help()`` as well as by the site, so they use the plain
reST spelling (:class:`~remotefn.Session`, ``value``); on the site a role that names a
remotefn object links to its entry in the reference, and the rest is inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)\.?([^`]+)`")


def _code(match: re.Match[str]) -> str:
    """A role naming a remotefn object becomes a link to it (strict builds fail on a name
    that is not in the reference); any other, inline code."""
    name = match.group(2)
    shown = f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"
    return f"[{shown}][{name}]" if name.startswith("remotefn.") else shown


def _plain(text: str) -> str:
    return _ROLE.sub(_code, text).replace("``", "`")


class SphinxRolesAsCode(griffe.Extension):
    """Rewrites every docstring once, when its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **_: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _plain(obj.docstring.value)
