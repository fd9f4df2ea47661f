"""The hub: one thread per session that owns the socket, the workers and the queues.

Who writes and who reads::

    caller threads --submit()--> inbox (deque) --eventfd wake--> hub thread
    hub thread <--ROUTER socket--> workers (DEALER; tasks, results, output, heartbeats)
    hub thread <--pidfd, stderr pipe-- worker processes (exit and stderr, no waiting thread)
    hub thread --set_result / set_exception--> futures (their callbacks run in the hub thread)

Everything below the inbox runs in the hub thread only, so none of it needs a lock.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any, Callable

import zmq

from . import wire
from ._version import PROTOCOL_VERSION, __version__
from .backends import Backend, WorkerSpec
from .backends.base import describe_exit
from .calls import Call, Pool, State, WorkerRecord
from .ledger import Allocation, Ledger
from .errors import (CallTimeout, ProtocolError, RemoteError, RemoteFnError, RemoteTraceback,
                     SerializationError, WorkerDied, WorkerStartError)
from .options import CallOptions
from .wire import ENV_ADDRESS, ENV_CORES, ENV_KEY, ENV_WORKER, Flag, Kind

logger = logging.getLogger(__name__)

#: Calls a block worker may hold at once, so that it never waits for the session between
#: calls. ZeroMQ sends asynchronously: a worker that dies just after sending a result can
#: lose it, and with several calls in flight the session could blame the wrong one. Workers
#: with a status pipe (local single-rank workers) write each finished call's id there
#: synchronously, which keeps every WorkerDied exact; the others hold one call at a time.
PIPELINE_DEPTH = 3
#: After a worker exits, results it sent may still be in flight; wait this long for them.
EXIT_GRACE = 0.2
#: Workers told to shut down are killed if still alive after this many seconds.
STOP_GRACE = 3.0
STDERR_TAIL = 16384


class Hub:
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
        self._wake_pending = False
        self.pools: dict[Any, Pool] = {}
        self.channels: dict[bytes, tuple[WorkerRecord, bool]] = {}
        self.exit_fds: dict[int, WorkerRecord] = {}
        self.stderr_fds: dict[int, WorkerRecord] = {}
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
        self.post(self._enqueue, call)

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
                for item, _ in self.poller.poll(timeout):
                    if item is self.router:
                        self._receive_all()
                    elif item == self.wake_fd:
                        self._wake_pending = False
                        try:
                            os.eventfd_read(self.wake_fd)
                        except BlockingIOError:
                            pass
                    elif item in self.exit_fds:
                        self._on_exit(self.exit_fds[item])
                    elif item in self.stderr_fds:
                        self._read_stderr(self.stderr_fds[item])
                while self.inbox:
                    function, args = self.inbox.popleft()
                    function(*args)
                self._run_timers()
                self._schedule()
        except BaseException:
            logger.exception("remotefn hub crashed; stopping every worker")
            self.kill_now()
            self._fail_everything(RemoteFnError("the remotefn session crashed; see the log"))
        finally:
            self._close()

    def _next_timer(self) -> int | None:
        if not self.timers:
            return None
        return max(0, int((self.timers[0][0] - time.monotonic()) * 1000) + 1)

    def _later(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self._timer_ids), function, args))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, function, args = heapq.heappop(self.timers)
            function(*args)

    # -- queues and scheduling -------------------------------------------------------------

    def _enqueue(self, call: Call) -> None:
        if self.stopping:
            call.future._fail(RuntimeError("the session was shut down before the call started"))
            return
        key = call.options.pool_key()
        pool = self.pools.get(key)
        if pool is None:
            pool = self._new_pool(key, call.options)
        pool.queue.append(call)
        pool.released = False

    def _new_pool(self, key: Any, options: CallOptions) -> Pool:
        cores = options.cores * options.threads_per_core
        limit = options.max_workers or max(1, self.capacity.cores // cores)
        init = b""
        if options.init is not None:
            import cloudpickle

            init = cloudpickle.dumps(options.init)
        pool = Pool(key, options, limit, init)
        self.pools[key] = pool
        return pool

    def _schedule(self) -> None:
        # Idle workers take calls first: that needs nothing from the ledger.
        for pool in self.pools.values():
            if pool.queue and not pool.one_shot:
                self._dispatch_block(pool)
            elif pool.released and not pool.queue:
                for worker in list(pool.workers):
                    if worker.state is State.READY and not worker.inflight:
                        self._stop_worker(worker)
        # New workers start for waiting calls in submission order; once one does not fit, the
        # later ones wait too, so a large call is never starved by a stream of small ones.
        while (pool := self._oldest_waiting()) is not None:
            allocation = self._allocate(pool)
            if allocation is None:
                return
            assigned = pool.queue.popleft() if pool.one_shot else None
            if self._start_worker(pool, allocation, assigned) is None and not pool.one_shot:
                pool.limit = len(pool.workers)  # stop growing a pool whose workers fail to start

    def _dispatch_block(self, pool: Pool) -> None:
        queue = pool.queue
        while queue:
            call = queue[0]
            if call.future.done():
                queue.popleft()
                continue
            worker = self._pick_worker(pool, call)
            if worker is None:
                return
            queue.popleft()
            self._dispatch(worker, call)

    def _oldest_waiting(self) -> Pool | None:
        """The pool whose next call that needs a new worker was submitted first."""
        best: Pool | None = None
        best_id = 0
        for pool in self.pools.values():
            call = pool.next_waiting()
            if call is not None and (best is None or call.call_id < best_id):
                best, best_id = pool, call.call_id
        return best

    @staticmethod
    def _pick_worker(pool: Pool, call: Call) -> WorkerRecord | None:
        best: WorkerRecord | None = None
        for worker in pool.workers:
            if worker.state is not State.READY:
                continue
            load = len(worker.inflight)
            if load == 0:
                return worker
            if (call.options.timeout is None and worker.process.status_fd is not None
                    and load < PIPELINE_DEPTH and (best is None or load < len(best.inflight))):
                best = worker
        return best

    def _allocate(self, pool: Pool) -> Allocation | None:
        allocation = self.ledger.take(pool.cores, pool.gpus)
        if allocation is not None:
            return allocation
        # Idle block workers of other pools give way, so no pool waits forever on another.
        for worker in list(self.workers):
            if (worker.pool is not pool and worker.state is State.READY and not worker.inflight
                    and not worker.pool.one_shot and not worker.pool.queue):
                self._stop_worker(worker)
                allocation = self.ledger.take(pool.cores, pool.gpus)
                if allocation is not None:
                    return allocation
        return None

    def release_pool(self, key: Any) -> None:
        """Stop the pool's workers once they are idle and its queue is empty."""
        pool = self.pools.get(key)
        if pool is not None:
            pool.released = True

    # -- workers -----------------------------------------------------------------------------

    def _start_worker(self, pool: Pool, allocation: Allocation,
                      assigned: Call | None = None) -> WorkerRecord | None:
        """Launch a worker for ``pool`` on ``allocation`` (for the one-shot call ``assigned``)."""
        # The identity is unguessable, so no other local user can take it before the worker.
        worker_id = f"w{next(self._worker_ids)}-{secrets.token_hex(4)}"
        session_env = {ENV_ADDRESS: self.address, ENV_KEY: self.key.hex(), ENV_WORKER: worker_id,
                       ENV_CORES: str(pool.cores)}
        spec = WorkerSpec(worker_id, pool.options, session_env, allocation.gpu_ids)
        try:
            process = self.backend.launch(spec)
        except (OSError, ValueError, subprocess.SubprocessError, RemoteFnError) as error:
            self.ledger.give_back(allocation)
            failure = WorkerStartError(
                f"could not start a worker for {pool.describe()}: {type(error).__name__}: {error}")
            if assigned is not None:
                assigned.future._fail(failure)
                self._finish(assigned)
            else:
                self._fail_start(pool, None, failure)
            return None
        worker = WorkerRecord(worker_id, pool, process, self.key, allocation)
        worker.assigned = assigned
        self._later(self.start_timeout, self._check_started, worker)
        self.workers.add(worker)
        pool.workers.add(worker)
        pool.starting += 1
        self.channels[worker.identity] = (worker, False)
        self.channels[worker.heartbeat.identity] = (worker, True)
        if process.exit_fd is not None:
            self.exit_fds[process.exit_fd] = worker
            self.poller.register(process.exit_fd, zmq.POLLIN)
        if process.stderr_fd is not None:
            os.set_blocking(process.stderr_fd, False)
            self.stderr_fds[process.stderr_fd] = worker
            self.poller.register(process.stderr_fd, zmq.POLLIN)
        return worker

    def _check_started(self, worker: WorkerRecord) -> None:
        if worker in self.workers and worker.state is State.STARTING:
            logger.warning("%s did not connect within start_timeout=%g s; killing it",
                           worker.describe(), self.start_timeout)
            worker.process.signal(signal.SIGKILL)

    def _stop_worker(self, worker: WorkerRecord) -> None:
        """Tell a worker to exit (it is killed if it does not) and give its cores back."""
        if worker.state is State.STOPPING:
            return
        if worker.state is State.STARTING:
            worker.process.signal(signal.SIGTERM)
        else:
            self._send(worker, Kind.SHUTDOWN)
        self._stopping(worker)
        self._later(STOP_GRACE, self._kill_if_alive, worker)

    def _stopping(self, worker: WorkerRecord) -> None:
        if worker.state in (State.STARTING, State.INITIALIZING):
            worker.pool.starting -= 1
        worker.state = State.STOPPING
        if worker.allocation is not None:
            self.ledger.give_back(worker.allocation)
            worker.allocation = None

    def _kill_if_alive(self, worker: WorkerRecord) -> None:
        if worker in self.workers:
            worker.process.signal(signal.SIGKILL)

    def _send(self, worker: WorkerRecord, kind: Kind, body: list[Any] = [], call_id: int = 0,
              flags: int = 0, heartbeat: bool = False) -> None:
        channel = worker.heartbeat if heartbeat else worker.channel
        try:
            self.router.send_multipart([channel.identity, *channel.seal(kind, body, call_id, flags)],
                                       copy=False)
        except zmq.ZMQError as error:  # the peer is gone; its exit is handled separately
            logger.debug("could not send %s to %s: %s", kind.name, worker.worker_id, error)

    def _dispatch(self, worker: WorkerRecord, call: Call) -> None:
        future = call.future
        if not future.running() and not future.set_running_or_notify_cancel():
            return  # cancelled while queued; a retried call is already running
        function = call.function
        payload = b"" if function.digest in worker.known else function.payload
        worker.known.add(function.digest)
        info = call.future.info
        info.worker_id, info.host, info.pid = worker.worker_id, worker.host, worker.pid
        worker.inflight.append(call)
        flags = Flag.LAST if worker.pool.one_shot else Flag.NONE
        self._send(worker, Kind.TASK, [function.digest, payload, *call.arguments], call.call_id,
                   flags)
        if call.options.timeout is not None:
            self._later(call.options.timeout, self._on_timeout, worker, call)

    def _on_timeout(self, worker: WorkerRecord, call: Call) -> None:
        if call.future.done() or not worker.inflight or worker.inflight[0] is not call:
            return
        call.timed_out = True
        worker.inflight.popleft()
        call.future._fail(CallTimeout(
            f"{call.describe()} ran longer than timeout={call.options.timeout:g} s; "
            f"{worker.describe()} was stopped and will be replaced"))
        self._finish(call)
        worker.process.signal(signal.SIGKILL)
        self._stopping(worker)

    # -- messages ----------------------------------------------------------------------------

    def _receive_all(self) -> None:
        router = self.router
        while True:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            entry = self.channels.get(frames[0].bytes)
            if entry is None:
                self._reject("a peer that is not one of this session's workers")
                continue
            worker, is_heartbeat = entry
            channel = worker.heartbeat if is_heartbeat else worker.channel
            try:
                kind, flags, call_id, body = channel.open(frames[1:])
            except wire.AuthenticationError as error:
                self._reject(f"{worker.worker_id}: {error}")
                continue
            if is_heartbeat:
                if kind is Kind.PING:
                    self._send(worker, Kind.PONG, heartbeat=True)
                continue
            handler = self._HANDLERS.get(kind)
            if handler is None:
                self._reject(f"{worker.worker_id}: unexpected {kind.name}")
                continue
            handler(self, worker, flags, call_id, body)

    def _reject(self, why: str) -> None:
        self.rejected += 1
        logger.warning("remotefn session dropped a message from %s", why)

    def _on_hello(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        if worker.state is not State.STARTING:
            self._reject(f"{worker.worker_id}: second hello")
            return
        hello = json.loads(bytes(body[0]))
        worker.host, worker.pid = hello.get("host"), hello.get("pid")
        if hello.get("version") != __version__ or hello.get("protocol") != PROTOCOL_VERSION:
            reason = (f"the worker runs remotefn {hello.get('version')} (protocol "
                      f"{hello.get('protocol')}) but the session runs remotefn {__version__} "
                      f"(protocol {PROTOCOL_VERSION}); install the same version on both sides")
            self._send(worker, Kind.REJECT, [reason.encode()])
            self._stopping(worker)
            self._fail_start(worker.pool, worker, ProtocolError(reason))
            return
        worker.state = State.INITIALIZING
        self._send(worker, Kind.WELCOME, [worker.pool.init_payload])

    def _on_ready(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        if worker.state is not State.INITIALIZING:
            return
        worker.state = State.READY
        worker.pool.starting -= 1
        if worker.assigned is not None:
            call, worker.assigned = worker.assigned, None
            self._dispatch(worker, call)
            if not worker.inflight:  # cancelled while the worker started
                self._stop_worker(worker)

    def _on_init_failed(self, worker: WorkerRecord, flags: int, call_id: int,
                        body: list[Any]) -> None:
        text = bytes(body[0]).decode("utf-8", "replace")
        self._stopping(worker)
        self._fail_start(worker.pool, worker, WorkerStartError(
            f"init of {worker.pool.describe()} raised in {worker.describe()}", stderr=text))

    def _on_result(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        if not worker.inflight or worker.inflight[0].call_id != call_id:
            self._reject(f"{worker.worker_id}: result for call {call_id} it was not running")
            return
        call = worker.inflight.popleft()
        if worker.process.status_fd is not None:
            self._read_status(worker)
            worker.finished.discard(call_id)
        info = call.future.info
        info.started, info.finished = wire.TIMING.unpack(body[0])
        if worker.pool.one_shot:
            self._stopping(worker)
        if flags & Flag.UNPICKLABLE:
            text = bytes(body[1]).decode("utf-8", "replace")
            call.future._fail(SerializationError(f"{call.describe()}: {text}"))
        elif flags & Flag.ERROR:
            call.future._fail(self._remote_exception(call, body[1:]))
        else:
            try:
                value = wire.loads(body[1:])
            except BaseException as error:
                call.future._fail(SerializationError(
                    f"the result of {call.describe()} could not be unpickled here: "
                    f"{type(error).__name__}: {error}"))
            else:
                if call.on_success is not None:
                    call.on_success(value, info)
                call.future._succeed(value)
        self._finish(call)

    @staticmethod
    def _remote_exception(call: Call, frames: list[Any]) -> BaseException:
        try:
            error, text = wire.loads(frames)
        except BaseException as unpickling:
            return RemoteError(f"{call.describe()} raised an exception that could not be "
                               f"unpickled here: {unpickling}")
        if error is None:
            error = RemoteError(f"{call.describe()} raised an exception that could not be "
                                f"pickled:\n{text}")
        error.__cause__ = RemoteTraceback(text)
        return error

    @staticmethod
    def _read_status(worker: WorkerRecord) -> None:
        """Collect the ids the worker wrote to its status pipe (calls it has finished)."""
        fd = worker.process.status_fd
        while fd is not None:
            try:
                data = os.read(fd, 8 * 512)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            worker.finished.update(int.from_bytes(data[i:i + 8], "big")
                                   for i in range(0, len(data) - 7, 8))
            if len(data) < 8 * 512:
                return

    def _on_output(self, worker: WorkerRecord, flags: int, call_id: int, body: list[Any]) -> None:
        stream = bytes(body[0])[0]
        text = bytes(body[1]).decode("utf-8", "replace")
        for call in worker.inflight:
            if call.call_id == call_id:
                call.future._output.append((stream, text))
                break
        if self.forward_output:
            target = sys.stdout if stream == 1 else sys.stderr
            try:
                target.write(text)
                target.flush()
            except (OSError, ValueError):
                pass

    _HANDLERS = {Kind.HELLO: _on_hello, Kind.READY: _on_ready, Kind.INIT_FAILED: _on_init_failed,
                 Kind.RESULT: _on_result, Kind.OUTPUT: _on_output}

    # -- process events ----------------------------------------------------------------------

    def _read_stderr(self, worker: WorkerRecord) -> None:
        fd = worker.process.stderr_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.poller.unregister(fd)
            del self.stderr_fds[fd]
            return
        tail = worker.stderr_tail
        tail += data
        del tail[:-STDERR_TAIL]
        if self.forward_output:
            try:
                sys.stderr.write(data.decode("utf-8", "replace"))
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def _on_exit(self, worker: WorkerRecord) -> None:
        fd = worker.process.exit_fd
        self.poller.unregister(fd)
        del self.exit_fds[fd]
        worker.exit_code = worker.process.poll()  # None until a fork server reports it
        while worker.process.stderr_fd in self.stderr_fds:
            before = len(worker.stderr_tail)
            self._read_stderr(worker)
            if len(worker.stderr_tail) == before:
                break
        worker.stderr_tail += worker.process.final_stderr()
        del worker.stderr_tail[:-STDERR_TAIL]
        if worker.inflight or worker.assigned or worker.state in (State.STARTING,
                                                                  State.INITIALIZING):
            # Results sent just before the exit may not have been read yet.
            self._later(EXIT_GRACE, self._on_gone, worker)
        else:
            self._on_gone(worker)

    def _on_gone(self, worker: WorkerRecord) -> None:
        self._receive_all()
        if worker not in self.workers:
            return
        code = worker.exit_code if worker.exit_code is not None else worker.process.poll()
        was_starting = worker.state in (State.STARTING, State.INITIALIZING)
        self._stopping(worker)
        self._forget(worker)
        pool = worker.pool
        if was_starting:
            self._fail_start(pool, worker, WorkerStartError(
                f"{worker.describe()} for {pool.describe()} exited with {describe_exit(code)} "
                "before it was ready", stderr=worker.stderr_text()))
        if worker.assigned is not None:
            self._requeue_or_fail(pool, worker, worker.assigned, code, started=False)
            worker.assigned = None
        if worker.inflight:
            self._read_status(worker)
            # Calls the worker finished but whose results died with it run again, as do
            # those sent ahead that never started; the one it was running failed it.
            lost = [c for c in worker.inflight if c.call_id in worker.finished]
            pending = [c for c in worker.inflight if c.call_id not in worker.finished]
            if lost:
                logger.warning("%s died before the results of %d finished calls reached the "
                               "session; running them again", worker.describe(), len(lost))
            if pending:
                self._requeue_or_fail(pool, worker, pending.pop(0), code, started=True)
            for call in reversed(lost + pending):
                pool.queue.appendleft(call)
            worker.inflight.clear()

    def _requeue_or_fail(self, pool: Pool, worker: WorkerRecord, call: Call, code: int | None,
                         started: bool) -> None:
        if call.future.done():
            return
        if self.stopping:
            call.future._fail(RemoteFnError(
                f"the session was shut down while {call.describe()} ran"))
            self._finish(call)
        elif started and call.retries_left == 0:
            call.future._fail(WorkerDied(
                f"{worker.describe()} died with {describe_exit(code)} while running "
                f"{call.describe()}. This can be caused by a segmentation fault, os._exit, "
                f"a kill signal or the worker running out of memory.\n"
                f"{worker.stderr_text()}".rstrip()))
            self._finish(call)
        else:
            if started:
                call.retries_left -= 1
                logger.warning("%s died with %s; running %s again (%d retries left)",
                               worker.describe(), describe_exit(code), call.describe(),
                               call.retries_left)
            pool.queue.appendleft(call)

    def _fail_start(self, pool: Pool, worker: WorkerRecord | None, error: BaseException) -> None:
        """A worker could not start: fail the calls that were waiting for it."""
        if worker is not None and worker.assigned is not None:
            call, worker.assigned = worker.assigned, None
            call.future._fail(error)
            self._finish(call)
        others_alive = any(w is not worker and w.state is not State.STOPPING for w in pool.workers)
        if not pool.one_shot and not others_alive:
            while pool.queue:
                call = pool.queue.popleft()
                call.future._fail(error)
                self._finish(call)

    def _forget(self, worker: WorkerRecord) -> None:
        self.workers.discard(worker)
        worker.pool.workers.discard(worker)
        self.channels.pop(worker.identity, None)
        self.channels.pop(worker.heartbeat.identity, None)
        for fds in (self.exit_fds, self.stderr_fds):
            for fd in [fd for fd, w in fds.items() if w is worker]:
                self.poller.unregister(fd)
                del fds[fd]
        worker.process.close()

    @staticmethod
    def _finish(call: Call) -> None:
        call.arguments = []
        call.on_success = None

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
        os.close(self.wake_fd)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.stopped.set()
