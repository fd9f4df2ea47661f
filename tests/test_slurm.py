"""The SLURM backend against a real SLURM (scripts/test-cluster.sh up starts one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import remotefn
from remotefn import WorkerDied, WorkerStartError, remote
from remotefn.backends.slurm import parse_allocation, sanitize
from sample_module import calc
from cluster import command, job, needs_cluster, node_of_rank, slurm, steps  # noqa: F401
from helpers import wait_for_file, wait_until


def where():
    return os.environ["SLURMD_NODENAME"], os.environ.get("CUDA_VISIBLE_DEVICES")


def threads():
    return os.environ["OMP_NUM_THREADS"], os.environ["SLURM_CPUS_PER_TASK"]


def load():
    return {"offset": 1000}


def shifted(x, offset):
    return x + offset


def wait_for(path):
    wait_for_file(path)
    return os.environ["SLURM_STEP_ID"]


# -- the command line, without a scheduler ------------------------------------------------------

def test_srun_command_for_a_plain_call():
    assert command() == ["srun", "--jobid=42", "--job-name=remotefn-w1", "--exact",
                         "--ntasks=1", "--cpus-per-task=1", "--mpi=none", "--kill-on-bad-exit=1",
                         "--quiet", "--nodes=1-1", "--gres=none", "/py", "-m",
                         "remotefn.worker"]


@pytest.mark.parametrize("options, expected", [
    ({"cores": 4}, ["--ntasks=4", "--mpi=pmi2", "--nodes=1-4"]),
    ({"threads_per_core": 3}, ["--cpus-per-task=3"]),
    ({"gpus": 2}, ["--gpus-per-task=2"]),
    ({"cwd": "/scratch/run"}, ["--chdir=/scratch/run"]),
    ({"extras": {"nodes": 3}}, ["--nodes=3"]),
    ({"extras": {"ntasks_per_node": 2}}, ["--ntasks-per-node=2"]),
    ({"extras": {"exclusive": True}}, ["--exclusive"]),
    ({"extras": {"partition": "gpu"}}, ["--partition=gpu"]),
    ({"extras": {"slurm_args": ["--mem=4G", "--constraint=a100"]}},
     ["--mem=4G", "--constraint=a100"]),
])
def test_srun_command_for_each_option(options, expected):
    line = command(**options)
    for argument in expected:
        assert argument in line
    assert line[-3:] == ["/py", "-m", "remotefn.worker"]


def test_inherited_slurm_variables_are_removed():
    kept = sanitize({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8", "SLURM_GPUS_PER_TASK": "1",
                     "SLURM_NNODES": "3", "SLURM_CPUS_PER_TASK": "4", "PATH": "/bin",
                     "SLURM_TASKS_PER_NODE": "2(x3)"})
    assert kept == {"SLURM_JOB_ID": "1", "PATH": "/bin"}


def test_allocation_is_parsed_from_scontrol():
    text = ("JobId=7 NumNodes=3 NumCPUs=6 NumTasks=6\n   TRES=cpu=6,node=3\n"
            "   JOB_GRES=gpu:6\n     Nodes=n1 CPU_IDs=0-1 GRES=gpu:2(IDX:0-1)\n")
    allocation = parse_allocation("7", text)
    assert (allocation.nodes, allocation.cpus, allocation.gpus) == (3, 6, 6)
    assert parse_allocation("8", "NumNodes=1 NumCPUs=4").gpus == 0


@needs_cluster
def test_unknown_extra_is_refused_at_submission(slurm):
    with pytest.raises(ValueError, match="'queue'"):
        remote(where, extras={"queue": "x"})()


# -- real steps -----------------------------------------------------------------------------------

@needs_cluster
def test_capacity_is_the_allocations(slurm):
    report = slurm.resources()
    assert report["backend"] == "slurm"
    assert report["cores"]["total"] == 6 and report["gpus"]["total"] == 6


@needs_cluster
@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_mpi_function_on_two_ranks(slurm, block):
    assert remote(calc, cores=2, block=block)(3).result(timeout=60) == [(3, 2, 0), (3, 2, 1)]


@needs_cluster
def test_a_call_spread_over_three_nodes(slurm):
    nodes = remote(node_of_rank, cores=3, extras={"nodes": 3})().result(timeout=60)
    assert sorted(nodes) == ["n1", "n2", "n3"]


@needs_cluster
def test_threads_per_core_is_cpus_per_task(slurm):
    assert remote(threads, threads_per_core=2)().result(timeout=60) == ("2", "2")


@needs_cluster
def test_gpus_per_rank_set_cuda_visible_devices(slurm):
    future = remote(where, cores=2, gpus=1, extras={"nodes": 1})()
    per_rank = future.result(timeout=60)
    assert per_rank[0][0] == per_rank[1][0]
    assert sorted(gpu for _, gpu in per_rank) == ["0", "1"]
    assert future.info.gpus == tuple((gpu,) for _, gpu in per_rank)  # as each rank saw them
    assert future.info.ranks == 2


@needs_cluster
def test_block_pool_with_init_and_dependencies(slurm):
    handle = remote(shifted, block=True, max_workers=2, init=load)
    first = handle(1)
    assert handle(first).result(timeout=60) == 2001
    assert [f.result(timeout=60) for f in handle.map(range(4))] == [1000, 1001, 1002, 1003]


@needs_cluster
def test_step_that_cannot_start_fails_with_slurms_message(slurm):
    with pytest.raises(WorkerStartError) as raised:
        remote(where, extras={"slurm_args": ["--nodelist=nosuchnode"]})().result(timeout=60)
    assert "Requested node configuration is not available" in raised.value.stderr
    with pytest.raises(WorkerStartError) as raised:
        remote(where, extras={"slurm_args": ["--no-such-option"]})().result(timeout=60)
    assert "no-such-option" in raised.value.stderr


@needs_cluster
def test_scancel_of_a_running_step_fails_its_call(slurm, job, tmp_path):
    future = remote(wait_for, block=True)(str(tmp_path / "never"))
    wait_until(lambda: steps(job), what="the step to appear in squeue")
    wait_until(future.running, what="the call to run")
    step = steps(job)[0].split()[0]
    subprocess.run(["scancel", step], check=True)
    with pytest.raises(WorkerDied):
        future.result(timeout=60)


@needs_cluster
def test_shutdown_leaves_no_step(job, tmp_path):
    with remotefn.session("slurm", job_id=job, forward_output=False):
        handle = remote(wait_for, block=True, max_workers=3)
        gate = str(tmp_path / "gate")
        futures = [handle(gate) for _ in range(3)]
        # a step is listed in squeue before its worker connects: wait for the calls instead
        wait_until(lambda: all(f.running() for f in futures), what="three running calls")
        assert len(steps(job)) == 3
        open(gate, "w").close()
        assert len({f.result(timeout=60) for f in futures}) == 3
    wait_until(lambda: not steps(job), what="every step to end")


def run_in_salloc(script: str, *salloc_args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(["salloc", "-J", "remotefn-tests", *salloc_args, sys.executable,
                             "-c", textwrap.dedent(script)], env=env, text=True, **popen)


@needs_cluster
def test_seed_example_inside_salloc_uses_the_slurm_backend_by_default():
    script = """
        import remotefn
        from remotefn import remote

        def calc(i):
            from mpi4py import MPI
            return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()

        print(remotefn.session().backend.name, remote(calc, cores=2)(3).result())
    """
    caller = run_in_salloc(script, "-N1", "-n", "4", stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    out, _ = caller.communicate(timeout=120)
    assert caller.returncode == 0
    assert "slurm [(3, 2, 0), (3, 2, 1)]" in out


@needs_cluster
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_interrupted_or_killed_session_leaves_no_step(how):
    script = """
        import os, threading
        import remotefn
        from remotefn import remote

        def forever():
            threading.Event().wait()

        with remotefn.session(forward_output=False):
            remote(forever)()
            remote(forever, block=True)()
            print(os.environ["SLURM_JOB_ID"], flush=True)
            threading.Event().wait()
    """
    caller = run_in_salloc(script, "-n", "2", stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    job = caller.stdout.readline().strip()
    wait_until(lambda: len(steps(job)) == 2, timeout=120, what="both steps to run")
    python = [p for p in __import__("psutil").Process(caller.pid).children(recursive=True)
              if p.name().startswith("python")][0]
    os.kill(python.pid, how)
    # A liveness bound: how soon a killed session's workers exit is the watchdog's (see
    # test_lifetime.test_the_watchdog_gives_up_on_a_silent_session_within_six_seconds).
    wait_until(lambda: not steps(job), what="the steps to end")
    caller.wait(timeout=30)


@needs_cluster
def test_python_m_remotefn_shows_the_allocation():
    caller = subprocess.run(["salloc", "-J", "remotefn-tests", "-N2", "-n3", sys.executable,
                             "-m", "remotefn"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "backend: slurm" in caller.stdout
    assert "nodes 2" in caller.stdout and "cores: 3 total" in caller.stdout


def test_slurm_backend_outside_an_allocation_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ValueError, match="salloc or sbatch"):
        remotefn.session("slurm")


@needs_cluster
def test_inside_sbatch(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import remotefn
        from remotefn import remote

        def calc(i):
            from mpi4py import MPI
            return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()

        with remotefn.session(forward_output=False) as session:
            print(session.backend.name, remote(calc, cores=2)(3).result())
    """))
    out = tmp_path / "out.txt"
    done = subprocess.run(["sbatch", "--wait", "-J", "remotefn-tests", "-n", "2",
                           f"--output={out}", f"--chdir={tmp_path}",
                           f"--wrap={sys.executable} {script}"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr + out.read_text()
    assert "slurm [(3, 2, 0), (3, 2, 1)]" in out.read_text()
