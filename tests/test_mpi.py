"""MPI functions: every rank runs the call; the result is every rank's value in rank order."""

from __future__ import annotations

import os
import sys

import pytest

import remotefn
from remotefn import WorkerStartError, remote
from remotefn.backends.base import WorkerSpec
from remotefn.backends.local import LocalBackend
from remotefn.options import resolve
from remotefn.errors import MissingDependency
from sample_module import calc
from helpers import alive, live_children

pytest.importorskip("mpi4py")


def allreduce(x):
    from mpi4py import MPI

    return MPI.COMM_WORLD.allreduce(x + MPI.COMM_WORLD.Get_rank())


def fail_on_rank(bad_rank):
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == bad_rank:
        raise ArithmeticError(f"rank {bad_rank} is unhappy")
    return "fine"


def rank_init():
    from mpi4py import MPI

    return {"offset": 100 * MPI.COMM_WORLD.Get_rank()}


def with_offset(x, offset):
    return x + offset


def pids():
    return os.getpid()


@pytest.fixture
def mpi_session():
    with remotefn.session("local", max_cores=4, forward_output=False) as session:
        yield session


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_seed_example_on_two_ranks(mpi_session, block):
    assert remote(calc, cores=2, block=block)(3).result(timeout=60) == [(3, 2, 0), (3, 2, 1)]


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_four_ranks_oversubscribed_with_collectives(mpi_session, block):
    result = remote(allreduce, cores=4, block=block)(1).result(timeout=60)
    assert result == [1 * 4 + 0 + 1 + 2 + 3] * 4


def test_block_mpi_worker_serves_many_calls_with_init_on_every_rank(mpi_session):
    handle = remote(with_offset, cores=2, block=True, max_workers=1, init=rank_init)
    futures = handle.map(range(5))
    assert [f.result(timeout=60) for f in futures] == [[i, i + 100] for i in range(5)]
    workers = {f.info.pid for f in futures}
    assert len(workers) == 1


def test_exception_on_one_rank_keeps_its_type_and_names_the_rank(mpi_session):
    with pytest.raises(ArithmeticError, match="rank 1 is unhappy") as raised:
        remote(fail_on_rank, cores=2)(1).result(timeout=60)
    assert "MPI rank 1 of 2" in raised.value.__cause__.text


def test_mpi_workers_hold_their_ranks_in_the_ledger(mpi_session):
    handle = remote(pids, cores=2, block=True, max_workers=1)
    ranks = handle().result(timeout=60)
    assert mpi_session.resources()["cores"]["in_use"] == 2
    assert len(set(ranks)) == 2 and all(alive(pid) for pid in ranks)  # the ranks live on
    assert set(ranks) <= {child.pid for child in live_children()}


def test_without_mpiexec_an_mpi_call_fails_at_submission_saying_what_to_install(
        tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with remotefn.session("local", python=str(tmp_path / "python"), forward_output=False):
        with pytest.raises(MissingDependency, match="pip install 'remotefn\\[mpi\\]'"):
            remote(calc, cores=2)(1)


def test_without_mpi4py_an_mpi_call_fails_at_submission_saying_what_to_install(
        mpi_session, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # what import sees where it is missing
    with pytest.raises(MissingDependency) as raised:
        remote(calc, cores=2)(1)
    assert "mpi4py is not installed" in str(raised.value)
    assert "pip install 'remotefn[mpi]'" in str(raised.value)
    assert isinstance(raised.value, ImportError)
    assert remote(calc)(1).result(timeout=60) == (1, 1, 0)  # single-rank calls still run


def test_singleton_ranks_are_detected(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text('#!/bin/sh\nshift 2\nexec "$@"\n')  # drops "-n N": one singleton rank
    fake.chmod(0o755)
    with remotefn.session("local", mpiexec=str(fake), forward_output=False):
        with pytest.raises(WorkerStartError, match="2 MPI ranks were started but MPI reports"):
            remote(calc, cores=2)(1).result(timeout=60)


def test_the_launcher_is_the_setting_else_the_one_beside_python_else_the_one_on_path(
        tmp_path, monkeypatch):
    """The mpich wheel's mpiexec sits beside the workers' Python (its fork-based launcher,
    mpiexec.gforker, is used where it is there: it listens on no network); a system MPI on
    PATH is used where there is none; session(mpiexec=...) picks one."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    forker = os.path.join(os.path.dirname(os.path.realpath(beside)), "mpiexec.gforker")
    assert LocalBackend().launcher() == (forker if os.access(forker, os.X_OK) else beside)
    on_path = tmp_path / "bin" / "mpiexec"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert LocalBackend(python=str(tmp_path / "python")).launcher() == str(on_path)
    assert LocalBackend(mpiexec="/opt/mpi/bin/mpiexec").launcher() == "/opt/mpi/bin/mpiexec"


def test_open_mpi_is_run_oversubscribed_and_allowed_to_run_as_root(tmp_path):
    """Open MPI's mpiexec works too: it is told to oversubscribe (more ranks than cores, as
    mpich does) and to run as root, where the tests and many containers run."""
    fake = tmp_path / "mpiexec"
    fake.write_text('#!/bin/sh\necho "mpiexec (OpenRTE) 4.1.5"\n')
    fake.chmod(0o755)
    backend = LocalBackend(python="/py", mpiexec=str(fake))
    spec = WorkerSpec("w1", resolve({"cores": 4}))
    assert backend.command(spec) == [str(fake), "--oversubscribe", "-n", "4", "/py", "-m",
                                     "remotefn.worker"]
    assert backend.environment(spec) == {"OMPI_ALLOW_RUN_AS_ROOT": "1",
                                         "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                                         "OMPI_MCA_btl_tcp_if_include": "lo",
                                         "OMPI_MCA_oob_tcp_if_include": "lo"}
