from __future__ import annotations

import faulthandler
import os
import subprocess
import sys

import pytest

import remotefn
from helpers import live_children, wait_until

faulthandler.enable(file=sys.stderr)

# engines: tests that need SLURM, Flux or GPUs skip with the reason, or fail where required.
pytest_plugins = ["engines", "pytester"]


@pytest.fixture(autouse=True)
def no_orphans():
    """Every test leaves no process behind: all children of this process exit."""
    yield
    wait_until(lambda: not live_children(), timeout=60,
               what="the test's worker processes to exit")


@pytest.fixture
def local():
    """A local session with room for 4 cores, shut down after the test."""
    with remotefn.session("local", max_cores=4, forward_output=False) as session:
        yield session


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a 64 KiB tmpfs (needs root), unmounted after the test."""
    directory = tmp_path / "small"
    directory.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk needs root to mount a small tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"could not mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        yield str(directory)
    finally:
        subprocess.run(["umount", str(directory)], check=True)
