"""A call that runs out of memory is killed by the kernel's OOM killer, for real.

The test makes a memory cgroup with a small limit (cgroup v1 or v2, as root); the call moves
its own worker into it and allocates past the limit, so the kernel, not the test, kills it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import remotefn
from remotefn import WorkerDied, remote
from helpers import alive, wait_until

LIMIT = 64 * 2**20


def _own_memory_cgroup() -> Path | None:
    """The directory of this process's memory cgroup, or None where there is none."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            if "memory" in Path("/sys/fs/cgroup/cgroup.controllers").read_text().split():
                return Path("/sys/fs/cgroup") / path.lstrip("/")
    return None


def _why_no_cgroup() -> str | None:
    if os.geteuid() != 0:
        return "a memory cgroup of the test's own needs root"
    parent = _own_memory_cgroup()
    if parent is None or not os.access(parent, os.W_OK):
        return f"no writable memory cgroup here ({parent})"
    return None


@pytest.fixture
def memory_cgroup():
    """A fresh memory cgroup with a 64 MiB limit and no swap; removed after the test."""
    reason = _why_no_cgroup()
    if reason:
        pytest.skip(reason)
    path = _own_memory_cgroup() / f"remotefn-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        if (path / "memory.limit_in_bytes").exists():  # cgroup v1
            (path / "memory.limit_in_bytes").write_text(str(LIMIT))
            if (path / "memory.memsw.limit_in_bytes").exists():
                (path / "memory.memsw.limit_in_bytes").write_text(str(LIMIT))
        else:
            (path / "memory.max").write_text(str(LIMIT))
            (path / "memory.swap.max").write_text("0")
        yield path
    finally:
        procs = path / "cgroup.procs"
        wait_until(lambda: not procs.read_text().strip(), what="the cgroup to be empty")
        path.rmdir()


def exceed_memory(cgroup: str) -> int:
    """Move this worker into ``cgroup``, then touch four times its limit."""
    Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
    held = bytearray(4 * LIMIT)
    for offset in range(0, len(held), 4096):
        held[offset] = 1
    return len(held)


def getpid() -> int:
    return os.getpid()


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "exec-ed"])
def test_a_call_killed_by_the_oom_killer_fails_with_worker_died(memory_cgroup, block,
                                                                fork_server):
    with remotefn.session("local", max_cores=2, fork_server=fork_server,
                          forward_output=False):
        future = remote(exceed_memory, block=block)(str(memory_cgroup))
        with pytest.raises(WorkerDied) as raised:
            future.result(timeout=60)
        message = str(raised.value)
        assert "signal 9 (SIGKILL)" in message and "out of memory" in message, message
        assert "exceed_memory" in message and f"pid {future.info.pid}" in message, message
        wait_until(lambda: not alive(future.info.pid), what="the killed worker to be gone")
        after = remote(getpid, block=block)()
        assert after.result(timeout=60) != future.info.pid  # the session goes on
