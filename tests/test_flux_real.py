"""The flux backend on a real Flux instance.

`make test` runs this file inside `flux start --test-size=2` (two brokers on this host) through
scripts/flux-tests.sh, which finds flux-core and sets REQUIRE_FLUX=1 there. Elsewhere (no
`import flux`, or no FLUX_URI) every test here is skipped with the reason, or fails when
REQUIRE_FLUX=1 says a Flux instance was expected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import docblocks
import remotefn
from remotefn import CallTimeout, WorkerDied, WorkerStartError, remote
from sample_module import calc
from helpers import alive, needs, wait_for_file, wait_until

try:
    import flux
    import flux.job
    from flux.resource.list import resource_list

    _REASON = None if os.environ.get("FLUX_URI") else (
        "FLUX_URI is not set: scripts/flux-tests.sh runs these tests under flux start")
except ImportError as error:
    _REASON = (f"flux-python is not importable here ({error}); scripts/flux-tests.sh runs "
               "these tests under a real Flux")

if _REASON is not None and os.environ.get("REQUIRE_FLUX") == "1":
    raise RuntimeError(f"REQUIRE_FLUX=1 but {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

#: Flux ends the other tasks of a job this long after one exits (without exit-on-error).
FLUX_EXIT_TIMEOUT = 30.0


def threads():
    return os.environ["OMP_NUM_THREADS"]


def load():
    return {"offset": 10}


def shifted(x, offset):
    return x + offset


def sleep_long():
    time.sleep(600)


def cwd():
    return os.getcwd()


def nested_backend():
    with remotefn.session() as inner:
        return inner.backend.name, remote(os.getpid)().result(timeout=120) != os.getpid()


def rank_dies(gate):
    """Rank 1 exits at once; rank 0 waits forever for a gate nobody opens."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        os._exit(3)
    wait_for_file(gate, timeout=600)


def rank_1_complains():
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        os.write(2, b"rank 1 says goodbye\n")
        os._exit(3)
    time.sleep(600)


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def register_exit_hook(path):
    import atexit

    atexit.register(lambda: open(path, "w").write("ran"))


def leave_a_thread(gate, done):
    """Start a thread that writes ``done`` once ``gate`` exists, and return at once."""
    def finish():
        wait_for_file(gate, timeout=600)
        open(done, "w").close()

    threading.Thread(target=finish).start()


def active_jobs():
    """The jobs of this Flux instance that have not ended (pending, running, cleaning up)."""
    return flux.job.JobList(flux.Flux(), filters=["pending", "running"]).jobs()


@pytest.fixture
def session():
    with remotefn.session("flux", forward_output=False) as opened:
        yield opened
    wait_until(lambda: not active_jobs(), timeout=30, what="the session's jobs to end")


def test_flux_uri_makes_flux_the_default():
    from remotefn import backends

    assert backends.detect(os.environ) == "flux"


def test_capacity_matches_flux(session):
    view = resource_list(flux.Flux()).get()
    report = session.resources()
    assert report["backend"] == "flux"
    assert report["cores"]["total"] == view.all.ncores
    assert report["allocation"]["nodes"] == 2


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_seed_example_on_two_ranks(session, block):
    assert remote(calc, cores=2, block=block)(3).result(timeout=120) == [(3, 2, 0), (3, 2, 1)]


def test_threads(session):
    assert remote(threads, threads_per_core=2)().result(timeout=120) == "2"


def test_block_pool_with_init_and_dependencies(session):
    handle = remote(shifted, block=True, init=load, max_workers=1)
    assert handle(handle(1)).result(timeout=120) == 21


def test_cache(tmp_path):
    with remotefn.session("flux", cache_directory=str(tmp_path), forward_output=False):
        remote(shifted, block=True, init=load)(1).result(timeout=120)
        assert remote(shifted, block=True, init=load)(1).info.from_cache


def test_cwd(session, tmp_path):
    assert remote(cwd, cwd=str(tmp_path))().result(timeout=120) == str(tmp_path)


def test_missing_cwd_is_an_error_at_submission(session, tmp_path):
    with pytest.raises(ValueError, match="cwd .*does not exist"):
        remote(cwd, cwd=str(tmp_path / "missing"))()


@pytest.mark.parametrize("options", [
    {"extras": {"exclusive": True}},
    {"extras": {"nodes": 2}},
    {"extras": {"nodes": 2, "exclusive": True}, "cores": 1},
], ids=["exclusive-without-nodes", "nodes-above-cores", "both"])
def test_extras_flux_rejects_raise_at_submission(session, options):
    with pytest.raises(ValueError, match="extras"):
        remote(cwd, **options)()


def test_nodes_that_flux_accepts(session):
    assert remote(calc, cores=2, extras={"nodes": 2})(1).result(timeout=120) == [
        (1, 2, 0), (1, 2, 1)]


@pytest.mark.parametrize("cores, threads_per_core", [(1, 2), (2, 1)])
def test_nested_session(session, cores, threads_per_core):
    handle = remote(nested_backend, nested=True, cores=cores, threads_per_core=threads_per_core)
    assert handle().result(timeout=300) == ("flux", True)


def test_request_larger_than_the_instance_fails_at_submission(session):
    with pytest.raises(ValueError, match="cores but the session has"):
        remote(calc, cores=10_000)(1)


def test_unsatisfiable_request_fails_with_fluxs_reason_and_job_id(session):
    # 3 cores per task fit in the instance's 4 cores, but in no single node of 2.
    with pytest.raises(WorkerStartError) as raised:
        remote(threads, threads_per_core=3)().result(timeout=120)
    message = str(raised.value)
    assert "unsatisfiable request" in message and "ƒ" in message
    assert "signal" not in message


def test_unsupported_pmi_mode_is_an_error_naming_it():
    with remotefn.session("flux", pmi="pmix", forward_output=False):
        with pytest.raises(WorkerStartError, match="'pmix'"):
            remote(calc, cores=2)(1).result(timeout=120)


def test_cancelled_job_fails_its_call_naming_the_cancel(session):
    future = remote(sleep_long, block=True)()
    wait_until(future.running, timeout=60, what="the call to run")
    [running] = session.resources()["running"]
    assert "sleep_long" in running["call"]
    view = session.resources()["allocation"]
    assert view["cores_allocated"] == 1
    flux.job.cancel(flux.Flux(), running["flux_job"])
    with pytest.raises(WorkerDied) as raised:
        future.result(timeout=120)
    assert "cancel" in str(raised.value)
    assert flux.job.JobID(running["flux_job"]).f58 in str(raised.value)


def test_killed_worker_names_the_signal(session):
    with pytest.raises(WorkerDied, match=r"signal 9 \(SIGKILL\)"):
        remote(kill_myself)().result(timeout=120)


def test_dead_rank_fails_its_call_well_before_fluxs_exit_timeout(session, tmp_path):
    started = time.monotonic()
    with pytest.raises(WorkerDied, match="task rank 1 .*exited"):
        remote(rank_dies, cores=2)(str(tmp_path / "never")).result(timeout=120)
    wait_until(lambda: not active_jobs(), timeout=60, what="the job to end")
    assert time.monotonic() - started < FLUX_EXIT_TIMEOUT / 2


def test_stderr_of_a_rank_on_another_broker_reaches_the_error(session):
    with pytest.raises(WorkerDied, match="rank 1 says goodbye"):
        remote(rank_1_complains, cores=2, extras={"nodes": 2})().result(timeout=120)


def test_shutdown_leaves_no_job(tmp_path):
    with remotefn.session("flux", forward_output=False):
        futures = [remote(wait_for_file, block=True, max_workers=2)(str(tmp_path / "gate"))
                   for _ in range(2)]
        wait_until(lambda: len(active_jobs()) == 2, timeout=60, what="two jobs")
        (tmp_path / "gate").touch()
        [f.result(timeout=120) for f in futures]
    wait_until(lambda: not active_jobs(), timeout=30, what="the jobs to end")


def test_error_in_the_session_block_cancels_running_jobs(tmp_path):
    with pytest.raises(KeyError):
        with remotefn.session("flux", forward_output=False):
            future = remote(wait_for_file)(str(tmp_path / "never"), 600)
            wait_until(future.running, timeout=60, what="the call to run")
            raise KeyError("stop")
    wait_until(lambda: not active_jobs(), timeout=30, what="the jobs to end")


def test_a_one_shot_worker_runs_its_calls_exit_hooks(session, tmp_path):
    hook = tmp_path / "hook"
    remote(register_exit_hook)(str(hook)).result(timeout=120)
    wait_until(lambda: not active_jobs(), timeout=30, what="the job to end")
    assert hook.read_text() == "ran"


def test_a_one_shot_worker_ends_after_the_threads_its_call_left(session, tmp_path):
    gate, done = tmp_path / "gate", tmp_path / "done"
    remote(leave_a_thread)(str(gate), str(done)).result(timeout=120)
    assert len(active_jobs()) == 1  # the thread holds the job until the gate opens
    gate.touch()
    wait_until(lambda: not active_jobs(), timeout=30, what="the job to end")
    assert done.exists()


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_a_running_calls_start_is_known_while_it_runs(session, tmp_path, block):
    gate = str(tmp_path / "gate")
    future = remote(wait_for_file, block=block)(gate)
    wait_until(future.running, timeout=60, what="the call to run")
    assert future.info.started is not None
    (running,) = [r for r in session.resources()["running"] if r["call"].endswith(
        f"(call {future.info.call_id})")]
    assert running["started"] == future.info.started
    open(gate, "w").close()
    future.result(timeout=60)
    assert future.info.started <= future.info.finished


def test_resources_from_threads_while_the_session_cancels_never_deadlocks(session):
    stop = threading.Event()
    reports = []

    def ask():
        while not stop.is_set():
            reports.append(session.resources())

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(3)]
    for thread in askers:
        thread.start()
    try:
        for _ in range(6):  # each timeout cancels a job from the session's own thread
            with pytest.raises(CallTimeout):
                remote(sleep_long, timeout=0.5)().result(timeout=120)
    finally:
        stop.set()
        for thread in askers:
            thread.join(60)
    assert not any(thread.is_alive() for thread in askers) and reports


SCRIPT = """
import sys
import remotefn
from remotefn import remote


def square(x):
    return x * x


if sys.argv[1] == "default":
    print(remote(square, block=True)(3).result(timeout=120))
else:  # a session that is never shut down
    session = remotefn.session("flux", forward_output=False)
    print(session.submit(remote(square, block=True), 3).result(timeout=120))
"""


@pytest.mark.parametrize("which", ["default", "never-shut-down"])
def test_scripts_exit_by_themselves(which):
    done = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "9\n"), done.stderr
    wait_until(lambda: not active_jobs(), timeout=30, what="the script's jobs to end")


KILLED = """
import os, sys, time
import remotefn
from remotefn import remote


def hold(gate):
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        open(gate, "w").close()
    time.sleep(600)


with remotefn.session("flux", forward_output=False):
    remote(hold, cores=2)(sys.argv[1]).result()
"""


def test_killed_session_leaves_no_mpi_job(tmp_path):
    gate = str(tmp_path / "running")
    script = subprocess.Popen([sys.executable, "-c", KILLED, gate])
    try:
        wait_until(lambda: os.path.exists(gate) or script.poll() is not None, timeout=120,
                   what="the call to run")
        assert script.poll() is None
        script.kill()
        killed = time.monotonic()
    finally:
        script.kill()
        script.wait()
    wait_until(lambda: not active_jobs(), timeout=60, what="the killed session's job to end")
    assert time.monotonic() - killed < FLUX_EXIT_TIMEOUT / 2


@needs("flux", _REASON)
@pytest.mark.parametrize("page", [page for page in docblocks.pages()
                                  if docblocks.runnable(page, "flux")])
def test_the_flux_blocks_of_each_page_run(page):
    """The code blocks of docs/ marked `<!-- docs: needs flux -->` (see docblocks.py)."""
    docblocks.run(page, "flux")


GRANDCHILDREN = """
import os, subprocess, sys, threading
import remotefn
from remotefn import remote


def start_grandchild(path):
    child = subprocess.Popen(["sleep", "600"])
    # A daemon: its own session, and its parent (sh) gone (the script cannot import helpers).
    daemon = subprocess.run(["sh", "-c", "setsid sleep 600 > /dev/null 2>&1 & echo $!"],
                            capture_output=True, text=True).stdout.strip()
    with open(path + ".tmp", "w") as file:
        file.write(f"{os.getpid()} {child.pid} {daemon}")
    os.rename(path + ".tmp", path)
    threading.Event().wait()


with remotefn.session("flux", forward_output=False):
    remote(start_grandchild, block=True)(sys.argv[1])
    remote(start_grandchild)(sys.argv[2])
    threading.Event().wait()
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_killed_session_leaves_no_process_of_its_calls(tmp_path, signum):
    """A session killed while a block call and a one-shot call run, each with a process it
    started (`sleep 600`) and a daemon that left its process group and parent: the workers,
    those processes and the jobs all end."""
    wait_until(lambda: not active_jobs(), timeout=60, what="earlier tests' jobs to end")
    files = [str(tmp_path / "block"), str(tmp_path / "one-shot")]
    script = subprocess.Popen([sys.executable, "-c", GRANDCHILDREN, *files],
                              stderr=subprocess.DEVNULL)
    try:
        pids = []
        for path in files:
            wait_until(lambda: os.path.exists(path) or script.poll() is not None,
                       timeout=120, what="the calls to start their children")
            assert script.poll() is None
            pids += map(int, open(path).read().split())
        assert all(alive(pid) for pid in pids) and len(active_jobs()) == 2
        script.send_signal(signum)
        assert script.wait(timeout=60) != 0
    finally:
        script.kill()
        script.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=60,
               what="the workers and the processes their calls started to end")
    wait_until(lambda: not active_jobs(), timeout=60, what="the killed session's jobs to end")
