"""How a session tells a worker where it is and who it is: environment variables.

The worker removes every one of them at start, so that the session's secret never reaches
user code or the processes it starts; all but MARK, which every process a call starts
inherits, so that the worker and the session can end those that left the worker's process
tree and group (see :func:`end_marked`).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Collection, Mapping

ADDRESS = "REMOTEFN_ADDRESS"  # the session's ZeroMQ endpoint
KEY = "REMOTEFN_KEY"  # the session's secret, hex
SERVER_KEY = "REMOTEFN_SERVER_KEY"  # the CURVE public key of the session's sockets (Z85)
WORKER = "REMOTEFN_WORKER"  # the worker's identity
CPUS = "REMOTEFN_CPUS"  # CPUs of the worker (ranks x threads per rank): its nested sessions' share
RANKS = "REMOTEFN_RANKS"  # MPI ranks the launcher starts
GPUS = "REMOTEFN_GPUS"  # GPU ids per rank: "0,1;2,3"
PMI = "REMOTEFN_PMI"  # the PMI mode the launcher was asked for, for error messages
STATUS_FD = "REMOTEFN_STATUS_FD"  # where a worker writes the ids of finished calls
CONNECTION_FD = "REMOTEFN_CONNECTION_FD"  # a socket pair to the session, instead of ZeroMQ
MEASURE_MEMORY = "REMOTEFN_MEASURE_MEMORY"  # "1": measure each call's peak memory
NESTED = "REMOTEFN_NESTED"  # "flux": the worker runs in its own Flux instance
MARK = "REMOTEFN_MARK"  # "<session>/<worker>", left in the environment for what calls start


# -- the fork server's messages (remotefn.worker.forkserver and backends.forking) ---------------
# Over a private socket pair: the session asks for a worker (its environment and working
# directory, with the worker's descriptors passed beside); the server answers with the pid
# of each worker it forked, and the exit code (negative: the signal) of each that ended.


def fork_request(environment: Mapping[str, str], cwd: str | None) -> bytes:
    return json.dumps({"env": dict(environment), "cwd": cwd}).encode()


def read_fork_request(data: bytes) -> tuple[dict[str, str], str | None]:
    request = json.loads(data)
    return request["env"], request.get("cwd")


def forked(pid: int) -> bytes:
    return f"pid {pid}".encode()


def exited(pid: int, code: int) -> bytes:
    return f"exit {pid} {code}".encode()


def read_fork_answer(data: bytes) -> tuple[str, int, int]:
    """``("pid", pid, 0)`` or ``("exit", pid, code)``."""
    kind, pid, *code = data.decode().split()
    return kind, int(pid), int(code[0]) if code else 0


def session_of(mark: str) -> str:
    """The session part of a worker's mark: what every mark of that session starts with."""
    return mark.rsplit("/", 1)[0] + "/"


def end_marked(marks: Collection[str] = (), session: str | None = None) -> None:
    """SIGKILL every process of this user on this host whose environment carries one of
    ``marks`` as MARK, or any mark of ``session`` (see :func:`session_of`): what calls
    started, also after it left the worker's process group and parent (``setsid``, a
    daemon's double fork), unless it cleared its environment."""
    wanted = {mark.encode() for mark in marks}
    prefix = session.encode() if session else None
    if not wanted and prefix is None:
        return
    key = f"\0{MARK}=".encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                environment = b"\0" + file.read()
        except OSError:  # gone, or another user's
            continue
        start = environment.find(key)
        if start < 0:
            continue
        start += len(key)
        mark = environment[start:environment.find(b"\0", start)]
        if mark in wanted or (prefix is not None and mark.startswith(prefix)):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
