"""MPI workers: rank 0 talks to the session; every rank runs ``init`` and each call.

Rank 0 broadcasts what the session sent, runs it itself, gathers every rank's outcome and
answers with the list of results in rank order, or with the first rank's exception, naming
that rank. If any rank dies, the MPI launcher ends the others and the session sees the worker
exit.
"""

from __future__ import annotations

from typing import Any

from ..protocol import messages, pickling
from ..protocol.messages import Flag, Outcome
from .loop import Worker
from .runner import Runner

_INIT, _CALL, _STOP = "init", "call", "stop"


def world() -> Any:
    """``MPI.COMM_WORLD``; importing mpi4py initialises MPI."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _portable(outcome: Outcome) -> tuple[int, list[bytes]]:
    flags, frames = outcome
    return flags, [bytes(memoryview(frame)) for frame in frames]


class MpiWorker(Worker):
    """Rank 0 of an MPI worker."""

    def __init__(self, address: str, server_key: bytes, key: bytes, identity: bytes,
                 comm: Any) -> None:
        super().__init__(address, server_key, key, identity)
        self.comm = comm
        self.size = comm.Get_size()

    def initialize(self, payload: Any) -> str | None:
        self.comm.bcast((_INIT, bytes(payload)), root=0)
        errors = self.comm.gather(super().initialize(payload), root=0)
        for rank, error in enumerate(errors):
            if error is not None:
                return f"on MPI rank {rank} of {self.size}:\n{error}"
        return None

    def run(self, call_id: int, body: list[Any]) -> Outcome:
        body = [bytes(memoryview(frame)) for frame in body]
        self.comm.bcast((_CALL, body), root=0)
        outcome = _portable(super().run(call_id, body))
        gathered = self.comm.gather((outcome, self.runner.cpu), root=0)
        self.rank_cpu_times = tuple(seconds for _, seconds in gathered)
        return combine([outcome for outcome, _ in gathered])

    def close(self) -> None:
        self.comm.bcast((_STOP, None), root=0)
        super().close()


def combine(outcomes: list[tuple[int, list[bytes]]]) -> Outcome:
    """One outcome from every rank's: the values in rank order, or the first failure."""
    size = len(outcomes)
    for rank, (flags, frames) in enumerate(outcomes):
        where = f"MPI rank {rank} of {size}"
        if flags & Flag.UNPICKLABLE:
            return messages.unpicklable(f"on {where}: {messages.read_text(frames)}")
        if flags & Flag.ERROR:
            error, text = messages.read_failure(frames)
            if error is not None and hasattr(error, "add_note"):
                error.add_note(f"raised on {where}")
            return messages.failure(error, f"on {where}:\n{text}")
    return messages.success([pickling.loads(frames) for _, frames in outcomes])


def follow(comm: Any) -> None:
    """The loop of ranks other than 0: do what rank 0 broadcasts until it says stop."""
    runner = Runner()
    while True:
        kind, data = comm.bcast(None, root=0)
        if kind == _INIT:
            comm.gather(runner.initialize(data), root=0)
        elif kind == _CALL:
            outcome = _portable(runner.call(data))
            comm.gather((outcome, runner.cpu), root=0)
        else:
            return
