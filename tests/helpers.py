"""Helpers shared by the tests: bounded waiting and process accounting."""

from __future__ import annotations

import os
import time
from typing import Callable

import psutil


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout`` seconds."""
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
