"""The flux backend against a stand-in of flux-python (tests/fakeflux) that runs real jobs:
local processes, MPI ranks under mpiexec. test_flux_real.py runs on a real Flux."""

from __future__ import annotations

import os
import sys

import pytest

import remotefn
from remotefn import WorkerDied, WorkerStartError, remote
from remotefn.backends.flux import build_jobspec
from remotefn.options import resolve
from sample_module import calc
from helpers import wait_for_file, wait_until

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakeflux")


@pytest.fixture
def fakeflux(monkeypatch):
    if not os.environ.get("REMOTEFN_REAL_FLUX"):
        monkeypatch.syspath_prepend(FAKE)
    monkeypatch.setenv("FLUX_URI", "local:///fake")
    monkeypatch.setenv("FAKEFLUX_CORES", "4")
    monkeypatch.setenv("FAKEFLUX_GPUS", "2")
    yield
    for name in [m for m in sys.modules if m == "flux" or m.startswith("flux.")]:
        del sys.modules[name]


@pytest.fixture
def flux_session(fakeflux):
    with remotefn.session("flux", forward_output=False) as session:
        yield session
    import flux.job

    assert flux.job.running_jobs() == []


def environment(name):
    return os.environ.get(name)


def load():
    return {"offset": 10}


def shifted(x, offset):
    return x + offset


def wait_for(path):
    wait_for_file(path)
    return path


def nested_instance():
    """Runs in the call: the instance a session opened here schedules in, and where its
    calls run."""
    with remotefn.session() as inner:
        view = inner.resources()
        elsewhere = remote(os.getpid)().result(timeout=60) != os.getpid()
    return view["backend"], view["allocation"]["uri"], view["allocation"]["cores_all"], elsewhere


# -- the jobspec, without a scheduler ---------------------------------------------------------


def jobspec(**options):
    sys.path.insert(0, FAKE)
    try:
        from flux.job import JobspecV1
    finally:
        sys.path.remove(FAKE)
    return build_jobspec(JobspecV1, resolve(options), ["/py", "-m", "remotefn.worker"],
                         {"A": "1"}, "pmi2", stderr="/tmp/err")


def test_jobspec_for_a_plain_call():
    spec = jobspec()
    assert spec.command == ["/py", "-m", "remotefn.worker"]
    assert (spec.num_tasks, spec.cores_per_task, spec.gpus_per_task) == (1, 1, 0)
    assert spec.environment == {"A": "1"} and spec.cwd == os.getcwd()
    assert spec.shell_options == {} and spec.stderr == "/tmp/err"


@pytest.mark.parametrize("options, check", [
    ({"cores": 4}, lambda s: s.num_tasks == 4 and s.shell_options == {"pmi": "pmi2"}),
    ({"threads_per_core": 3}, lambda s: s.cores_per_task == 3),
    ({"gpus": 2}, lambda s: s.gpus_per_task == 2),
    ({"cwd": "/scratch"}, lambda s: s.cwd == "/scratch"),
    ({"extras": {"nodes": 2}}, lambda s: s.num_nodes == 2),
    ({"extras": {"exclusive": True}}, lambda s: s.exclusive),
])
def test_jobspec_for_each_option(options, check):
    assert check(jobspec(**options))


def test_nested_calls_start_their_own_instance(fakeflux):
    with remotefn.session("flux", forward_output=False) as session:
        spec = remotefn.backends.base.WorkerSpec("w1", resolve({"nested": True}))
        assert session.backend.command(spec)[:2] == ["flux", "start"]


# -- jobs ---------------------------------------------------------------------------------------


def test_flux_uri_makes_flux_the_default(fakeflux):
    from remotefn import backends

    assert backends.detect(os.environ) == "flux"


def test_capacity_comes_from_flux(flux_session):
    report = flux_session.resources()
    assert report["backend"] == "flux"
    assert report["cores"]["total"] == 4 and report["gpus"]["total"] == 2
    assert report["allocation"]["cores_free"] == 4


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_mpi_function_on_two_ranks(flux_session, block):
    assert remote(calc, cores=2, block=block)(3).result(timeout=60) == [(3, 2, 0), (3, 2, 1)]


def test_threads(flux_session):
    assert remote(environment, threads_per_core=2)("OMP_NUM_THREADS").result(timeout=60) == "2"


def test_block_pool_with_init_dependencies_and_cache(fakeflux, tmp_path):
    with remotefn.session("flux", cache_directory=str(tmp_path), forward_output=False):
        handle = remote(shifted, block=True, max_workers=2, init=load)
        assert handle(handle(1)).result(timeout=60) == 21
        again = handle(handle(1))
        assert again.result(timeout=60) == 21 and again.info.from_cache


def test_unsupported_pmi_mode_is_an_error_naming_it(fakeflux):
    with remotefn.session("flux", pmi="pmix", forward_output=False):
        with pytest.raises(WorkerStartError, match="'pmix'"):
            remote(calc, cores=2)(1).result(timeout=60)


def test_request_larger_than_the_instance_fails_at_submission(flux_session):
    with pytest.raises(ValueError, match="5 cores but the session has 4"):
        remote(calc, cores=5)(1)


def test_unsatisfiable_request_fails_at_once_with_fluxs_message(flux_session, monkeypatch):
    monkeypatch.setenv("FAKEFLUX_CORES", "1")  # the instance shrank (nodes drained)
    with pytest.raises(WorkerStartError) as raised:
        remote(environment, threads_per_core=2)("X").result(timeout=60)
    assert "unsatisfiable request" in raised.value.stderr


def test_cancelled_job_fails_its_call(flux_session, tmp_path):
    import flux.job

    future = remote(wait_for, block=True)(str(tmp_path / "never"))
    wait_until(future.running, what="the call to run")
    [job] = flux.job.running_jobs()
    [running] = flux_session.resources()["running"]
    assert running["flux_job"] == job.jobid and "wait_for" in running["call"]
    view = flux_session.resources()["allocation"]
    assert (view["cores_allocated"], view["cores_free"]) == (1, 3)
    flux.job.cancel(flux_session.backend.handle, job.jobid)
    with pytest.raises(WorkerDied):
        future.result(timeout=60)


def test_shutdown_leaves_no_job(fakeflux, tmp_path):
    import flux.job

    with remotefn.session("flux", forward_output=False):
        futures = [remote(wait_for, block=True, max_workers=2)(str(tmp_path / "gate"))
                   for _ in range(2)]
        wait_until(lambda: len(flux.job.running_jobs()) == 2, what="two jobs")
        (tmp_path / "gate").touch()
        [f.result(timeout=60) for f in futures]
    assert flux.job.running_jobs() == []


def test_error_in_the_session_block_cancels_running_jobs(fakeflux, tmp_path):
    import flux.job

    with pytest.raises(KeyError):
        with remotefn.session("flux", forward_output=False):
            future = remote(wait_for)(str(tmp_path / "never"))
            wait_until(future.running, what="the call to run")
            raise KeyError("stop")
    wait_until(lambda: flux.job.running_jobs() == [], what="the jobs to end")


def test_nested_session_schedules_inside_the_calls_instance(flux_session):
    """nested=True: the call runs in a Flux instance of its own on its share; a session
    opened inside schedules there, not in the session's instance."""
    backend, uri, cores, elsewhere = remote(nested_instance, nested=True, threads_per_core=2)(
    ).result(timeout=120)
    assert backend == "flux" and elsewhere
    assert uri != os.environ["FLUX_URI"]  # another instance than the session's
    assert cores == 2  # which holds the call's 2 cores, not the 4 of the session's instance


def test_local_nested_session_is_confined_to_the_workers_share():
    def inner_capacity():
        with remotefn.session() as inner:
            report = inner.resources()
        return report["backend"], report["cores"]["total"], report["gpus"]["total"]

    with remotefn.session("local", max_cores=4, gpu_ids=[0, 1, 2, 3], forward_output=False):
        handle = remote(inner_capacity, threads_per_core=2, gpus=2)
        assert handle().result(timeout=60) == ("local", 2, 2)
