"""A fork server for local workers: ``python -m remotefn.worker.forkserver``.

Starting a Python worker costs about 100 ms, mostly imports. The fork server pays that once:
it imports what a worker needs, then forks a ready worker per request in about a millisecond.

Who writes and who reads::

    session (LocalBackend) --request: json {env, cwd} + stderr and status fds--> fork server
    fork server --"pid N"--> session              (the worker it forked)
    fork server --"exit N CODE"--> session        (a worker exited; CODE as Popen reports it)

The messages are built and read by :mod:`remotefn.protocol.launch`. The socket is a
SOCK_SEQPACKET pair whose fd is the server's argument, so every message arrives whole. The
server exits when the session closes its end (or dies), and its workers notice that their
parent is gone within a second.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import traceback
from typing import TYPE_CHECKING

from ..protocol.launch import (CONNECTION_FD, MARK, STATUS_FD, end_marked, exited, forked,
                               read_fork_request)

if TYPE_CHECKING:
    from typing import Any

#: Seconds without requests after which the server imports the rest (see serve()).
WARM_AFTER = 0.2


def _reap(channel: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        try:
            channel.send(exited(pid, code))
        except OSError:  # the session has closed its end; keep reaping
            pass


def _child(environment: dict[str, str], cwd: str | None, stderr_fd: int, status_fd: int,
           connection_fd: int, closing: list[int]) -> None:
    """In the forked process: become the worker with this environment and directory."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in closing:
            os.close(fd)
        os.dup2(stderr_fd, 2)
        os.close(stderr_fd)
        os.environ.clear()
        os.environ.update(environment)
        os.environ[STATUS_FD] = str(status_fd)
        os.environ[CONNECTION_FD] = str(connection_fd)
        if cwd:
            os.chdir(cwd)
        from .startup import main

        code = main()
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve(channel: socket.socket) -> None:
    # What every worker imports, loaded once here; the rest waits until the server is idle,
    # so that the first worker (which the session is waiting for) starts sooner.
    from . import startup  # noqa: F401

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    warm = False
    watched: list[Any] = [channel, wake_read]
    while True:
        readable, _, _ = select.select(watched, [], [], None if warm else WARM_AFTER)
        if not readable and not warm:
            # Idle after starting: load what unpickling user functions usually needs, so
            # that workers forked from now on have it too.
            import cloudpickle  # noqa: F401

            from .. import decorator  # noqa: F401
            from ..protocol import shipping  # noqa: F401

            warm = True
            continue
        if wake_read in readable:
            while True:
                try:
                    if not os.read(wake_read, 512):
                        break
                except BlockingIOError:
                    break
            _reap(channel)
        if channel in readable:
            try:
                message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 3)
            except ConnectionError:
                return
            if not message:
                return
            environment, cwd = read_fork_request(message)
            pid = os.fork()
            if pid == 0:
                _child(environment, cwd, fds[0], fds[1], fds[2],
                       [channel.fileno(), wake_read, wake_write])
            for fd in fds:
                os.close(fd)
            try:
                channel.send(forked(pid))
            except OSError:
                return


def main() -> int:
    channel = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(channel)
    finally:
        for child in _children():  # each leads its own group: what its calls started too
            try:
                os.killpg(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        session = os.environ.get(MARK)  # the session's part of its workers' marks
        if session:
            end_marked(session=session)  # and what left the groups (daemons)
    return 0


def _children() -> list[int]:
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as file:
            return [int(pid) for pid in file.read().split()]
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main())
