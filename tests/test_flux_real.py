"""The flux backend on a real Flux instance: runs where `import flux` works and FLUX_URI is
set (e.g. `flux start python -m pytest tests/test_flux_real.py`); skipped elsewhere, with the
reason, and a failure where REQUIRE_FLUX=1."""

from __future__ import annotations

import os
import threading

import pytest

import remotefn
from remotefn import WorkerDied, WorkerStartError, remote
from sample_module import calc
from helpers import needs, wait_until

try:
    import flux
    import flux.job
    from flux.resource.list import resource_list

    _REASON = None if os.environ.get("FLUX_URI") else "FLUX_URI is not set: run under flux start"
except ImportError as error:
    _REASON = f"flux-python is not importable here ({error}); run under a Flux instance"

pytestmark = needs("flux", _REASON)


def threads():
    return os.environ["OMP_NUM_THREADS"]


def load():
    return {"offset": 10}


def shifted(x, offset):
    return x + offset


def run_forever():
    threading.Event().wait()


def nested_instance():
    """Runs in the call: the instance a session opened here schedules in, and where its
    calls run."""
    with remotefn.session() as inner:
        view = inner.resources()
        elsewhere = remote(os.getpid)().result(timeout=120) != os.getpid()
    return view["backend"], view["allocation"]["uri"], view["allocation"]["cores_all"], elsewhere


def remotefn_jobs():
    handle = flux.Flux()
    return [job for job in flux.job.JobList(handle).jobs()
            if job.name in ("python", "python3", "flux") and job.state_single != "I"
            and job.status not in ("COMPLETED", "FAILED", "CANCELED", "TIMEOUT")]


@pytest.fixture
def session():
    with remotefn.session("flux", forward_output=False) as opened:
        yield opened


def test_capacity_matches_flux(session):
    view = resource_list(flux.Flux()).get()
    assert session.resources()["cores"]["total"] == view.all.ncores


def test_seed_example_on_two_ranks(session):
    assert remote(calc, cores=2)(3).result(timeout=120) == [(3, 2, 0), (3, 2, 1)]


def test_threads(session):
    assert remote(threads, threads_per_core=2)().result(timeout=120) == "2"


def test_block_pool_with_init_and_dependencies(session):
    handle = remote(shifted, block=True, init=load, max_workers=1)
    assert handle(handle(1)).result(timeout=120) == 21


def test_cache(tmp_path):
    with remotefn.session("flux", cache_directory=str(tmp_path), forward_output=False):
        remote(shifted, block=True, init=load)(1).result(timeout=120)
        assert remote(shifted, block=True, init=load)(1).info.from_cache


def test_nested_session_schedules_inside_the_calls_own_instance(session):
    backend, uri, cores, elsewhere = remote(nested_instance, nested=True, cores=1,
                                            threads_per_core=2)().result(timeout=300)
    assert backend == "flux" and elsewhere
    assert uri != os.environ["FLUX_URI"] and cores == 2


def test_a_request_larger_than_the_instance_fails_at_submission(session):
    total = session.resources()["cores"]["total"]
    with pytest.raises(ValueError, match=f"{total + 1} cores but the session has {total}"):
        remote(calc, cores=total + 1)(1)


def test_an_unsatisfiable_request_fails_at_once_with_fluxs_message(session):
    """It fits the instance's cores but asks for one node more than the instance has."""
    nodes = session.resources()["allocation"]["nodes"]
    if session.resources()["cores"]["total"] < nodes + 1:
        pytest.skip(f"the instance has fewer cores than nodes + 1 ({nodes + 1})")
    with pytest.raises(WorkerStartError) as raised:
        remote(threads, cores=nodes + 1, extras={"nodes": nodes + 1})().result(timeout=120)
    assert "unsatisfiable" in raised.value.stderr.lower()


def test_cancel_fails_the_running_call(session):
    future = remote(run_forever, block=True)()
    wait_until(future.running, timeout=60, what="the call to run")
    worker = next(w for w in session.resources()["workers"]
                  if w["worker"] == future.info.worker_id)
    flux.job.cancel(session.backend.handle, worker["flux_job"])
    with pytest.raises(WorkerDied):
        future.result(timeout=120)
