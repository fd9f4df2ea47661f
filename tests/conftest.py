from __future__ import annotations

import faulthandler
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
