"""SLURM allocations as real clusters make them: GPUs, consumable memory. Each step holds
exactly what its call asked for, so later steps are never starved by earlier ones."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import remotefn
from remotefn import remote
from remotefn.backends.slurm import parse_allocation
from remotefn.options import resolve
from helpers import wait_for_file, wait_until
from cluster import command, needs_cluster, salloc


def step_and_gpus():
    return os.environ["SLURM_STEP_ID"], os.environ.get("CUDA_VISIBLE_DEVICES", "")


def gpus_after(gate):
    wait_for_file(gate)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def allocation(request):
    # --immediate: a request that cannot be granted in time is withdrawn, not left queued.
    job = salloc("--immediate=50", *request.param)
    yield job
    subprocess.run(["scancel", job])


# -- the command line -------------------------------------------------------------------------------


def test_a_step_that_asks_for_no_gpus_asks_for_none():
    assert "--gres=none" in command()
    assert "--gres=none" not in command(gpus=1)
    assert "--gpus-per-task=1" in command(gpus=1)


def test_a_step_asks_for_its_cpus_share_of_consumable_memory():
    from remotefn.backends.slurm import srun_command

    line = srun_command(resolve({"threads_per_core": 2}), job_id="42", mpi="pmi2", srun="srun",
                        python="/py", name="w", memory_per_cpu=500)
    assert "--mem-per-cpu=500M" in line
    assert not any(arg.startswith("--mem") for arg in command())


@pytest.mark.parametrize("asked", [["--mem=6000"], ["--mem", "6G"], ["--mem-per-cpu=3000"],
                                   ["--mem-per-gpu=8G"]])
def test_memory_named_in_slurm_args_replaces_the_cpus_share(asked):
    """srun takes one memory option: the share is left out where slurm_args name one."""
    from remotefn.backends.slurm import srun_command

    line = srun_command(resolve({"extras": {"slurm_args": asked}}), job_id="42", mpi="pmi2",
                        srun="srun", python="/py", name="w", memory_per_cpu=500)
    assert [arg for arg in line if arg.startswith("--mem")] == [asked[0]]
    assert line[-len(asked) - 3:-3] == asked


def test_the_jobs_memory_is_read_from_its_tres():
    text = ("JobId=7 NumNodes=1 NumCPUs=4 NumTasks=4 CPUs/Task=1\n"
            "   TRES=cpu=4,mem=2000M,node=1,billing=4\n")
    job = parse_allocation("7", text)
    assert (job.memory, job.memory_per_cpu) == (2000, 500)
    assert parse_allocation("7", text.replace("mem=2000M", "mem=2G")).memory == 2048
    assert parse_allocation("7", "NumNodes=1 NumCPUs=2 TRES=cpu=2,node=1").memory_per_cpu == 0


# -- real steps -------------------------------------------------------------------------------------


@needs_cluster
@pytest.mark.parametrize("allocation", [("-N1", "-n8", "--gpus=4")], indirect=True)
def test_in_a_gpu_allocation_a_pool_leaves_room_for_later_calls(allocation):
    with remotefn.session("slurm", job_id=allocation, start_timeout=60,
                          forward_output=False):
        pool = remote(step_and_gpus, block=True, max_workers=2)
        assert all(gpus == "" for _, gpus in [pool().result(timeout=120) for _ in range(4)])
        assert remote(step_and_gpus)().result(timeout=120)[1] == ""
        second = remote(step_and_gpus, block=True, max_workers=1, threads_per_core=2)
        assert second().result(timeout=120)[1] == ""
        assert remote(step_and_gpus, gpus=1)().result(timeout=120)[1] != ""


@needs_cluster
@pytest.mark.parametrize("allocation", [("-N1", "-n8", "--gpus=4")], indirect=True)
def test_four_gpu_calls_get_distinct_gpus_while_cpu_calls_run_beside_them(allocation, tmp_path):
    gate = tmp_path / "gate"
    with remotefn.session("slurm", job_id=allocation, start_timeout=60,
                          forward_output=False) as session:
        with_gpu = [remote(gpus_after, gpus=1)(str(gate)) for _ in range(4)]
        without = [remote(gpus_after)(str(gate)) for _ in range(4)]
        wait_until(lambda: all(f.running() for f in with_gpu + without), timeout=120,
                   what="all eight calls to run at once")
        assert len(session.resources()["running"]) == 8
        gate.touch()
        gpus = [f.result(timeout=120) for f in with_gpu]
        assert len(set(gpus)) == 4 and "" not in gpus
        assert [f.result(timeout=120) for f in without] == [""] * 4


def step_memory_after(gate):
    """Inside a step: wait for the gate, then the memory SLURM gave this step."""
    wait_for_file(gate)
    job, step = os.environ["SLURM_JOB_ID"], os.environ["SLURM_STEP_ID"]
    shown = subprocess.run(["scontrol", "show", "step", f"{job}.{step}"], capture_output=True,
                           text=True).stdout
    return re.search(r"\bTRES=\S*?mem=(\w+)", shown).group(1)


def memory_is_consumable() -> bool:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return any(line.startswith("SelectTypeParameters") and "_MEMORY" in line.upper()
               for line in out.splitlines())


@needs_cluster
@pytest.mark.parametrize("allocation", [("-N1", "-n4", "--mem=2000")], indirect=True)
def test_under_consumable_memory_concurrent_steps_share_the_jobs_memory(allocation, tmp_path):
    if not memory_is_consumable():
        pytest.skip("this cluster does not count memory (SelectTypeParameters without "
                    "_Memory); scripts/test-cluster.sh up makes one that does")
    gate = tmp_path / "gate"
    with remotefn.session("slurm", job_id=allocation, start_timeout=60,
                          forward_output=False):
        calls = [remote(step_memory_after)(str(gate)) for _ in range(4)]
        wait_until(lambda: all(f.running() for f in calls), timeout=120,
                   what="four steps to run at once")
        gate.touch()
        assert [f.result(timeout=120) for f in calls] == ["500M"] * 4


@needs_cluster
@pytest.mark.parametrize("allocation", [("-N1", "-n4", "--mem=2000")], indirect=True)
def test_under_consumable_memory_slurm_args_ask_for_more_memory(allocation, tmp_path):
    """A block worker whose init needs more than its CPU's share asks for it in slurm_args
    (as docs/slurm.md shows); the step gets what it asked for."""
    if not memory_is_consumable():
        pytest.skip("this cluster does not count memory (SelectTypeParameters without "
                    "_Memory); scripts/test-cluster.sh up makes one that does")
    gate = tmp_path / "gate"
    gate.touch()
    with remotefn.session("slurm", job_id=allocation, start_timeout=60,
                          forward_output=False):
        larger = remote(step_memory_after, block=True, extras={"slurm_args": ["--mem=1200"]})
        assert larger(str(gate)).result(timeout=120) == "1200M"
