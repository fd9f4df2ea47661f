"""The status of a live session, for ``python -m remotefn status``, and the sessions' run
directories.

Each session listens on a Unix socket, ``status``, in its private (0700) run directory. A
connection from a process of the same user (checked with ``SO_PEERCRED``) gets one JSON
snapshot (allocation, pools, workers, running and queued calls) and is closed; anyone else
is closed without a word. The hub thread writes the snapshot, so it is consistent; a client
never opens a session of its own. A session that was killed cannot remove its run
directory; the next session of the same user to shut down on this host does
(:func:`remove_stale_run_dirs`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import stat
import struct
import tempfile
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # imported by the status command, which must not need zmq
    from .events import EventLoop

SOCKET_NAME = "status"
#: The file in a run directory that names the session's process: its host, boot, PID
#: namespace, pid and start time (a temporary directory may be shared between hosts).
OWNER_NAME = "owner"
_CREDENTIALS = struct.Struct("3i")


class StatusServer:
    """Answers status requests in the hub thread with ``snapshot()``."""

    def __init__(self, loop: "EventLoop", runtime_dir: str,
                 snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.loop = loop
        self.path = os.path.join(runtime_dir, SOCKET_NAME)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.bind(self.path)
        os.chmod(self.path, 0o600)
        self.socket.listen(8)
        self.socket.setblocking(False)
        loop.watch(self.socket.fileno(), self._on_request)

    def _on_request(self, events: int) -> None:
        try:
            connection, _ = self.socket.accept()
        except (BlockingIOError, OSError):
            return
        with connection:
            _, uid, _ = _CREDENTIALS.unpack(connection.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
            if uid != os.getuid():
                return  # another user's process: nothing
            connection.settimeout(2.0)
            try:
                connection.sendall(json.dumps(self.snapshot(), default=str).encode())
            except OSError:
                pass

    def close(self) -> None:
        self.loop.unwatch(self.socket.fileno())
        self.socket.close()


def claim(run_dir: str) -> None:
    """Write the owner file of ``run_dir``: this process, as :func:`remove_stale_run_dirs`
    recognises it."""
    descriptor = os.open(os.path.join(run_dir, OWNER_NAME), os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{_here()} {os.getpid()} {_started(os.getpid())}")


def remove_stale_run_dirs(directory: str | None = None) -> int:
    """Remove this user's run directories of sessions that are gone (killed): those whose
    owner file names a process of this host, boot and PID namespace that has exited. Any
    other directory is left alone (also a session's of another host that shares the
    temporary directory). Returns how many went."""
    removed = 0
    for path in glob.glob(os.path.join(directory or tempfile.gettempdir(), "remotefn-*")):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
            continue
        if _gone(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _gone(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, OWNER_NAME)) as file:
            here, pid, started = file.read().rsplit(" ", 2)
        return here == _here() and _started(int(pid)) != started
    except (OSError, ValueError):
        return False


def _here() -> str:
    """This host, its boot and this process's PID namespace, with no spaces."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot = namespace = "?"
    return "|".join((socket.gethostname(), boot, namespace)).replace(" ", "_")


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot), or "" when there is none:
    with the pid, it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def live_sessions(directory: str | None = None) -> list[str]:
    """The status sockets of this user's live sessions on this host."""
    found = []
    for path in sorted(glob.glob(os.path.join(directory or tempfile.gettempdir(),
                                              "remotefn-*", SOCKET_NAME))):
        try:
            if os.stat(path).st_uid == os.getuid():
                found.append(path)
        except OSError:
            continue
    return found


def query(path: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The snapshot of the session listening at ``path``; None when it does not answer."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    chunks = []
    try:
        client.connect(path)
        while data := client.recv(1 << 16):
            chunks.append(data)
    except OSError:
        return None
    finally:
        client.close()
    if not chunks:
        return None
    return json.loads(b"".join(chunks))
