"""Allocations of several nodes: the address workers connect to, the allocation's shape."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

import pytest

import remotefn
from remotefn import remote
from remotefn.backends import Capacity, Node
from remotefn.backends.addresses import pick_address
from remotefn.backends.slurm import expand_hostlist, parse_allocation, pending_step
from remotefn.hub.ledger import Demand, Ledger
from remotefn.testing import probe
from helpers import needs, wait_for_file, wait_until
from cluster import job, needs_cluster, node_of_rank, salloc, steps  # noqa: F401 (job)


@pytest.mark.parametrize("resolved, interfaces, expected", [
    (["10.1.2.3"], ["127.0.0.1", "10.1.2.3"], "10.1.2.3"),
    (["127.0.1.1"], ["127.0.0.1", "192.0.2.2"], "192.0.2.2"),  # Debian's /etc/hosts entry
    (["127.0.0.1", "10.0.0.7"], ["127.0.0.1"], "10.0.0.7"),
    ([], ["127.0.0.1", "172.16.0.4"], "172.16.0.4"),
])
def test_workers_connect_to_an_address_that_is_not_loopback(resolved, interfaces, expected):
    assert pick_address("node7", resolved, interfaces) == expected


def test_a_host_with_only_loopback_addresses_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"'node7' resolves only to loopback \(127\.0\.1\.1\)"):
        pick_address("node7", ["127.0.1.1"], ["127.0.0.1"])


@needs_cluster
def test_a_slurm_session_listens_on_an_address_other_nodes_reach(job):
    with remotefn.session("slurm", job_id=job, forward_output=False) as session:
        host = probe(session).address.split("://")[1].rsplit(":", 1)[0]
        assert not ipaddress.ip_address(host).is_loopback
        nodes = remote(node_of_rank, cores=3, extras={"nodes": 3})().result(timeout=60)
        assert sorted(nodes) == ["n1", "n2", "n3"]


def wait_then_node(gate):
    wait_for_file(gate)
    return os.environ["SLURMD_NODENAME"]


@needs_cluster
def test_a_call_that_fits_no_node_now_stays_queued_with_the_reason(tmp_path):
    job = salloc("-N2", "--ntasks-per-node=2")
    gate = str(tmp_path / "gate")
    try:
        with remotefn.session("slurm", job_id=job, forward_output=False) as session:
            # One rank on each node: 2 CPUs are free, but no node has 2.
            spread = remote(wait_then_node, cores=2, extras={"nodes": 2})(gate)
            wait_until(spread.running, timeout=60, what="the spread call to run")
            wide = remote(wait_then_node, threads_per_core=2)(gate)
            wait_until(lambda: session.resources()["queued"], what="a queued call")
            (queued,) = session.resources()["queued"]
            first, second = [node["node"] for node in session.resources()["nodes"]]
            assert queued["call"] == wide.info.function + f" (call {wide.info.call_id})"
            assert "2 CPUs on one node" in queued["reason"]
            assert f"{first} 1 CPUs" in queued["reason"] and f"{second} 1 CPUs" in queued["reason"]
            assert not wide.running() and len(steps(job)) == 1
            open(gate, "w").close()
            assert sorted(spread.result(timeout=60)) == [first, second]
            assert wide.result(timeout=60) in (first, second)
    finally:
        subprocess.run(["scancel", job])


# -- the allocation's shape, node by node ----------------------------------------------------

SHOW_JOB = """JobId=7 JobName=x
   NodeList=n[1-3],gpu01
   NumNodes=4 NumCPUs=13 NumTasks=13 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=13,mem=6500M,node=4,billing=13
   JOB_GRES=gpu:5
     Nodes=n[1-2] CPU_IDs=0-3 Mem=2000 GRES=gpu:2(IDX:0-1)
     Nodes=n3 CPU_IDs=0,2-4 Mem=2000 GRES=
     Nodes=gpu01 CPU_IDs=0 Mem=500 GRES=gpu:a100:1(IDX:3)
   MinCPUsNode=1
"""


def test_each_nodes_cpus_gpus_and_memory_are_read_from_scontrol():
    job = parse_allocation("7", SHOW_JOB)
    assert job.shape == (Node("n1", 4, (0, 1), 2000), Node("n2", 4, (0, 1), 2000),
                         Node("n3", 4, (), 2000), Node("gpu01", 1, (0,), 500))
    assert job.memory_per_cpu == 500  # the smallest share, so that every CPU can be used


def test_hostlists_expand_like_scontrol_show_hostnames():
    assert expand_hostlist("n[1-3,7],gpu01,a[08-10]") == [
        "n1", "n2", "n3", "n7", "gpu01", "a08", "a09", "a10"]


def ledger(*cpus_per_node, gpus=0):
    nodes = tuple(Node(f"n{i + 1}", cpus, tuple(range(gpus)))
                  for i, cpus in enumerate(cpus_per_node))
    return Ledger(Capacity(sum(cpus_per_node), tuple(range(gpus * len(nodes))), nodes))


def test_a_worker_goes_on_one_node_where_it_fits_else_spreads_in_node_order():
    book = ledger(2, 4)
    share = book.take(Demand(3))
    assert book.node_names(share) == ("n2",)
    assert book.node_names(book.take(Demand(3))) == ("n1", "n2")
    assert book.take(Demand(1)) is None
    assert book.why_waiting(Demand(1)) == ("waiting for 1 x 1 CPUs on one node; free: "
                                           "n1 0 CPUs 0 GPUs, n2 0 CPUs 0 GPUs")


def test_nodes_asks_for_that_many_nodes_and_gpus_count_per_node():
    book = ledger(4, 4, 4, gpus=1)
    share = book.take(Demand(3, gpus=1, nodes=3))
    assert book.node_names(share) == ("n1", "n2", "n3") and book.take(Demand(1, gpus=1)) is None
    book.give_back(share)
    assert book.take(Demand(2, cpus=3, nodes=2)).places == ((0, 3, (), 0), (1, 3, (), 0))


def test_a_lost_node_leaves_the_ledger():
    book = ledger(2, 2)
    share = book.take(Demand(2))
    assert book.lose("n1") and book.report()["cores"]["total"] == 2
    book.give_back(share)
    assert book.take(Demand(2)).places == ((1, 2, (), 0),)
    assert book.take(Demand(1)) is None


def test_a_rank_larger_than_every_node_never_fits():
    assert ledger(2, 2).never_fits(Demand(1, cpus=3)) == (
        "1 ranks of 3 CPUs each, which the session's nodes cannot hold (the largest, n1, has "
        "2 CPUs and 0 GPUs)")
    assert ledger(2, 2).never_fits(Demand(2, cpus=2)) is None


@needs_cluster
def test_a_rank_larger_than_every_node_is_refused_at_submission(tmp_path):
    job = salloc("-N2", "--ntasks-per-node=2")
    try:
        with remotefn.session("slurm", job_id=job, forward_output=False):
            with pytest.raises(ValueError, match="the session's nodes cannot hold"):
                remote(node_of_rank, threads_per_core=3)()
    finally:
        subprocess.run(["scancel", job])


# -- steps SLURM holds back ------------------------------------------------------------------


@needs_cluster
def test_a_step_slurm_holds_back_is_shown_pending_and_outlives_start_timeout(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="remotefn")
    job = salloc("-N1", "-n2")
    gate = tmp_path / "gate"
    # A step remotefn does not know of takes the job's CPUs until the gate opens.
    other = subprocess.Popen(["srun", f"--jobid={job}", "--exact", "-n2", "--gres=none",
                              "--mem-per-cpu=100M", "bash", "-c",
                              f"until [ -e {gate} ]; do sleep 0.05; done"])
    try:
        wait_until(lambda: subprocess.run(["squeue", "-h", "-s", "-j", job], capture_output=True,
                                          text=True).stdout.strip(), what="the other step")
        with remotefn.session("slurm", job_id=job, start_timeout=3,
                              forward_output=False) as session:
            future = remote(node_of_rank)()
            def pending():
                return [w for w in session.resources()["workers"] if w["state"] == "pending"]
            wait_until(pending, what="the worker to be shown pending")
            assert "pending" in pending()[0]["reason"]
            (queued,) = session.resources()["queued"]
            assert f"SLURM holds step {job}.TDB pending" in queued["reason"]
            # The session logs this when start_timeout has passed and it found the step held.
            wait_until(lambda: any(" is pending: " in r.getMessage() for r in caplog.records),
                       what="start_timeout to pass")
            assert pending() and not future.done()  # still pending, not killed
            gate.touch()
            node = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True,
                                  text=True).stdout.strip()
            assert future.result(timeout=60) == node
    finally:
        gate.touch()
        other.wait(timeout=60)
        subprocess.run(["scancel", job])


def test_a_pending_step_is_found_by_its_sruns_host_and_pid():
    shown = ("StepId=77.0 UserId=0\n   State=RUNNING NodeList=n1\n   SrunHost:Pid=vm:22704\n\n"
             "StepId=77.TDB UserId=0\n   State=PENDING NodeList=n1\n   SrunHost:Pid=vm:22731\n")
    assert pending_step(shown, "vm", 22731).startswith("SLURM holds step 77.TDB pending")
    assert pending_step(shown, "vm", 22704) is None
    assert pending_step(shown, "vm", 2273) is None


# -- MPI across nodes: the mpich wheel under pmi2, Debian's Open MPI under pmix --------------


def mpi_library():
    from mpi4py import MPI

    world, version = MPI.COMM_WORLD, MPI.Get_library_version()
    return (os.environ["SLURMD_NODENAME"], world.allreduce(world.Get_rank() + 1),
            "Open MPI" if version.startswith("Open MPI") else version.split()[0])


#: The mpi4py wheel loads Open MPI's libmpi when told to; Open MPI's shared-memory transport
#: would mistake emulated nodes on one host for one node, so it talks TCP.
OPEN_MPI = {"MPI4PY_MPIABI": "openmpi", "OMPI_MCA_btl": "self,tcp"}


def open_mpi_reason() -> str | None:
    if shutil.which("srun") is None:
        return None  # needs_cluster says why
    plugins = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True)
    if shutil.which("mpiexec.openmpi") is None or "pmix" not in plugins.stdout + plugins.stderr:
        return "no Debian Open MPI or no pmix plugin: scripts/test-cluster.sh up installs both"
    return None


@needs_cluster
@pytest.mark.parametrize("mpi, env, library", [
    ("pmi2", {}, "MPICH"),
    pytest.param("pmix", OPEN_MPI, "Open MPI",
                 marks=needs("slurm", open_mpi_reason())),
], ids=["mpich-pmi2", "openmpi-pmix"])
def test_an_mpi_call_spans_two_nodes(job, mpi, env, library):
    with remotefn.session("slurm", job_id=job, mpi=mpi, forward_output=False):
        ranks = remote(mpi_library, cores=2, extras={"nodes": 2}, env=env)().result(timeout=60)
    assert ranks == [("n1", 3, library), ("n2", 3, library)]


@needs_cluster
def test_the_allocations_shape_is_read_node_by_node_from_slurm():
    job = salloc("-n10")  # more than one 8-CPU node holds: SLURM spreads it unevenly
    try:
        with remotefn.session("slurm", job_id=job, forward_output=False) as session:
            nodes = session.resources()["nodes"]
        cores = [node["cores"]["total"] for node in nodes]
        assert len(cores) > 1 and sum(cores) == 10 and max(cores) <= 8
        assert all(node["memory"]["total"] == node["cores"]["total"] * 500 for node in nodes)
    finally:
        subprocess.run(["scancel", job])


def test_without_named_nodes_nodes_is_left_to_the_backends_scheduler():
    book = Ledger(Capacity(8))  # a Flux instance: one pool of CPUs for the ledger
    assert book.never_fits(Demand(2, nodes=2, per_node=1)) is None
    assert book.take(Demand(2, nodes=2)).cpus == 2
