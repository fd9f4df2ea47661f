"""The event record's file: a child process formats events as JSON lines and appends them, so
that the session's threads only pickle batches of tuples (formatting a line costs about as
much as the rest of a call's bookkeeping in the session).

    python -m remotefn.hub.recordfile FD        (started by the session's recorder)

Its input is frames of a 4-byte length and a pickled list of events ``(time in ns, kind,
call id, worker, detail)``; an empty frame asks for a sync: what came before it is written and
flushed, then one byte is written to standard output. It exits at the end of its input, and
ignores SIGINT: Ctrl-C stops the session, which then closes the input, and every event it
sent is still written.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
from typing import Any, Iterable

_FRAME = struct.Struct("!I")


def _template(kind: str) -> str:
    """The JSON line of an event of ``kind``; it takes ``(seconds, microseconds, call id,
    worker, detail)`` and leaves out (``%.0s``) what that kind does not carry."""
    call = ', "call": %d' if not kind.startswith(("worker", "pool")) else "%.0s"
    worker = ', "worker": "%s"' if kind != "queued" else "%.0s"
    detail = ', "detail": %s' if kind.startswith(("queued", "worker", "pool")) else "%.0s"
    return '{"t": %d.%06d, "event": "' + kind + '"' + call + worker + detail + "}\n"


class _Templates(dict):  # type: ignore[type-arg]
    def __missing__(self, kind: str) -> str:
        template = self[kind] = _template(kind)
        return template


_TEMPLATES = _Templates()


def lines(events: Iterable[tuple[int, str, int, str, str]]) -> str:
    """``events`` as JSON lines."""
    templates = _TEMPLATES
    return "".join([templates[kind] % (ns // 1_000_000_000, ns // 1000 % 1_000_000, call,
                                       worker, detail or '""')
                     for ns, kind, call, worker, detail in events])


class Writer:
    """The session's end: starts the child on the first batch, sends batches, syncs, ends it.
    Not thread-safe: the recorder holds its lock around every call."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.process: subprocess.Popen[bytes] | None = None

    def send(self, events: list[Any]) -> None:
        """Hand ``events`` to the child (started now if it is not running); raises
        ``OSError`` when it is gone."""
        self._frame(pickle.dumps(events, protocol=5))

    def sync(self) -> None:
        """Return once everything sent is in the file."""
        if self.process is not None:
            self._frame(b"")
            assert self.process.stdout is not None
            self.process.stdout.read(1)

    def close(self, timeout: float = 30.0) -> None:
        """End the child once it has written everything; kill it after ``timeout``."""
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def _frame(self, payload: bytes) -> None:
        if self.process is None:
            self.process = _start(self.fd)
        assert self.process.stdin is not None
        self.process.stdin.write(_FRAME.pack(len(payload)) + payload)
        self.process.stdin.flush()


def _start(fd: int) -> subprocess.Popen[bytes]:
    path = os.pathsep.join(p for p in sys.path if p)  # finds remotefn as this process does
    return subprocess.Popen([sys.executable, "-m", "remotefn.hub.recordfile", str(fd)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(fd,),
                            env={**os.environ, "PYTHONPATH": path})


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, answer = sys.stdin.buffer, sys.stdout.buffer
    with open(int(sys.argv[1]), "a", encoding="utf-8") as file:
        while True:
            head = source.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return 0
            (size,) = _FRAME.unpack(head)
            if size:
                file.write(lines(pickle.loads(source.read(size))))
                file.flush()
            else:
                answer.write(b"\n")
                answer.flush()


if __name__ == "__main__":
    sys.exit(main())
