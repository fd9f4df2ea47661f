"""Sessions: where calls go. The :class:`~.session.Session` (an Executor that validates and
submits calls), which session a call goes to (:mod:`.defaults`), the registry of the
current and default sessions (:mod:`.registry`), and
futures inside arguments (:mod:`.dependencies`).

May import: :mod:`remotefn.hub`, :mod:`remotefn.cache`, :mod:`remotefn.dashboard` (when a
session serves one, or writes a report), :mod:`remotefn.backends`,
:mod:`remotefn.protocol` and the bottom layer (options, errors, future, _version). Never the
decorator: a handle is recognised by its ``__remotefn_handle__`` marker. Workers import the registry
alone, so this ``__init__`` imports nothing.
"""
