"""The hub: one thread per session that owns the sockets, the workers and the queues.

Who writes and who reads::

    caller threads --submit()--> inbox --eventfd wake--> hub thread        (events.py)
    caller thread <--socket pair-- the idle worker it sent its call to     (direct.py)
    hub thread <--ROUTER socket--> workers (DEALER; tasks, results, output)
                      (ZMTP heartbeats on the same connections: libzmq answers them)
    hub thread <--socket pair--> forked local workers (tasks, results, output)   (links.py)
    hub thread <--pidfd, stderr pipe-- worker processes (exit and stderr)       (workers.py)
    hub thread --set_result / set_exception--> futures (callbacks run here)     (results.py)

Everything below the inbox runs in the hub thread, holding the hub's lock. Two exceptions: a
submitting thread that finds an idle worker on a socket pair sends the call itself, holding
the same lock (see :meth:`Hub.submit`), and the thread that then waits for that call reads the
answer itself, under the same lock (see :mod:`.direct`); both save a trip through the hub
thread.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
from functools import partial
from typing import Any

from ..backends import Backend
from ..errors import RemoteFnError, WorkerStartError
from ..future import session_thread
from ..protocol import messages
from ..protocol.framing import new_key
from ..protocol.messages import Flag, Kind
from .direct import read_own_result
from .events import POLL_FIRST, SEVERAL_CPUS, SHORT_CALL, EventLoop
from .ledger import Ledger
from .recorder import Recorder
from .links import Links
from . import snapshot
from .records import Call, WorkerRecord
from .results import Results
from .scheduler import Scheduler
from .status import StatusServer, claim, remove_stale_run_dirs
from .workers import STOP_GRACE, Workers

logger = logging.getLogger(__name__)


def _nothing() -> None:
    """Posted only to wake the hub thread."""


class Hub:
    """Runs the session's event loop in a daemon thread; see the module docstring."""

    def __init__(self, backend: Backend, forward_output: bool = True,
                 start_timeout: float = 300.0, recorder: Recorder | None = None,
                 measure_memory: bool = False) -> None:
        self.backend = backend
        self.key = new_key()
        #: Held by the hub thread while it handles events, and by a submitting thread that
        #: sends a call itself (see submit); everything below the inbox is guarded by it.
        self.lock = threading.Lock()
        self.runtime_dir = tempfile.mkdtemp(prefix="remotefn-")
        self.loop = EventLoop()
        links: Links | None = None
        try:
            claim(self.runtime_dir)
            backend.session_mark = f"s{secrets.token_hex(6)}/"
            backend.start()
            capacity = backend.capacity()
            links = Links(self.loop, backend.address(self.runtime_dir), self._deliver)
            self.status = StatusServer(self.loop, self.runtime_dir, self._status)
        except BaseException:  # nothing may be left running by a session that never opened
            if links is not None:
                links.close()
            self.loop.close()
            backend.close()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            raise
        self.links = links
        self.ledger = Ledger(capacity)
        self._lost_seen = 0
        self.scheduler = Scheduler(capacity, self.ledger)
        self.recorder = recorder if recorder is not None else Recorder()
        self.workers = Workers(backend, self.links, self.loop, self.ledger, self.key,
                               start_timeout, forward_output, self.recorder, measure_memory)
        self.links.on_mismatch = self.workers.on_protocol_mismatch
        self.results = Results(self.workers.retire, self.links.reject, forward_output)
        self._handlers = {Kind.HELLO: self._on_hello, Kind.READY: self._on_ready,
                          Kind.INIT_FAILED: self._on_init_failed,
                          Kind.RESULT: self.results.on_result,
                          Kind.OUTPUT: self.results.on_output}
        #: The next wait polls this long before it sleeps (a short call was just sent).
        self._poll_first = 0.0
        self.thread = threading.Thread(target=self._run, name="remotefn-hub", daemon=True)
        self.loop.thread = self.thread
        #: Set once the hub has stopped every worker and closed its sockets.
        self.stopped = self.loop.closed
        self.thread.start()

    # -- called from any thread ------------------------------------------------------------

    def submit(self, call: Call) -> None:
        """Queue ``call``; send it to an idle worker at once from a submitting thread, or
        from the hub thread's own done-callbacks (a call whose arguments just became ready)."""
        if not self.loop.inbox:
            # The hub thread holds the lock but while it shuts down, when _send_now refuses.
            if threading.current_thread() is self.thread:
                if self._send_now(call, in_hub=True):
                    return
            elif self.lock.acquire(blocking=False):
                try:
                    if self._send_now(call):
                        return
                finally:
                    self.lock.release()
        self.loop.post(self._enqueue, call)
        if self.stopped.is_set():  # checked after posting: see _close
            self._fail_stranded()

    def _send_now(self, call: Call, in_hub: bool = False) -> bool:
        """Holding the lock (a submitting thread while the hub thread waits for events, or
        the hub thread itself): send ``call`` straight to an idle-enough worker on a socket
        pair. False (nothing done) whenever the hub thread must decide."""
        options = call.options
        if (self.workers.stopping or self.loop.inbox or not options.block
                or options.timeout is not None):
            return False
        scheduler = self.scheduler
        pool = scheduler.pool_for(options, create=False)
        if pool is None or pool.queue:
            return False  # a new pool, or earlier calls waiting: the hub thread decides
        worker = scheduler.idle_stream_worker(pool)
        if worker is None:
            return False
        pool.released = False
        if scheduler.assign(worker, call):
            self._send_call(worker, call)
            if in_hub:  # the hub thread reads the answer (and polls for it if it is short)
                self._expect_answer(worker)
            elif worker.stream is not None and worker.stream.outgoing:
                self.loop.post(_nothing)  # the hub thread must watch the socket for writing
            elif len(worker.inflight) == 1:  # a caller waiting for it may read the result
                if worker.read_directly is None:
                    worker.read_directly = partial(read_own_result, self, worker)
                call.future._direct = worker.read_directly
        return True

    def wake(self) -> None:
        """Make the hub thread run a turn of its loop (from any thread)."""
        self.loop.post(_nothing)

    def release(self, key: Any) -> None:
        """Stop the workers of the pool ``key`` once they are idle; returns at once."""
        self.loop.post(self.scheduler.release, key)

    def stop(self, kill: bool) -> None:
        """Ask the hub to stop every worker and exit; returns at once."""
        self.loop.post(self._begin_stop, kill)

    def kill_now(self) -> None:
        """SIGKILL every worker from any thread; used when this process is about to exit."""
        self.workers.kill_all()

    @property
    def address(self) -> str:
        """The address workers connect to."""
        return self.links.address

    @property
    def rejected(self) -> int:
        """Messages dropped because they failed authentication or came from unknown peers."""
        return self.links.rejected

    def resources(self) -> dict[str, Any]:
        """The ledger's counts, the workers and the calls they run (a snapshot)."""
        return snapshot.resources(self.ledger, self.workers.all, self.scheduler.pools.values())

    def _status(self) -> dict[str, Any]:
        """What ``python -m remotefn status`` shows (built in the hub thread)."""
        return snapshot.status(self.backend, self.ledger, self.workers.all,
                               self.scheduler.pools.values())

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        loop = self.loop
        workers = self.workers
        session_thread.active = True  # futures refuse to be waited for in this thread
        try:
            while not (workers.stopping and not workers.all):
                ready = loop.poll(self._poll_first)
                self._poll_first = 0.0
                with self.lock:
                    loop.handle(ready)
                    self._schedule()
        except BaseException:
            logger.exception("remotefn hub crashed; stopping every worker")
            with self.lock:
                workers.stopping = True  # no submitting thread sends calls from now on
            self.kill_now()
            self._fail_everything(RemoteFnError("the remotefn session crashed; see the log"))
        finally:
            self._close()

    def _schedule(self) -> None:
        """Ready workers take queued calls, released pools stop idle workers, then new
        workers start for waiting calls, in the order the scheduler gives."""
        scheduler = self.scheduler
        if len(self.ledger.lost) != self._lost_seen:
            self._fail_what_no_longer_fits()
        for worker, calls in scheduler.hand_out():
            if len(calls) == 1:
                self._send_call(worker, calls[0])
                self._expect_answer(worker)
            else:
                self._send_calls(worker, calls)
        for worker in scheduler.idle_released():
            self.workers.stop(worker)
        while (start := scheduler.next_start()) is not None:
            pool = start.pool
            for worker in start.make_room:
                self.workers.stop(worker)
            share = self.ledger.take(pool.demand)
            assert share is not None, "the scheduler started a worker that does not fit"
            logger.debug("starting a worker for %s: %d calls queued, %d workers, %d stopped "
                         "to make room", pool.describe(), len(pool.queue), len(pool.workers),
                         len(start.make_room))
            assigned = pool.queue.popleft() if pool.one_shot else None
            if self.workers.start(pool, share, assigned) is None and not pool.one_shot:
                # Stop growing a pool whose workers fail to launch; one may replace the last.
                pool.limit = max(1, len(pool.workers))

    def _expect_answer(self, worker: WorkerRecord) -> None:
        """A call was just sent to ``worker``: if it is the only one the worker holds and its
        pool's calls are short, the hub thread's next wait polls before it sleeps (see
        :mod:`.events`)."""
        runtime = worker.pool.runtime
        if (len(worker.inflight) == 1 and runtime is not None and runtime < SHORT_CALL
                and SEVERAL_CPUS):
            self._poll_first = POLL_FIRST

    def _fail_what_no_longer_fits(self) -> None:
        """After a node failed: queued calls that no remaining node can hold fail, instead
        of waiting for ever."""
        self._lost_seen = len(self.ledger.lost)
        for pool in self.scheduler.pools.values():
            why = self.ledger.never_fits(pool.demand) if pool.queue else None
            if why is None:
                continue
            lost = ", ".join(self.ledger.lost)
            while pool.queue:
                call = pool.queue.popleft()
                call.future._fail(WorkerStartError(
                    f"{call.describe()} can no longer start: it asks for {why} now that "
                    f"node {lost} failed"))
                call.finish()

    def _enqueue(self, call: Call) -> None:
        if self.workers.stopping:
            call.future._fail(RuntimeError("the session was shut down before the call started"))
            return
        self.scheduler.enqueue(call)

    # -- sending calls -------------------------------------------------------------------------

    @staticmethod
    def _task(worker: WorkerRecord, call: Call) -> list[Any]:
        function = call.function
        if function.digest in worker.known:
            return messages.task(function.digest, b"", call.arguments)
        worker.known.add(function.digest)
        return messages.task(function.digest, function.payload, call.arguments)

    def _send_call(self, worker: WorkerRecord, call: Call) -> None:
        flags = Flag.LAST if worker.pool.one_shot else Flag.NONE
        self.links.send(worker, Kind.TASK, self._task(worker, call), call.call_id, flags)
        self.recorder.emit("started", call.call_id, worker.worker_id)
        if call.options.timeout is not None:
            self.loop.later(call.options.timeout, self.workers.time_out, worker, call)

    def _send_calls(self, worker: WorkerRecord, calls: list[Call]) -> None:
        body = messages.tasks([(call.call_id, self._task(worker, call)) for call in calls])
        self.links.send(worker, Kind.TASKS, body)
        emit = self.recorder.emit
        for call in calls:
            emit("started", call.call_id, worker.worker_id)
            if call.options.timeout is not None:
                self.loop.later(call.options.timeout, self.workers.time_out, worker, call)

    # -- messages ------------------------------------------------------------------------------

    def _deliver(self, worker: WorkerRecord, kind: Kind, flags: int, call_id: int,
                 body: list[Any]) -> None:
        handler = self._handlers.get(kind)
        if handler is None:
            self.links.reject(f"{worker.worker_id}: unexpected {kind.name}")
            return
        handler(worker, flags, call_id, body)

    def _on_hello(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        self.workers.on_hello(worker, body)

    def _on_ready(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        call = self.workers.on_ready(worker)
        if call is not None:
            if self.scheduler.assign(worker, call):
                self._send_call(worker, call)
            if not worker.inflight:  # cancelled while the worker started
                self.workers.stop(worker)

    def _on_init_failed(self, worker: WorkerRecord, flags: int, call_id: int,
                        body: list[Any]) -> None:
        self.workers.on_init_failed(worker, body)

    # -- stopping ------------------------------------------------------------------------------

    def _begin_stop(self, kill: bool) -> None:
        workers = self.workers
        if workers.stopping:
            if kill:
                self.kill_now()
            return
        workers.stopping = True
        for pool in self.scheduler.pools.values():
            while pool.queue:
                call = pool.queue.popleft()
                if not call.future.cancel():
                    call.future._fail(RuntimeError(
                        "the session was shut down before the call started"))
        for worker in list(workers.all):
            if kill:
                workers.kill(worker, marked=False)  # all at once, when the session closes
            else:
                workers.stop(worker)
        self.loop.later(STOP_GRACE, self.kill_now)

    def _fail_everything(self, error: BaseException) -> None:
        for pool in self.scheduler.pools.values():
            for call in pool.queue:
                call.future._fail(error)
        for worker in self.workers.all:
            for call in worker.inflight:
                call.future._fail(error)
            if worker.assigned is not None:
                worker.assigned.future._fail(error)

    def _close(self) -> None:
        self.status.close()
        self.workers.close()
        self.recorder.close()
        self.links.close()
        self.backend.close()
        self.workers.end_marked()  # what calls started and left running
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        remove_stale_run_dirs()  # of sessions that were killed
        self.loop.close()
        self._fail_stranded()

    def _fail_stranded(self) -> None:
        """Fail calls posted after the hub stopped (they would otherwise wait forever)."""
        for function, args in self.loop.drain():
            if function == self._enqueue:
                args[0].future._fail(RuntimeError("the session has stopped"))
