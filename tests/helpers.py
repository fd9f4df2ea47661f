"""Helpers shared by the tests: bounded waiting, handshakes through files, process accounting
and the mark of tests that need an engine. Calls in workers use it too, so it imports no pytest."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable

import psutil

if TYPE_CHECKING:
    import subprocess

    import pytest


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout`` seconds.

    The timeout is a liveness limit, generous for a loaded machine: a condition that is met
    at all is met long before it. It never stands for an event the test could wait for."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def wait_for_file(path: str, timeout: float = 120.0) -> None:
    """Inside a call: return once the file at ``path`` exists (a gate the test opens)."""
    wait_until(lambda: os.path.exists(path), timeout, f"the file {path}")


def alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def live_children() -> list[psutil.Process]:
    result = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                result.append(child)
        except psutil.NoSuchProcess:
            pass
    return result


def needs(engine: str, reason: str | None) -> "pytest.MarkDecorator":
    """Mark a test that needs ``engine`` (``"slurm"``, ``"flux"`` or ``"gpu"``); ``reason``
    says why it is missing here, None when it is present. The test is skipped with that
    reason, or fails where ``REQUIRE_<ENGINE>=1`` (see engines.py)."""
    import pytest  # not at the top: calls in workers use this module without pytest

    return pytest.mark.needs(engine, reason=reason)


def read_pid(path: str, timeout: float = 60.0,
             process: "subprocess.Popen | None" = None) -> int:
    """The pid a process wrote to ``path`` (a handshake: wait for the file, then read it).
    With ``process``, fail at once if that process exits before the file appears."""
    def written() -> bool:
        if os.path.exists(path):
            return True
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited with {process.returncode} "
                                 f"before writing {path}")
        return False

    wait_until(written, timeout, f"a pid in {path}")
    return int(open(path).read())


def write_pid(path: str) -> int:
    """Inside a call: write this process's pid to ``path`` (atomically) and return it."""
    pid = os.getpid()
    with open(path + ".tmp", "w") as file:
        file.write(f"{pid}\n")
    os.replace(path + ".tmp", path)
    return pid


def start_daemon() -> int:
    """Inside a call: a process in a session of its own whose parent has exited (``setsid``
    from a shell that ends at once); its pid."""
    import subprocess

    return int(subprocess.run(["sh", "-c", "setsid sleep 600 > /dev/null 2>&1 & echo $!"],
                              capture_output=True, text=True, check=True).stdout)


def fork_daemon() -> int:
    """Inside a call: a daemon made by a double fork, without exec; its pid."""
    read, write = os.pipe()
    if os.fork() == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.write(write, str(os.getpid()).encode())
                time.sleep(600)
        finally:
            os._exit(0)
    os.close(write)
    return int(os.read(read, 32))
