"""The live dashboard and the run report: what ran where, when, and what failed.

:mod:`.stream` aggregates calls into a task stream (one bar per call, or per worker and time
bucket for large runs) and counts per function; :mod:`.page` draws it with Bokeh into one
self-contained HTML page; :mod:`.report` makes that page from an event record; :mod:`.live`
keeps the state of a running session, and :mod:`.server` serves it on 127.0.0.1 behind a
token, in a thread of its own. Everything but :mod:`.stream` needs the ``dashboard`` extra.

May import: the bottom layer (options, errors, future, _version), and the hub's event record
(``remotefn.hub.recorder``) in type annotations alone. Never the session: the session hands
the dashboard what it shows.
"""
