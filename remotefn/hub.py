"""The hub: one thread per session that owns the socket, the workers and the queues.

Who writes and who reads::

    caller threads --submit()--> inbox (deque) --eventfd wake--> hub thread
    hub thread <--ROUTER socket--> workers (DEALER; tasks, results, output, heartbeats)
    hub thread <--socket pair--> forked local workers (tasks, results, output; see stream.py)
    hub thread <--pidfd, stderr pipe-- worker processes (exit and stderr, no waiting thread)
    hub thread --set_result / set_exception--> futures (their callbacks run in the hub thread)

Everything below the inbox runs in the hub thread, holding the hub's lock; the one exception
is a submitting thread that sends a call to an idle worker itself, holding the same lock
(see Hub.submit). What each message from a worker means is in :mod:`remotefn.messages`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from typing import Any, Callable

import zmq

from . import wire
from .backends import Backend
from .calls import Call, Pool, WorkerRecord
from .errors import RemoteFnError
from .ledger import Ledger
from .lifecycle import STOP_GRACE, WorkerLifecycle
from .messages import MessageHandlers
from .scheduling import Scheduler
from .stream import StreamClosed
from .wire import Kind

logger = logging.getLogger(__name__)
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)


def _nothing() -> None:
    """Posted only to wake the hub thread."""


class Hub(MessageHandlers, WorkerLifecycle, Scheduler):
    """Runs the session's event loop in a daemon thread; see the module docstring."""

    def __init__(self, backend: Backend, forward_output: bool = True,
                 start_timeout: float = 300.0) -> None:
        self.backend = backend
        self.start_timeout = start_timeout
        backend.start()
        self.capacity = backend.capacity()
        self.forward_output = forward_output
        self.key = wire.new_key()
        self.runtime_dir = tempfile.mkdtemp(prefix="remotefn-")
        self.zmq = zmq.Context()
        self.router = self.zmq.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        address = backend.address(self.runtime_dir)
        if address.startswith("tcp://") and address.count(":") == 1:
            self.router.bind_to_random_port(address)
        else:
            self.router.bind(address)
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.poller.register(self.wake_fd, zmq.POLLIN)
        self.inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        #: Held by the hub thread while it handles events, and by a submitting thread that
        #: sends a call itself (see submit); everything below the inbox is guarded by it.
        self.lock = threading.Lock()
        self._wake_pending = False
        self.pools: dict[Any, Pool] = {}
        self.channels: dict[bytes, tuple[WorkerRecord, bool]] = {}
        self.exit_fds: dict[int, WorkerRecord] = {}
        self.stderr_fds: dict[int, WorkerRecord] = {}
        self.stream_fds: dict[int, WorkerRecord] = {}
        self.workers: set[WorkerRecord] = set()
        self.ledger = Ledger(self.capacity)
        self.timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._timer_ids = itertools.count()
        self._worker_ids = itertools.count()
        #: Messages dropped because they failed authentication or came from unknown peers.
        self.rejected = 0
        self.stopping = False
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="remotefn-hub", daemon=True)
        self.thread.start()

    # -- called from any thread ------------------------------------------------------------

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` in the hub thread soon."""
        self.inbox.append((function, args))
        if not self._wake_pending and threading.current_thread() is not self.thread \
                and not self.stopped.is_set():
            self._wake_pending = True
            try:
                os.eventfd_write(self.wake_fd, 1)
            except OSError:  # the hub has stopped and closed the fd
                pass

    def submit(self, call: Call) -> None:
        if (not self.inbox and threading.current_thread() is not self.thread
                and self.lock.acquire(blocking=False)):
            try:
                if self._dispatch_now(call):
                    return
            finally:
                self.lock.release()
        self.post(self._enqueue, call)
        if self.stopped.is_set():  # checked after posting: see _close
            self._fail_stranded()

    def _dispatch_now(self, call: Call) -> bool:
        """From a submitting thread, holding the lock while the hub thread waits for events:
        send ``call`` straight to an idle-enough worker on a socket pair, saving the trip
        through the hub thread. False (nothing done) whenever the hub thread must decide."""
        options = call.options
        if self.stopping or self.inbox or not options.block or options.timeout is not None:
            return False
        pool = self._pool_for(options, create=False)
        if pool is None or pool.queue:
            return False  # a new pool, or earlier calls waiting: the hub thread decides
        worker = self._idle_stream_worker(pool)
        if worker is None:
            return False
        pool.released = False
        if self._begin(worker, call):
            self._send_call(worker, call)
            if worker.stream is not None and worker.stream.outgoing:
                self.post(_nothing)  # the hub thread must watch the socket for writing
        return True

    def stop(self, kill: bool) -> None:
        """Ask the hub to stop every worker and exit; returns at once."""
        self.post(self._begin_stop, kill)

    def kill_now(self) -> None:
        """SIGKILL every worker from any thread; used when this process is about to exit."""
        for worker in list(self.workers):
            worker.process.signal(signal.SIGKILL)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not (self.stopping and not self.workers):
                timeout = 0 if self.inbox else self._next_timer()
                ready = self.poller.poll(timeout)
                with self.lock:
                    self._handle_events(ready)
        except BaseException:
            logger.exception("remotefn hub crashed; stopping every worker")
            with self.lock:
                self.stopping = True  # no submitting thread sends calls from now on
            self.kill_now()
            self._fail_everything(RemoteFnError("the remotefn session crashed; see the log"))
        finally:
            self._close()

    def _handle_events(self, ready: list[tuple[Any, int]]) -> None:
        """Handle what poll() reported, then the inbox, the timers and the queues."""
        for item, events in ready:
            if item is self.router:
                self._receive_all()
            elif item == self.wake_fd:
                # Read before clearing the flag: a post() that sees the flag still set
                # has appended its item already, and the inbox is emptied below; one
                # that sees it cleared writes again.
                try:
                    os.eventfd_read(self.wake_fd)
                except BlockingIOError:
                    pass
                self._wake_pending = False
            elif item in self.exit_fds:
                self._on_exit(self.exit_fds[item])
            elif item in self.stderr_fds:
                self._read_stderr(self.stderr_fds[item])
            elif item in self.stream_fds:
                self._on_stream(self.stream_fds[item], events)
        while self.inbox:
            function, args = self.inbox.popleft()
            function(*args)
        self._run_timers()
        self._schedule()

    def _next_timer(self) -> int | None:
        if not self.timers:
            return None
        return max(0, int((self.timers[0][0] - time.monotonic()) * 1000) + 1)

    def _later(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        when = time.monotonic() + delay
        heapq.heappush(self.timers, (when, next(self._timer_ids), function, args))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, function, args = heapq.heappop(self.timers)
            function(*args)

    # -- workers -----------------------------------------------------------------------------

    def _send(self, worker: WorkerRecord, kind: Kind, body: list[Any] = [], call_id: int = 0,
              flags: int = 0, heartbeat: bool = False) -> None:
        channel = worker.heartbeat if heartbeat else worker.channel
        try:
            frames = channel.seal(kind, body, call_id, flags)
            stream = worker.stream
            if stream is None or heartbeat:
                wire.send(self.router, [channel.identity, *frames])
            elif not stream.send(frames):
                self.poller.modify(stream.fileno(), _POLLIN | _POLLOUT)
        except (zmq.ZMQError, OSError) as error:  # the peer is gone; its exit comes separately
            logger.debug("could not send %s to %s: %s", kind.name, worker.worker_id, error)

    def _on_stream(self, worker: WorkerRecord, events: int) -> None:
        stream = worker.stream
        if stream is None:
            return
        if events & _POLLOUT:
            try:
                if stream.flush():
                    self.poller.modify(stream.fileno(), _POLLIN)
            except OSError:
                stream.outgoing.clear()
        if events & ~_POLLOUT:
            self._read_stream(worker)

    def _read_stream(self, worker: WorkerRecord) -> None:
        """Handle every complete message the worker's socket pair holds."""
        stream = worker.stream
        try:
            messages = stream.receive_ready()
        except (StreamClosed, OSError):  # the worker is gone; its exit comes through its pidfd
            messages = []
            self._drop_stream(worker)
        for frames in messages:
            self._handle(worker, False, frames)

    def _drop_stream(self, worker: WorkerRecord) -> None:
        stream = worker.stream
        if stream is not None and self.stream_fds.pop(stream.fileno(), None) is not None:
            self.poller.unregister(stream.fileno())

    # -- messages ----------------------------------------------------------------------------

    def _receive_all(self) -> None:
        router = self.router
        while True:
            try:
                frames = wire.receive(router, _NOBLOCK)
            except zmq.Again:
                return
            entry = self.channels.get(frames[0].bytes)
            if entry is None:
                self._reject("a peer that is not one of this session's workers")
                continue
            self._handle(entry[0], entry[1], frames[1:])

    def _handle(self, worker: WorkerRecord, is_heartbeat: bool, frames: list[Any]) -> None:
        channel = worker.heartbeat if is_heartbeat else worker.channel
        try:
            kind, flags, call_id, body = channel.open(frames)
        except wire.AuthenticationError as error:
            self._reject(f"{worker.worker_id}: {error}")
            return
        if is_heartbeat:
            if kind is Kind.PING:
                self._send(worker, Kind.PONG, heartbeat=True)
            return
        handler = self._HANDLERS.get(kind)
        if handler is None:
            self._reject(f"{worker.worker_id}: unexpected {kind.name}")
            return
        handler(self, worker, flags, call_id, body)

    def _reject(self, why: str) -> None:
        self.rejected += 1
        logger.warning("remotefn session dropped a message from %s", why)

    # -- stopping ----------------------------------------------------------------------------

    def _begin_stop(self, kill: bool) -> None:
        if self.stopping:
            if kill:
                self.kill_now()
            return
        self.stopping = True
        for pool in self.pools.values():
            while pool.queue:
                call = pool.queue.popleft()
                if not call.future.cancel():
                    call.future._fail(RuntimeError(
                        "the session was shut down before the call started"))
        for worker in list(self.workers):
            if kill:
                worker.process.signal(signal.SIGKILL)
                self._stopping(worker)
            else:
                self._stop_worker(worker)
        self._later(STOP_GRACE, self.kill_now)

    def _fail_everything(self, error: BaseException) -> None:
        for pool in self.pools.values():
            for call in pool.queue:
                call.future._fail(error)
        for worker in self.workers:
            for call in worker.inflight:
                call.future._fail(error)
            if worker.assigned is not None:
                worker.assigned.future._fail(error)

    def _close(self) -> None:
        for worker in list(self.workers):
            worker.process.signal(signal.SIGKILL)
            worker.process.wait(5)
            worker.process.close()
        self.workers.clear()
        self.router.close(linger=0)
        self.zmq.term()
        self.backend.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.stopped.set()
        os.close(self.wake_fd)
        self._fail_stranded()

    def _fail_stranded(self) -> None:
        """Fail calls posted after the hub stopped (they would otherwise wait forever)."""
        while True:
            try:
                function, args = self.inbox.popleft()
            except IndexError:
                return
            if function == self._enqueue:
                args[0].future._fail(RuntimeError("the session has stopped"))
