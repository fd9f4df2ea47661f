"""Worker lifecycle: launching workers, watching them exit, and what their exit means for
the calls they held.

Part of the hub (see :mod:`remotefn.hub`); runs in the hub thread only.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
from typing import Any, Callable

import zmq

from .backends import Backend, WorkerSpec
from .backends.base import describe_exit
from .calls import Call, Pool, State, WorkerRecord
from .errors import RemoteFnError, WorkerDied, WorkerStartError
from .ledger import Allocation, Ledger
from .stream import FrameStream
from .wire import ENV_ADDRESS, ENV_CORES, ENV_KEY, ENV_WORKER, Kind

logger = logging.getLogger("remotefn.hub")

#: After a worker exits, results it sent may still be in flight; wait this long for them.
EXIT_GRACE = 0.2
#: Workers told to shut down are killed if still alive after this many seconds.
STOP_GRACE = 3.0
STDERR_TAIL = 16384


class WorkerLifecycle:
    """Starting, stopping and burying workers."""

    backend: Backend
    address: str
    key: bytes
    start_timeout: float
    poller: zmq.Poller
    workers: set[WorkerRecord]
    channels: dict[bytes, tuple[WorkerRecord, bool]]
    exit_fds: dict[int, WorkerRecord]
    stderr_fds: dict[int, WorkerRecord]
    stream_fds: dict[int, WorkerRecord]
    ledger: Ledger
    forward_output: bool
    stopping: bool
    _worker_ids: Any
    _later: Callable[..., None]
    _send: Callable[..., None]
    _receive_all: Callable[[], None]
    _read_stream: Callable[[WorkerRecord], None]
    _drop_stream: Callable[[WorkerRecord], None]
    _finish: Callable[[Call], None]

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
        if process.connection is not None:
            worker.stream = FrameStream(process.connection)
            self.stream_fds[process.connection.fileno()] = worker
            self.poller.register(process.connection.fileno(), zmq.POLLIN)
        else:
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
        if worker.stream is not None and worker.stream.fileno() in self.stream_fds:
            self._read_stream(worker)  # everything the worker sent before it exited
        if worker not in self.workers:
            return
        code = worker.exit_code if worker.exit_code is not None else worker.process.poll()
        was_starting = worker.state in (State.STARTING, State.INITIALIZING)
        self._read_status(worker)  # before _forget closes the pipe
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
        self._drop_stream(worker)
        for fds in (self.exit_fds, self.stderr_fds):
            for fd in [fd for fd, w in fds.items() if w is worker]:
                self.poller.unregister(fd)
                del fds[fd]
        worker.process.close()

    @staticmethod
    def _finish(call: Call) -> None:
        call.arguments = []
        call.on_success = None
