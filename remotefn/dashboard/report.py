"""The run report: one self-contained HTML file made from an event record.

    python -m remotefn report run.jsonl -o run.html

The file holds the task stream, the progress per function, the workers and the failed calls;
it loads nothing from elsewhere. The record is read line by line, so a record of a million
calls needs memory only for the calls not yet done at each point (and the aggregated stream).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Iterable, Iterator

from ..errors import MissingDependency
from .tally import Tally


def require_bokeh() -> None:
    """Raise :class:`~remotefn.errors.MissingDependency` when Bokeh is not installed (without
    importing it)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        raise MissingDependency(BOKEH_MISSING)


#: Where a child that renders a page finds remotefn (and Bokeh): as this process does.
IMPORT_PATH = os.pathsep.join(p for p in sys.path if p)

BOKEH_MISSING = ("the dashboard and the report need Bokeh: pip install 'remotefn[dashboard]' "
                 "(or pip install bokeh)")


def page_module() -> Any:
    """:mod:`.page`, which needs Bokeh; raises :class:`~remotefn.errors.MissingDependency`
    without it."""
    try:
        from . import page
    except ImportError:
        raise MissingDependency(BOKEH_MISSING) from None
    return page


def tally_of(events: Iterable[dict[str, Any]]) -> Tally:
    """The counts of a run from its events, oldest first."""
    iterator = iter(events)
    tally: Tally | None = None
    for entry in iterator:
        if tally is None:
            tally = Tally(entry["t"])
        tally.event(entry)
    return tally if tally is not None else Tally(0.0)


def report_data(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The page's data for a finished run (see :mod:`.page`): its summary and task stream."""
    tally = tally_of(events)
    return {"summary": tally.summary(), "stream": tally.stream.columns()}


def read_events(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The events of a record file, oldest first, one at a time; raises ``ValueError``
    naming the file and line of a line that is not an event."""
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry["t"], entry["event"]  # noqa: B018 - every event has both
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{os.fspath(path)}, line {number}: not an event of a "
                                 f"remotefn record ({error})") from None
            yield entry


def write_report(events: Iterable[dict[str, Any]], path: str | os.PathLike,
                 title: str = "remotefn run report") -> int:
    """Write the report of ``events`` to ``path``; returns its size in bytes. Raises
    :class:`~remotefn.errors.MissingDependency` without Bokeh."""
    text = page_module().render(report_data(events), title, live=False)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
    return len(text.encode())


def render_elsewhere(data: str, title: str, live: bool) -> bytes:
    """The page of ``data`` (JSON), rendered by a child process (``python -m
    remotefn.dashboard.page``): importing Bokeh in a session would add its ~90k objects to the
    session's heap, which every full garbage collection of the session would then walk."""
    request = ('{"data":' + data + ',"title":' + json.dumps(title) + ',"live":'
               + ("true" if live else "false") + "}")
    done = subprocess.run([sys.executable, "-m", "remotefn.dashboard.page"],
                          input=request.encode(), capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": IMPORT_PATH})
    if done.returncode != 0:
        raise RuntimeError("the page could not be rendered: "
                           + done.stderr.decode(errors="replace").strip()[-2000:])
    return done.stdout


def write_report_elsewhere(events: Iterable[dict[str, Any]], path: str | os.PathLike,
                           title: str) -> int:
    """:func:`write_report`, with the page rendered by a child process (for a session, which
    must not import Bokeh: see :func:`render_elsewhere`)."""
    require_bokeh()
    page = render_elsewhere(json.dumps(report_data(events)), title, live=False)
    with open(path, "wb") as file:
        file.write(page)
    return len(page)
