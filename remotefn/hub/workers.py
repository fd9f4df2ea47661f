"""Workers: starting them, the handshake, stopping them and watching them exit (what an
exit means for the calls they held: :mod:`.fates`).

Runs in the hub thread. A worker's life: STARTING (launched) -> INITIALIZING (HELLO received,
WELCOME sent) -> READY (READY received) -> STOPPING (told to stop, killed or exited) -> gone
(its exit handled: its CPUs and GPUs are back in the ledger, its calls run again or fail).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from typing import Any

from .._version import __version__
from ..backends import Backend, WorkerSpec
from ..errors import CallTimeout, ProtocolError, RemoteFnError, WorkerStartError
from ..protocol import launch, messages
from ..protocol.messages import PROTOCOL_VERSION, Kind
from . import fates
from .events import EventLoop
from .ledger import Ledger, Share
from .links import Links
from .recorder import Recorder
from .records import Call, Pool, State, WorkerRecord

logger = logging.getLogger("remotefn.hub")

#: After a worker exits, results it sent may still be in flight; wait this long for them.
EXIT_GRACE = 0.2
#: Workers told to shut down are killed if still alive after this many seconds.
STOP_GRACE = 3.0
STDERR_TAIL = 16384


class Workers:
    """Every worker of one session, from launch until its exit has been handled."""

    def __init__(self, backend: Backend, links: Links, loop: EventLoop, ledger: Ledger,
                 key: bytes, start_timeout: float, forward_output: bool, recorder: Recorder,
                 measure_memory: bool = False) -> None:
        self.backend = backend
        self.links = links
        self.loop = loop
        self.ledger = ledger
        self.key = key
        self.start_timeout = start_timeout
        self.forward_output = forward_output
        self.recorder = recorder
        self.measure_memory = measure_memory
        self.all: set[WorkerRecord] = set()
        self._ids = itertools.count()
        #: What every worker's mark starts with (see ``launch.end_marked``).
        self.marks = backend.session_mark
        #: The session is stopping: calls of workers that die fail instead of running again.
        self.stopping = False

    # -- starting ----------------------------------------------------------------------------

    def start(self, pool: Pool, share: Share, assigned: Call | None = None) -> WorkerRecord | None:
        """Launch a worker for ``pool`` on ``share`` (for the one-shot call ``assigned``);
        None when the launch failed (the calls waiting for it have failed)."""
        # The identity is unguessable, so no other local user can take it before the worker.
        worker_id = f"w{next(self._ids)}-{secrets.token_hex(4)}"
        session_env = {launch.ADDRESS: self.links.address, launch.KEY: self.key.hex(),
                       launch.WORKER: worker_id, launch.CPUS: str(pool.cpus),
                       launch.SERVER_KEY: self.links.server_public.decode(),
                       launch.MARK: self.marks + worker_id}
        if self.measure_memory:
            session_env[launch.MEASURE_MEMORY] = "1"
        spec = WorkerSpec(worker_id, pool.options, session_env, share.gpu_ids,
                          self.ledger.node_names(share))
        try:
            process = self.backend.launch(spec)
        except (OSError, ValueError, subprocess.SubprocessError, RemoteFnError) as error:
            self.ledger.give_back(share)
            failure = WorkerStartError(
                f"could not start a worker for {pool.describe()}: {type(error).__name__}: {error}")
            if assigned is not None:
                assigned.future._fail(failure)
                assigned.finish()
            else:
                fates.fail_start(pool, None, failure)
            return None
        worker = WorkerRecord(worker_id, pool, process, self.key, share)
        worker.assigned = assigned
        if logger.isEnabledFor(logging.INFO):
            where = " ".join(f"{k}={v}" for k, v in process.describe().items())
            logger.info("started %s for %s (%s): %s", worker_id, pool.describe(), where,
                        " ".join(self.backend.command(spec)))
        self.recorder.emit("worker started", 0, worker_id, pool.describe())
        self.loop.later(self.start_timeout, self._check_started, worker)
        self.all.add(worker)
        pool.workers.add(worker)
        pool.starting += 1
        if not pool.one_shot:
            self.recorder.emit("pool grown", 0, worker_id, f"{pool.describe()}: "
                               f"{len(pool.workers)} workers")
        self.links.attach(worker)
        if process.exit_fd is not None:
            self.loop.watch(process.exit_fd, lambda events: self._on_exit(worker))
        if process.stderr_fd is not None:
            os.set_blocking(process.stderr_fd, False)
            self.loop.watch(process.stderr_fd, lambda events: self._read_stderr(worker))
        return worker

    def _check_started(self, worker: WorkerRecord) -> None:
        if worker not in self.all or worker.state is not State.STARTING:
            return
        held = worker.process.held()
        if held is not None:  # start_timeout counts from when the scheduler lets it start
            logger.info("%s is pending: %s", worker.describe(), held)
            self.loop.later(self.start_timeout, self._check_started, worker)
        else:
            logger.warning("%s did not connect within start_timeout=%g s; killing it",
                           worker.describe(), self.start_timeout)
            worker.start_expired = True
            worker.process.signal(signal.SIGKILL)

    # -- the handshake -----------------------------------------------------------------------

    def on_hello(self, worker: WorkerRecord, body: list[Any]) -> None:
        """HELLO: check the worker's versions, then send it the pool's ``init``."""
        if worker.state is not State.STARTING:
            self.links.reject(f"{worker.worker_id}: second hello")
            return
        hello = messages.read_hello(body)
        worker.place(hello.host, hello.pid, hello.gpus)
        if hello.version != __version__ or hello.protocol != PROTOCOL_VERSION:
            reason = (f"the worker runs remotefn {hello.version} (protocol {hello.protocol}) "
                      f"but the session runs remotefn {__version__} (protocol "
                      f"{PROTOCOL_VERSION}); install the same version on both sides")
            self.links.send(worker, Kind.REJECT, messages.text(reason))
            self.retire(worker)
            fates.fail_start(worker.pool, worker, ProtocolError(reason))
            return
        worker.state = State.INITIALIZING
        self.links.send(worker, Kind.WELCOME, messages.welcome(worker.pool.init_payload))

    def on_protocol_mismatch(self, worker: WorkerRecord, version: int) -> None:
        """An authentic message of another protocol from a starting worker: it runs another
        remotefn than the session (its HELLO, which says which, cannot be read). Its start
        fails now rather than after start_timeout."""
        if worker.state is not State.STARTING:
            return
        reason = (f"the worker speaks remotefn protocol {version} but the session protocol "
                  f"{PROTOCOL_VERSION}: it imports another remotefn than the session (see "
                  "which one the backend's python= and PYTHONPATH give it); install the same "
                  "version on both sides")
        worker.process.signal(signal.SIGKILL)
        self.retire(worker)
        fates.fail_start(worker.pool, worker, ProtocolError(reason))

    def on_ready(self, worker: WorkerRecord) -> Call | None:
        """READY: the worker takes calls now; returns the one-shot call it was started for."""
        if worker.state is not State.INITIALIZING:
            return None
        worker.state = State.READY
        worker.pool.starting -= 1
        worker.pool.failed_starts = 0
        logger.info("%s is ready on %s (pid %s)", worker.worker_id, worker.host, worker.pid)
        self.recorder.emit("worker ready", 0, worker.worker_id, worker.host or "")
        call, worker.assigned = worker.assigned, None
        return call

    def on_init_failed(self, worker: WorkerRecord, body: list[Any]) -> None:
        self.retire(worker)
        fates.fail_start(worker.pool, worker, WorkerStartError(
            f"init of {worker.pool.describe()} raised in {worker.describe()}",
            stderr=messages.read_text(body)))

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, worker: WorkerRecord) -> None:
        """Tell a worker to exit (it is killed if it does not) and give its share back."""
        if worker.state is State.STOPPING:
            return
        if worker.state is State.STARTING:
            worker.process.signal(signal.SIGTERM)
        else:
            self.links.send(worker, Kind.SHUTDOWN)
        logger.info("stopping %s", worker.worker_id)
        self.recorder.emit("worker stopped", 0, worker.worker_id)
        self.retire(worker)
        self.loop.later(STOP_GRACE, self._kill_if_alive, worker)

    def kill(self, worker: WorkerRecord, marked: bool = True) -> None:
        """SIGKILL a worker, and (with ``marked``) what its calls started, and give its
        share back."""
        worker.process.signal(signal.SIGKILL)
        if marked and self.backend.runs_calls_here:
            # Off this thread: reading a process's environment waits for its memory map,
            # which a process stuck in the kernel (a hung file system) holds.
            threading.Thread(target=launch.end_marked, args=([self.marks + worker.worker_id],),
                             name="remotefn-end-marked", daemon=True).start()
        if worker.state is not State.STOPPING:  # recorded once, however it is stopped
            self.recorder.emit("worker stopped", 0, worker.worker_id, "killed")
        self.retire(worker)

    def kill_all(self) -> None:
        """SIGKILL every worker, and what calls started; safe from any thread."""
        for worker in list(self.all):
            worker.process.signal(signal.SIGKILL)
        self.end_marked()

    def end_marked(self) -> None:
        """SIGKILL what the session's calls started, where it can see them (see
        ``Backend.runs_calls_here``): what is left once the session ends."""
        if self.backend.runs_calls_here and self.marks:
            launch.end_marked(session=self.marks)

    def retire(self, worker: WorkerRecord) -> None:
        """Mark a worker as stopping and give its CPUs and GPUs back to the ledger."""
        if worker.state in (State.STARTING, State.INITIALIZING):
            worker.pool.starting -= 1
        worker.state = State.STOPPING
        if worker.share is not None:
            self.ledger.give_back(worker.share)
            worker.share = None

    def time_out(self, worker: WorkerRecord, call: Call) -> None:
        """``call`` ran past its timeout: fail it, then kill its worker (which is replaced)."""
        if call.future.done() or not worker.inflight or worker.inflight[0] is not call:
            return
        call.timed_out = True
        worker.inflight.popleft()
        call.future._fail(CallTimeout(
            f"{call.describe()} ran longer than timeout={call.options.timeout:g} s; "
            f"{worker.describe()} was stopped and will be replaced"))
        call.finish()
        self.kill(worker)

    def _kill_if_alive(self, worker: WorkerRecord) -> None:
        if worker in self.all:
            worker.process.signal(signal.SIGKILL)

    # -- exits -------------------------------------------------------------------------------

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
            self.loop.unwatch(fd)
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
        self.loop.unwatch(worker.process.exit_fd)
        worker.exited = True  # no call is handed to it while its last results are read
        worker.exit_code = worker.process.poll()  # None until a fork server reports it
        stderr_fd = worker.process.stderr_fd
        while stderr_fd in self.loop.handlers:
            before = len(worker.stderr_tail)
            self._read_stderr(worker)
            if len(worker.stderr_tail) == before:
                break
        worker.stderr_tail += worker.process.final_stderr()
        del worker.stderr_tail[:-STDERR_TAIL]
        if worker.inflight or worker.assigned or worker.state in (State.STARTING,
                                                                  State.INITIALIZING):
            # Results sent just before the exit may not have been read yet.
            self.loop.later(EXIT_GRACE, self._on_gone, worker)
        else:
            self._on_gone(worker)

    def _on_gone(self, worker: WorkerRecord) -> None:
        self.links.drain(worker)  # everything the worker sent before it exited
        if worker not in self.all:
            return
        code = worker.exit_code if worker.exit_code is not None else worker.process.poll()
        was_starting = worker.state in (State.STARTING, State.INITIALIZING)
        never_connected = worker.state is State.STARTING and not worker.start_expired
        if worker.state is not State.STOPPING or worker.inflight or worker.assigned:
            logger.info("%s exited with %s", worker.describe(), worker.process.describe_exit(code))
            self.recorder.emit("worker died", 0, worker.worker_id,
                               worker.process.describe_exit(code))
        worker.read_status()  # before _forget closes the pipe
        self.retire(worker)
        for node in self.backend.failed_nodes(worker.stderr_text()):
            if self.ledger.lose(node):
                logger.warning("node %s failed; no worker is placed there any more", node)
        self._forget(worker)
        fates.settle(worker, code, was_starting, never_connected, self.stopping,
                     self.backend.failed_nodes)

    def _forget(self, worker: WorkerRecord) -> None:
        self.all.discard(worker)
        worker.pool.workers.discard(worker)
        if not worker.pool.one_shot:
            self.recorder.emit("pool shrunk", 0, worker.worker_id,
                               f"{worker.pool.describe()}: {len(worker.pool.workers)} workers")
        self.links.detach(worker)
        for fd in (worker.process.exit_fd, worker.process.stderr_fd):
            if fd is not None:
                self.loop.unwatch(fd)
        worker.process.close()

    def close(self) -> None:
        """Kill every worker still alive and wait for it (the session is closing)."""
        for worker in list(self.all):
            worker.process.signal(signal.SIGKILL)
            worker.process.wait(5)
            worker.process.close()
        self.all.clear()

