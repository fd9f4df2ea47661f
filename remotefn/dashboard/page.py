"""One self-contained HTML page: Bokeh's plots (its JavaScript inline), the tables, and the
data; the live dashboard's page also fetches fresh data twice a second.

The page's data (``LiveState.data`` in :mod:`.live`) is one JSON object: ``summary`` (per
function, per worker, errors), ``stream`` (the task stream's rectangles), ``nodes`` and
``running`` (live only). The same script draws it in the report and in the dashboard, so
both look alike.
"""

from __future__ import annotations

import html
import json
from importlib import resources as package_files
from typing import Any

from bokeh.embed import components
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool, Range1d
from bokeh.plotting import figure
from bokeh.resources import Resources

from .stream import FAILED

#: How often the dashboard's page asks for fresh data, in milliseconds.
POLL_MS = 500
_STATES = ("finished", "cached", "failed", "running", "queued")
_STATE_COLORS = ("#2ca02c", "#98df8a", FAILED, "#ff7f0e", "#c7c7c7")


def _stream_figure(stream: dict[str, list[Any]]) -> Any:
    workers = sorted(set(stream["worker"])) or ["(no worker yet)"]
    end = max(stream["end"], default=1.0) or 1.0
    plot = figure(name="stream", title="Task stream: one bar per call per worker "
                  "(red: failed)", height=max(220, 40 + 26 * len(workers)),
                  sizing_mode="stretch_width",
                  y_range=FactorRange(factors=list(workers), name="workers"),
                  x_range=Range1d(start=0, end=end * 1.02, name="time"),
                  x_axis_label="seconds since the session opened",
                  tools="xpan,xwheel_zoom,box_zoom,reset,save", toolbar_location="above")
    source = ColumnDataSource(stream, name="tasks")
    # The outline keeps a call shorter than a pixel visible (a quick failure, say).
    bars = plot.hbar(y="worker", left="start", right="end", height=0.8, fill_color="color",
                     fill_alpha="alpha", line_color="color", line_alpha="alpha",
                     line_width=1, source=source)
    plot.add_tools(HoverTool(renderers=list[Any]([bars]), tooltips="@worker: @label"))
    plot.ygrid.grid_line_color = None
    return plot


def _progress_figure(functions: list[dict[str, Any]]) -> Any:
    names = [row["function"] for row in functions] or ["(no call yet)"]
    data: dict[str, list[Any]] = {"function": names}
    for state in _STATES:
        data[state] = [row[state] for row in functions] or [0]
    plot = figure(name="progress", title="Progress per function: calls by state",
                  height=max(160, 60 + 30 * len(names)), sizing_mode="stretch_width",
                  y_range=FactorRange(factors=list(names), name="functions"),
                  x_range=DataRange1d(start=0), toolbar_location=None,
                  tools="")
    source = ColumnDataSource(data, name="progress_data")
    renderers: list[Any] = plot.hbar_stack(list(_STATES), y="function", height=0.7,
                                           color=_STATE_COLORS, source=source,
                                           legend_label=list(_STATES))
    plot.add_tools(HoverTool(renderers=renderers,
                             tooltips=[("function", "@function"), ("calls", "$name: @$name")]))
    plot.add_layout(plot.legend[0], "right")
    plot.ygrid.grid_line_color = None
    return plot


def _nodes_figure(nodes: list[dict[str, Any]]) -> Any:
    hosts = [row["host"] for row in nodes] or ["(no worker yet)"]
    data = {"host": hosts, "in_use": [row["in_use"] for row in nodes] or [0],
            "workers": [row["workers"] for row in nodes] or [0]}
    plot = figure(name="nodes", title="Allocation: cores in use per node",
                  height=max(140, 60 + 30 * len(hosts)), sizing_mode="stretch_width",
                  y_range=FactorRange(factors=list(hosts), name="hosts"),
                  x_range=DataRange1d(start=0), toolbar_location=None, tools="")
    source = ColumnDataSource(data, name="nodes_data")
    bars = plot.hbar(y="host", right="in_use", height=0.6, color="#1f77b4", source=source)
    plot.add_tools(HoverTool(renderers=list[Any]([bars]), tooltips="@host: @in_use cores in use by "
                             "@workers workers"))
    plot.ygrid.grid_line_color = None
    return plot


def render(data: dict[str, Any], title: str, live: bool) -> str:
    """The page for ``data`` (see the module docstring), as HTML text."""
    plots = [_stream_figure(data["stream"]), _progress_figure(data["summary"]["functions"])]
    if live:
        plots.insert(0, _nodes_figure(data.get("nodes", [])))
    script, div = components(column(*plots, sizing_mode="stretch_width"))
    bokeh_js = Resources(mode="inline", components=["bokeh"]).render_js()
    own = package_files.files(__package__)
    style = own.joinpath("page.css").read_text(encoding="utf-8")
    code = own.joinpath("page.js").read_text(encoding="utf-8")
    # No "<" at all inside the script element: "</script>" would end it, and "<!--" with
    # "<script" (in a function's name or an error message) would make the parser run past it.
    embedded = json.dumps({**data, "stream": None}, separators=(",", ":"),
                          default=str).replace("<", "\\u003c")
    return _TEMPLATE.format(title=html.escape(title), style=style, bokeh_js=bokeh_js,
                            bokeh_script=script, plots=div, data=embedded, code=code,
                            live="true" if live else "false", poll=POLL_MS)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
{bokeh_js}
</head>
<body>
<header><h1>{title}</h1><p id="summary"></p></header>
<main>
{plots}
<section><h2>Workers</h2><table id="workers"></table></section>
<section id="running-section"><h2>Running calls</h2><table id="running"></table></section>
<section><h2>Errors</h2><div id="errors"></div></section>
</main>
{bokeh_script}
<script>const REMOTEFN = {{data: {data}, live: {live}, poll: {poll}}};</script>
<script>{code}</script>
</body>
</html>
"""


def main() -> None:
    """Render one page from ``{"data": ..., "title": ..., "live": ...}`` read as JSON on
    stdin, to stdout (the live dashboard renders its page in a child process this way, so
    that Bokeh's objects never join the session's heap)."""
    import sys

    request = json.load(sys.stdin)
    sys.stdout.write(render(request["data"], request["title"], request["live"]))


if __name__ == "__main__":
    main()
