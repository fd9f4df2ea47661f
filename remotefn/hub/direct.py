"""A thread that waits for its call reads the result from the worker itself.

A call that its submitting thread sent straight to an idle worker on a socket pair (see
``Hub._send_now``) is usually waited for at once. Left to the hub thread, the result costs
two thread switches: the hub thread wakes, reads it, sets the future and wakes the waiting
thread. Instead :func:`read_own_result` takes the worker's socket out of the hub's poll, waits
on it in the waiting thread, and reads what arrives under the hub's lock, exactly as the hub
thread would (MAC checked, every message delivered, callbacks run as in the session's thread);
then it gives the socket back to the hub. When the pool's recent calls were short, it polls the
socket without sleeping for a moment first (see :mod:`.events`).

Whatever else ends the call (the worker's exit, the session stopping) is still the hub
thread's to handle: the future's done-callback kicks the waiting thread through an eventfd of
its own, and it returns to the ordinary wait.
"""

from __future__ import annotations

import os
import select
import threading
import time
from concurrent.futures._base import PENDING, RUNNING
from typing import TYPE_CHECKING

from ..future import RemoteFuture, session_thread
from .events import POLL_FIRST, POLLIN, POLLOUT, SEVERAL_CPUS, SHORT_CALL
from .records import WorkerRecord

_NOT_DONE = (PENDING, RUNNING)

if TYPE_CHECKING:
    from .hub import Hub


class _Kick:
    """A thread's eventfd, written when a future it waits on is finished by another thread,
    and the thread's poll object, which always watches that eventfd."""

    __slots__ = ("fd", "waiting", "poller")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        #: True while the thread may be blocked in poll (only then is a write needed).
        self.waiting = False
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def __call__(self, future: object) -> None:
        if self.waiting:
            os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def __del__(self) -> None:  # the thread has ended
        os.close(self.fd)


class _PerThread(threading.local):
    kick: _Kick | None = None


_local = _PerThread()


def read_own_result(hub: Hub, worker: WorkerRecord, future: RemoteFuture,
                    timeout: float | None) -> float | None:
    """Wait for ``future``, the one call ``worker`` holds, by reading the worker's socket in
    this thread; returns what is left of ``timeout``. Returns at once, leaving the wait to
    the hub thread, when the hub is busy or the worker holds other calls."""
    deadline = None if timeout is None else time.monotonic() + timeout
    stream, loop, lock = worker.stream, hub.loop, hub.lock
    if stream is None or not lock.acquire(blocking=False):
        return timeout
    try:
        fd = stream.fileno()
        handler = loop.handlers.get(fd)
        inflight = worker.inflight
        if (handler is None or hub.workers.stopping or future._state not in _NOT_DONE
                or len(inflight) != 1 or inflight[0].future is not future):
            return timeout
        loop.modify(fd, 0)  # the hub thread hears only a hang-up from this worker now
    finally:
        lock.release()
    kick = _local.kick
    if kick is None:
        kick = _local.kick = _Kick()
    future.add_done_callback(kick)
    poller, kick_fd = kick.poller, kick.fd
    poller.register(fd, select.POLLIN)
    runtime = worker.pool.runtime
    poll_until = 0.0
    if runtime is not None and runtime < SHORT_CALL and SEVERAL_CPUS:
        poll_until = time.monotonic() + POLL_FIRST
        if deadline is not None:
            poll_until = min(poll_until, deadline)
    lent = True
    try:
        while lent and future._state in _NOT_DONE:
            kick.waiting = True
            if future._state not in _NOT_DONE:
                break
            ready = None
            while poll_until:
                ready = poller.poll(0)
                if ready:
                    break
                if time.monotonic() > poll_until:
                    poll_until = 0.0
            if not ready:
                wait = (None if deadline is None
                        else max(0.0, deadline - time.monotonic()) * 1000)
                ready = poller.poll(wait)
            kick.waiting = False
            if not ready:
                break  # timed out
            readable = False
            for item, _ in ready:
                if item == kick_fd:
                    kick.clear()
                else:
                    readable = True
            if readable:
                with lock:
                    lent = _read(hub, worker, fd, handler, future)
    finally:
        kick.waiting = False
        poller.unregister(fd)
        if lent:
            with lock:
                _give_back(hub, worker, fd, handler)
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _attached(hub: Hub, worker: WorkerRecord, fd: int, handler: object) -> bool:
    """Whether ``fd`` is still the socket of ``worker`` that the hub watches."""
    return (hub.loop.handlers.get(fd) is handler and worker.stream is not None
            and worker in hub.workers.all)


def _read(hub: Hub, worker: WorkerRecord, fd: int, handler: object,
          future: RemoteFuture) -> bool:
    """Deliver what the worker sent, holding the hub's lock; gives the socket back once
    ``future`` is done. Whether the socket is still lent to this thread."""
    if not _attached(hub, worker, fd, handler):
        return False
    timers = len(hub.loop.timers)
    was = session_thread.active
    session_thread.active = True  # callbacks run here as in the session's thread
    try:
        hub.links.read(worker)
    finally:
        session_thread.active = was
    if len(hub.loop.timers) != timers:
        hub.wake()  # the hub thread's wait must end by the new timer
    if future.done():
        _give_back(hub, worker, fd, handler)
        return False
    return True


def _give_back(hub: Hub, worker: WorkerRecord, fd: int, handler: object) -> None:
    """The hub thread reads ``worker`` again, and runs its scheduling if anything waits."""
    loop = hub.loop
    if _attached(hub, worker, fd, handler):
        stream = worker.stream
        loop.modify(fd, POLLIN | (POLLOUT if stream is not None and stream.outgoing else 0))
    if loop.inbox or any(pool.queue or pool.released for pool in hub.scheduler.pools.values()):
        hub.wake()
