"""The session's side of the fork server (see :mod:`remotefn.worker.forkserver`)."""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import subprocess
import sys
import threading

from ..protocol import launch
from .base import LaunchedWorker

logger = logging.getLogger(__name__)

#: Variables that act when an interpreter starts; a worker that sets them is exec'ed instead.
STARTUP_VARIABLES = ("PYTHON", "LD_")


class ForkServer:
    """Starts ``python -m remotefn.worker.forkserver`` and asks it for workers.

    A reader thread takes the server's answers: the pid of each worker it forks, and the
    exit code of each worker that ends (the server is their parent, so only it can reap them).
    """

    def __init__(self, python: str, environment: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel = ours
        self.process = subprocess.Popen(
            [python, "-m", "remotefn.worker.forkserver", str(theirs.fileno())], env=environment,
            stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        self.lock = threading.Lock()
        self.pids: queue.Queue[int] = queue.Queue()
        self.codes: dict[int, int] = {}
        self.exited = threading.Condition()
        self.reader = threading.Thread(target=self._read, name="remotefn-forkserver",
                                       daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self.channel.recv(256)
            except OSError:
                message = b""
            if not message:
                self.pids.put(-1)
                return
            kind, pid, code = launch.read_fork_answer(message)
            if kind == "pid":
                self.pids.put(pid)
            elif kind == "exit":
                with self.exited:
                    self.codes[pid] = code
                    self.exited.notify_all()

    def fork(self, environment: dict[str, str], cwd: str | None) -> "ForkedWorker":
        """A new worker process with this environment and working directory, connected to
        the session by a socket pair of its own."""
        read_end, write_end = os.pipe()
        status_read, status_write = os.pipe()
        os.set_blocking(status_read, False)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        try:
            request = launch.fork_request(environment, cwd)
            with self.lock:
                socket.send_fds(self.channel, [request],
                                [write_end, status_write, theirs.fileno()])
                pid = self.pids.get(timeout=60)
        except (OSError, queue.Empty) as error:
            os.close(read_end)
            os.close(status_read)
            ours.close()
            raise OSError(f"the fork server is not answering: {error}") from None
        finally:
            os.close(write_end)
            os.close(status_write)
            theirs.close()
        if pid < 0:
            os.close(read_end)
            os.close(status_read)
            ours.close()
            raise OSError("the fork server has exited")
        return ForkedWorker(self, pid, read_end, status_read, ours)

    def close(self) -> None:
        try:
            self.channel.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.channel.close()
        _wait_or_kill(self.process)


class Sentinel:
    """``python -m remotefn.worker.sentinel``, for a session without a fork server: when the
    session's end of its pipe closes (the session ended, or was killed), it ends what the
    session's calls started (see the module)."""

    def __init__(self, environment: dict[str, str]) -> None:
        theirs, self.ours = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "remotefn.worker.sentinel", str(theirs)],
                env=environment, stdin=subprocess.DEVNULL, pass_fds=(theirs,),
                start_new_session=True)
        finally:
            os.close(theirs)

    def close(self) -> None:
        os.close(self.ours)
        _wait_or_kill(self.process)


def _wait_or_kill(process: subprocess.Popen[bytes]) -> None:
    """Wait for a helper process told to end; kill it if it has not within 10 s."""
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ForkedWorker(LaunchedWorker):
    """A worker forked by the fork server: its exit code comes from the server."""

    def __init__(self, server: ForkServer, pid: int, stderr_fd: int, status_fd: int,
                 connection: socket.socket) -> None:
        self.server = server
        self.status_fd = status_fd
        self.connection: socket.socket = connection
        self.pid: int = pid
        self.exit_fd: int | None = os.pidfd_open(pid)
        self.stderr_fd: int | None = stderr_fd
        self._stderr: int | None = stderr_fd

    def poll(self) -> int | None:
        with self.server.exited:
            return self.server.codes.get(self.pid)

    def wait(self, timeout: float) -> int | None:
        if self.exit_fd is not None:
            select.select([self.exit_fd], [], [], timeout)
        with self.server.exited:
            self.server.exited.wait_for(lambda: self.pid in self.server.codes, timeout=1)
            return self.server.codes.get(self.pid)

    def signal(self, signum: int) -> None:
        if self.poll() is not None:
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None
        self.stderr_fd = None
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None
        self.connection.close()
        with self.server.exited:
            self.server.codes.pop(self.pid, None)


def forkable(environment: dict[str, str], python: str) -> bool:
    """Whether a worker can be forked rather than exec'ed: same interpreter, and no variable
    that only acts when an interpreter starts."""
    return python == sys.executable and not any(
        name.startswith(STARTUP_VARIABLES) and os.environ.get(name) != value
        for name, value in environment.items() if name != "PYTHONPATH")
