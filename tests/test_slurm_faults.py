"""Faults inside a real SLURM allocation: a killed session, a node that goes down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import remotefn
from remotefn import WorkerDied, WorkerStartError, remote
from helpers import alive, read_pid, wait_for_file, wait_until
from cluster import needs_cluster, salloc, steps


def run_in_job(job: str, script: str) -> subprocess.Popen:
    """``script`` in a Python of its own inside ``job``, as a batch script's Python runs."""
    env = {**os.environ, "SLURM_JOB_ID": job, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def run_under_salloc(script: str) -> subprocess.Popen:
    """``script`` as salloc's command: when it dies, salloc ends the job and its steps."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(["salloc", "-J", "remotefn-tests", "-n2", sys.executable, "-c",
                             textwrap.dedent(script)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def session_python(process: subprocess.Popen) -> psutil.Process:
    if process.args[0] == sys.executable:
        return psutil.Process(process.pid)
    return [p for p in psutil.Process(process.pid).children(recursive=True)
            if p.name().startswith("python")][0]


@needs_cluster
@pytest.mark.parametrize("where, how", [("the job lives on", signal.SIGKILL),
                                        ("the job lives on", signal.SIGTERM),
                                        ("the job lives on", signal.SIGINT),
                                        ("salloc ends the job", signal.SIGKILL)],
                         ids=["SIGKILL", "SIGTERM", "Ctrl-C", "SIGKILL-salloc-ends"])
def test_a_killed_session_leaves_no_process_of_its_calls_behind(where, how, tmp_path):
    pid_file = tmp_path / "sleep.pid"
    script = f"""
        import os, subprocess, threading
        import remotefn
        from remotefn import remote

        def start_sleep(path):
            sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
            with open(path + ".tmp", "w") as file:
                file.write(str(sleeper.pid))
            os.rename(path + ".tmp", path)
            threading.Event().wait()

        with remotefn.session(forward_output=False):
            remote(start_sleep)({str(pid_file)!r})
            threading.Event().wait()
    """
    job = salloc("-N1", "-n2") if where == "the job lives on" else None
    caller = run_in_job(job, script) if job else run_under_salloc(script)
    try:
        sleeper = read_pid(str(pid_file), timeout=120, process=caller)
        job = job or psutil.Process(sleeper).environ()["SLURM_JOB_ID"]
        assert alive(sleeper) and steps(job)
        os.kill(session_python(caller).pid, how)  # SIGKILL: it can do nothing about it
        # Liveness bounds: the worker's watchdog gives up on a silent session within 6 s.
        wait_until(lambda: not alive(sleeper), timeout=30, what=f"sleep (pid {sleeper}) to end")
        wait_until(lambda: not steps(job), timeout=30, what="no step left in squeue -s")
    finally:
        caller.kill()
        caller.wait(timeout=30)
        if job:
            subprocess.run(["scancel", job])


def wait_then_node(gate):
    wait_for_file(gate)
    return os.environ["SLURMD_NODENAME"]


def node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%t"], capture_output=True,
                          text=True).stdout.strip()


@needs_cluster
def test_a_node_set_down_fails_its_calls_naming_it_and_retries_run_on_a_node_that_is_up(
        tmp_path):
    job = salloc("--no-kill", "-N3", "--ntasks-per-node=2")
    gate = str(tmp_path / "gate")
    try:
        with remotefn.session("slurm", job_id=job, forward_output=False) as session:
            # Two calls fill n1; the next two run on n2: one plain, one of a block pool
            # with retries; n3 stays free.
            fillers = [remote(wait_then_node)(gate) for _ in range(2)]
            dies = remote(wait_then_node)(gate)
            wait_until(lambda: all(f.running() for f in [*fillers, dies]), what="three calls")
            pool = remote(wait_then_node, block=True, max_workers=1, retries=1)
            rerun = pool(gate)
            wait_until(rerun.running, what="the pool's call to run")
            on = {w["worker"]: w["nodes"] for w in session.resources()["workers"]}
            assert on[dies.info.worker_id] == ["n2"] and on[rerun.info.worker_id] == ["n2"]
            first_worker = rerun.info.worker_id

            subprocess.run(["scontrol", "update", "NodeName=n2", "State=DOWN", "Reason=test"],
                           check=True)
            with pytest.raises(WorkerDied, match="node n2 failed"):
                dies.result(timeout=60)
            wait_until(lambda: rerun.info.worker_id != first_worker, what="the rerun")
            assert [n["state"] for n in session.resources()["nodes"]] == ["up", "lost", "up"]
            open(gate, "w").close()
            assert rerun.result(timeout=60) == "n3"  # the pool refilled on a node that is up
            assert pool(gate).result(timeout=60) == "n3"
            assert [f.result(timeout=60) for f in fillers] == ["n1", "n1"]
    finally:
        subprocess.run(["scancel", job])
        subprocess.run(["scontrol", "update", "NodeName=n2", "State=RESUME"])
        wait_until(lambda: not node_state("n2").startswith(("down", "drain", "fail")),
                   what="n2 to be back up")


@needs_cluster
def test_a_queued_call_that_only_the_failed_node_could_hold_fails_instead_of_waiting(tmp_path):
    job = salloc("--no-kill", "-N2", "--ntasks-per-node=2")
    gate = str(tmp_path / "gate")
    try:
        with remotefn.session("slurm", job_id=job, forward_output=False) as session:
            first, second = [node["node"] for node in session.resources()["nodes"]]
            running = remote(wait_then_node, cores=2, extras={"nodes": 2})(gate)
            wait_until(running.running, what="a call on both nodes")
            waiting = remote(wait_then_node, cores=4, extras={"nodes": 2})(gate)
            wait_until(lambda: session.resources()["queued"], what="the second to queue")
            subprocess.run(["scontrol", "update", f"NodeName={second}", "State=DOWN",
                            "Reason=test"], check=True)
            with pytest.raises(WorkerDied, match=f"node {second} failed"):
                running.result(timeout=60)
            with pytest.raises(WorkerStartError, match=f"can no longer start.*{second} failed"):
                waiting.result(timeout=60)
            open(gate, "w").close()
            assert remote(wait_then_node)(gate).result(timeout=60) == first
    finally:
        subprocess.run(["scancel", job])
        subprocess.run(["scontrol", "update", "NodeName=" + ",".join(("n1", "n2", "n3")),
                        "State=RESUME"], capture_output=True)
        wait_until(lambda: not any(node_state(n).startswith(("down", "drain", "fail"))
                                   for n in ("n1", "n2", "n3")), what="the nodes to be up")
