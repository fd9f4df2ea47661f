"""The worker process, ``python -m remotefn.worker``: the loop that talks to the session
(:mod:`.loop`), running one call (:mod:`.runner`), MPI workers (:mod:`.mpi`), the watchdog
that ends a worker whose session is gone (:mod:`.watchdog`), start-up (:mod:`.startup`) and
the fork server for local workers (:mod:`.forkserver`).

May import: :mod:`remotefn.protocol`, :mod:`remotefn.errors` and the session registry
(:mod:`remotefn.sessions.registry`, for sessions opened inside a call). Nothing here is
imported by the session's side except the fork server's module name.
"""
