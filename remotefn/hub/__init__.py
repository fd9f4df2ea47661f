"""The hub: the session's scheduling thread and what it owns.

:mod:`.hub` composes the parts and routes messages; :mod:`.events` is its epoll loop (sockets,
file descriptors, timers, an inbox other threads post to); :mod:`.links` the sockets to the
workers; :mod:`.direct` lets a thread waiting for its call read the result itself;
:mod:`.scheduler` decides which call goes where and which worker starts next (it sends
nothing); :mod:`.workers` starts, watches and buries workers, and :mod:`.fates` says what becomes of
the calls a gone worker held; :mod:`.results` turns
results into future values; :mod:`.records` and :mod:`.ledger` hold the state;
:mod:`.snapshot` reads them for ``session.resources()`` and the status command.

May import: :mod:`remotefn.backends`, :mod:`remotefn.protocol` and the bottom layer (options,
errors, future, _version). Never the session, the cache or the decorator.
"""
