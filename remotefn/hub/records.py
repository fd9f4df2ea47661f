"""The records the hub keeps: calls, pools of workers that share options, and workers.

Plain state with the few operations that touch nothing else; only the hub thread changes
them (and a submitting thread holding the hub's lock, see :mod:`.hub`).
"""

from __future__ import annotations

import enum
import os
from collections import deque
from typing import Any, Callable, Sequence


from ..backends import LaunchedWorker
from ..future import RemoteFuture
from ..options import CallOptions
from ..protocol.framing import Channel
from ..protocol.pickling import release
from ..protocol.shipping import FunctionRef
from ..protocol.socketpair import FrameStream
from .ledger import Demand, Share


class Call:
    """One submitted call, from the queue until its future is set."""

    __slots__ = ("call_id", "future", "function", "arguments", "options", "retries_left",
                 "timed_out", "on_success", "started", "relaunched")

    def __init__(self, call_id: int, future: RemoteFuture, function: FunctionRef,
                 arguments: Sequence[Any], options: CallOptions) -> None:
        self.call_id = call_id
        self.future = future
        self.function = function
        self.arguments = arguments
        self.options = options
        self.retries_left = options.retries
        self.timed_out = False
        #: Its future is marked running (it stays so when the call is retried).
        self.started = False
        #: Called with the value and the CallInfo before the future resolves (the cache).
        self.on_success: Callable[[Any, Any], None] | None = None
        #: A one-shot worker started for it exited before it connected, and another was
        #: started (once per call: see ``Workers._on_gone``).
        self.relaunched = False

    def describe(self) -> str:
        return f"{self.function.name} (call {self.call_id})"

    def finish(self) -> None:
        """Drop what the call no longer needs once its future is set."""
        self.drop_arguments()
        self.on_success = None
        if self.future._direct is not None:
            self.future._direct = None  # it holds the hub

    def drop_arguments(self) -> None:
        """Drop the pickled arguments; their segments go back to the session's pool."""
        release(self.arguments)
        self.arguments = ()


class State(enum.Enum):
    STARTING = "starting"  # launched, no hello yet
    INITIALIZING = "initializing"  # hello received, init running
    READY = "ready"
    STOPPING = "stopping"  # told to exit, killed, or exiting after its last call


class Pool:
    """Workers that share one set of options. One-shot pools start a worker per call."""

    def __init__(self, key: Any, options: CallOptions, limit: int, init_payload: bytes) -> None:
        self.key = key
        self.options = options
        self.one_shot = not options.block
        self.limit = limit
        self.init_payload = init_payload
        self.cpus = options.cpus
        self.demand = Demand.of(options)
        self.queue: deque[Call] = deque()
        self.workers: set[WorkerRecord] = set()
        self.starting = 0
        #: Workers of this pool that failed to start (launch, handshake or init) in a row.
        self.failed_starts = 0
        #: session.release() asked for this pool's workers to stop once idle.
        self.released = False
        #: Recent calls' mean run time in seconds (a moving average); None before the first.
        self.runtime: float | None = None
        #: :meth:`describe`, made once (each call's info carries it).
        self.label = self.describe()

    def record_runtime(self, seconds: float) -> None:
        self.runtime = seconds if self.runtime is None else 0.8 * self.runtime + 0.2 * seconds

    def next_waiting(self) -> Call | None:
        """The first queued call that needs a new worker started, if any."""
        queue = self.queue
        if self.one_shot:
            while queue and queue[0].future.done():
                queue.popleft()
            return queue[0] if queue else None
        if len(self.workers) >= self.limit or self.starting >= len(queue):
            return None
        return queue[self.starting]

    def describe(self) -> str:
        """The pool's kind and shape, and every other option that sets it apart."""
        options = self.options
        kind = "block pool" if not self.one_shot else "one-shot workers"
        parts = [f"{options.cores} ranks x {options.threads_per_core} threads per rank"]
        if options.gpus:
            parts.append(f"{options.gpus} GPUs per rank")
        if options.max_workers is not None:
            parts.append(f"max_workers={options.max_workers}")
        if options.init is not None:
            parts.append(f"init={getattr(options.init, '__qualname__', options.init)!s}")
        if options.env:
            parts.append("env=" + ",".join(name for name, _ in options.env))
        if options.cwd is not None:
            parts.append(f"cwd={options.cwd}")
        if options.timeout is not None:
            parts.append(f"timeout={options.timeout:g}s")
        if options.nested:
            parts.append("nested")
        if options.extras:
            parts.append(f"extras={dict(options.extras)}")
        return f"{kind} ({', '.join(parts)})"


class WorkerRecord:
    """The session's view of one worker process."""

    __slots__ = ("worker_id", "identity", "pool", "process", "channel", "state",
                 "inflight", "known", "stderr_tail", "host", "pid", "assigned", "share",
                 "exit_code", "finished", "results", "stream", "read_directly",
                 "start_expired", "exited", "placement")

    def __init__(self, worker_id: str, pool: Pool, process: LaunchedWorker, key: bytes,
                 share: Share) -> None:
        self.worker_id = worker_id
        self.identity = worker_id.encode()
        self.pool = pool
        self.process = process
        self.channel = Channel(key, self.identity, session_side=True)
        self.state = State.STARTING
        self.inflight: deque[Call] = deque()
        self.known: set[bytes] = set()
        self.stderr_tail = bytearray()
        self.host: str | None = None
        self.pid: int | None = process.pid
        #: The call a one-shot worker was started for.
        self.assigned: Call | None = None
        #: CPUs and GPUs this worker holds in the ledger; None once given back.
        self.share: Share | None = share
        self.exit_code: int | None = None
        #: Ids of calls the worker reported finished (status pipe) whose results are not in;
        #: read when the worker exits, and every few hundred results.
        self.finished: set[int] = set()
        self.results = 0
        #: The socket pair to a worker that talks over one instead of ZeroMQ.
        self.stream: FrameStream | None = None
        #: ``read_directly(future, timeout)``: a thread waiting for this worker's one call
        #: reads the answer itself (see ``hub.direct``); made once, with the stream.
        self.read_directly: Callable[[RemoteFuture, float | None], float | None] | None = None
        #: Killed for not connecting within start_timeout (no second try then).
        self.start_expired = False
        #: Its process has exited; its exit is being handled (see ``Workers._on_exit``).
        self.exited = False
        #: What a call's info says of where it ran (see :meth:`place`).
        self.placement: tuple[Any, ...] = (worker_id, None, self.pid, None, 0, ())

    def place(self, host: str | None, pid: int | None,
              gpus: tuple[tuple[str, ...] | None, ...]) -> None:
        """Record where the worker runs, as its HELLO says: the calls it takes carry it in
        their info (worker, host, pid, pool, ranks, GPUs per rank)."""
        self.host, self.pid = host, pid
        self.placement = (self.worker_id, host, pid, self.pool.label, self.pool.options.cores,
                          gpus)

    def read_status(self) -> None:
        """Collect the ids the worker wrote to its status pipe (calls it has finished)."""
        fd = self.process.status_fd
        while fd is not None:
            try:
                data = os.read(fd, 8 * 512)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.finished.update(int.from_bytes(data[i:i + 8], "big")
                                 for i in range(0, len(data) - 7, 8))
            if len(data) < 8 * 512:
                return

    def stderr_text(self) -> str:
        return self.stderr_tail.decode("utf-8", "replace")

    def describe(self) -> str:
        where = f" on {self.host}" if self.host else ""
        return f"worker {self.worker_id} (pid {self.pid}{where})"
