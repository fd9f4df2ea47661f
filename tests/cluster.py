"""What the SLURM tests share: whether a cluster answers, allocations, the steps of a job, the
module-wide allocation fixture, and functions that report where a call ran.

Imported by the test modules only (workers import a function of it by name: it imports
nothing that needs the cluster until asked).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

import remotefn
from remotefn.backends.slurm import srun_command
from remotefn.options import resolve
from helpers import needs, wait_until


def cluster_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None when a cluster answers."""
    if shutil.which("sinfo") is None:
        return "no SLURM here: run `sudo scripts/test-cluster.sh up` (make test does, as root)"
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.strip():
        return f"SLURM is not answering ({probe.stderr.strip()}); run scripts/test-cluster.sh up"
    return None


#: Skipped with the reason where there is no cluster; a failure where REQUIRE_SLURM=1.
needs_cluster = needs("slurm", cluster_reason())


def salloc(*args: str) -> str:
    """A new allocation (``salloc --no-shell``) with these options; its job id."""
    out = subprocess.run(["salloc", "--no-shell", "-J", "remotefn-tests", *args],
                         capture_output=True, text=True, timeout=60)
    match = re.search(r"Granted job allocation (\d+)", out.stderr)
    assert match, out.stderr
    return match.group(1)


def steps(job: str) -> list[str]:
    """The remotefn steps of ``job`` that squeue lists."""
    out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True,
                         text=True)
    return [line for line in out.stdout.splitlines() if "remotefn-" in line]


@pytest.fixture(scope="module")
def job():
    """A 3-node allocation with 2 CPUs and 2 fake GPUs per node, for the whole module."""
    job_id = salloc("-N3", "--ntasks-per-node=2", "--gres=gpu:2")
    yield job_id
    subprocess.run(["scancel", job_id])


@pytest.fixture
def slurm(job):
    """A slurm session in the module's allocation; no step of it is left afterwards."""
    with remotefn.session("slurm", job_id=job, forward_output=False) as session:
        yield session
    wait_until(lambda: not steps(job), what="no remotefn step left in squeue")


def command(**options):
    """The srun line of a worker for calls with ``options``, without a scheduler."""
    return srun_command(resolve(options), job_id="42", mpi="pmi2", srun="srun",
                        python="/py", name="remotefn-w1")


def node_of_rank():
    """Inside a step: the node this rank runs on."""
    return os.environ["SLURMD_NODENAME"]
