"""The protocol: everything that crosses between a session and its workers.

Owns the message kinds and their bodies (:mod:`.messages`), framing and authentication
(:mod:`.framing`), pickling of values (:mod:`.pickling`) and of functions (:mod:`.shipping`),
shared memory for large buffers to forked workers (:mod:`.segments`),
the two links that carry frames (:mod:`.zmqlink` over ZeroMQ, :mod:`.socketpair` over a
private socket pair) and the variables a worker is launched with (:mod:`.launch`).

May import: the standard library, :mod:`remotefn.errors`, :mod:`remotefn._version`, and zmq,
cloudpickle lazily. Imported by the worker, so every module here stays cheap to import.
"""
