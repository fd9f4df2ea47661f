"""The status of a live session, for ``python -m remotefn status``.

Each session listens on a Unix socket, ``status``, in its private (0700) run directory. A
connection from a process of the same user (checked with ``SO_PEERCRED``) gets one JSON
snapshot (allocation, pools, workers, running and queued calls) and is closed; anyone else
is closed without a word. The hub thread writes the snapshot, so it is consistent; a client
never opens a session of its own.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import struct
import tempfile
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # imported by the status command, which must not need zmq
    from .events import EventLoop

SOCKET_NAME = "status"
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
