"""The worker process, ``python -m remotefn.worker``: the loop that talks to the session
(:mod:`.loop`), running one call (:mod:`.runner`), MPI workers (:mod:`.mpi`), the watchdog
that ends a worker whose session is gone (:mod:`.watchdog`), start-up (:mod:`.startup`), the
fork server for local workers (:mod:`.forkserver`) and, for local sessions without one, the
sentinel that ends what calls left running once the session is gone (:mod:`.sentinel`).

May import: :mod:`remotefn.protocol`, :mod:`remotefn.errors`, the session registry
(:mod:`remotefn.sessions.registry`, for sessions opened inside a call) and
:mod:`remotefn.decorator` (the fork server loads it ahead, so that forked workers start with
it). The session's side imports :mod:`.runner` alone (``handle.local()`` fills a call's
arguments from ``init`` as a worker does) and starts the rest by module name.
"""
