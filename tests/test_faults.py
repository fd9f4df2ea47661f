"""Fault injection: each way a call can go wrong maps to one outcome the user sees.

``FAULTS`` is the matrix: one row per fault, mapped to the exception (or none), what becomes of
the worker and of the pool's other calls; ``test_what_happens_when`` causes each, and
docs/api.md's "What happens when" table is checked against it line by line. Faults in a
single-rank worker run on both ways the local backend starts one: forked from the fork server
(the default, a socket pair to the session) and exec'ed (``fork_server=False``, ZeroMQ); see
also the ``session`` fixture of the tests after the matrix.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
import threading
import warnings
from dataclasses import dataclass
from functools import partial

import psutil
import pytest

import remotefn
from remotefn import (CallTimeout, DependencyError, RemoteError, RemoteTraceback,
                      SerializationError, WorkerDied, WorkerStartError, remote)
from helpers import alive, read_pid, wait_until, write_pid


class CustomError(Exception):
    pass


def exit_code_3():
    os._exit(3)


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("this exception refuses to pickle")


def identity(x):
    return x


def getpid():
    return os.getpid()


def hold(path):
    """Writes this worker's pid to ``path``, then never returns."""
    write_pid(path)
    threading.Event().wait()


@pytest.fixture(params=[True, False], ids=["forked", "exec-ed"])
def session(request):
    """A local session whose single-rank workers are forked by the fork server, or exec'ed."""
    with remotefn.session("local", max_cores=4, fork_server=request.param,
                          forward_output=False) as opened:
        yield opened


@pytest.fixture(params=[False, True], ids=["one-shot", "block"])
def block(request):
    return request.param


# -- the matrix --------------------------------------------------------------------------------
#
# One row per fault: what the call does (``act``), what the user sees, what becomes of the
# worker and of the pool's other calls. docs/api.md's "What happens when" table has one line
# per row (test_the_docs_table_is_the_matrix).

#: What becomes of the worker (the third column of the docs table).
NONE = "none started"  # the call never reached a worker
KEPT = "kept"  # a block worker takes the next call
REPLACED = "replaced"  # the worker is gone; the pool's next call runs on a new one
RESTARTED = "restarted"  # the pool starts another worker, and its calls run
GIVEN_UP = "given up"  # 3 failed starts in a row fail the pool's queued calls
#: What becomes of the pool's other calls (the fourth column).
UNAFFECTED = "unaffected"
QUEUED_FAIL = "queued calls fail too"


class Exploding:
    """Pickles, but raises when unpickled."""

    def __reduce__(self):
        return _explode, ("no unpickling here",)


def _explode(message):
    raise ValueError(message)


os.environ.setdefault("FAULTS_SESSION_PID", str(os.getpid()))  # workers inherit the session's


class WorkerOnly:
    """Unpickles in a worker, raises when unpickled in the session."""

    def __reduce__(self):
        return _worker_only, ()


def _worker_only():
    if os.getpid() == int(os.environ["FAULTS_SESSION_PID"]):
        raise ValueError("the result refuses to unpickle in the session")
    return WorkerOnly()


def act(what, path="", *ignored):
    """Runs in a worker: writes its pid to ``path`` (if given), then does ``what``;
    ``"pid"`` returns the worker's pid."""
    if what == "rank 1 exits":  # rank 0 waits forever; rank 1 exits once rank 0 is up
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            hold(path)
        wait_until(lambda: os.path.exists(path), what="rank 0")
        os._exit(3)
    if path:
        write_pid(path)
    if what == "raise":
        raise CustomError("the user's message")
    if what == "raise unpicklable":
        raise Unpicklable("cannot travel")
    if what == "return a lock":
        return threading.Lock()
    if what == "return what the session cannot unpickle":
        return WorkerOnly()
    if what == "os._exit":
        os._exit(3)
    if what == "SIGKILL":  # also what the kernel's OOM killer sends
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "segfault":
        import ctypes

        ctypes.string_at(0)
    if what == "wait forever":
        threading.Event().wait()
    if what == "return 1 MiB":
        return bytes(1 << 20)
    return os.getpid()


#: A placeholder among a row's arguments: a future that failed.
FAILED_UPSTREAM = object()


@dataclass(frozen=True)
class Fault:
    """One row: the call ``act(*args)`` (``path`` is replaced by a pid file), with
    ``options``, in a session with ``settings``; the ``error`` it fails with (None: it
    returns), a regex its message matches (with no error: the warning's), what becomes of the
    worker and of other calls."""

    args: tuple
    error: type[BaseException] | None
    gist: str
    worker: str
    others: str = UNAFFECTED
    options: tuple = ()  # (name, value) pairs
    settings: tuple = ()
    blocks: tuple = (False, True)  # the row applies to one-shot and/or block calls
    starts: tuple = (True, False)  # fork_server settings the row applies to
    init_failures: int = 0  # the pool's init raises on its first N starts

    def handle(self, block, tmp_path):
        options = dict(self.options)
        if block:
            options.update(block=True, max_workers=1)
        if self.init_failures:
            options["init"] = partial(init_failing, str(tmp_path / "starts"), self.init_failures)
        return remote(act, **options)


def init_failing(log, failures):
    """Counts its runs in ``log``; raises on the first ``failures`` of them."""
    with open(log, "a") as file:
        file.write("start\n")
    if starts(log) <= failures:
        raise RuntimeError("the data set is missing")
    return {}


def starts(log):
    return open(log).read().count("start") if os.path.exists(log) else 0


#: A sitecustomize.py that makes an interpreter hang as it starts (before a worker could
#: connect) while the file $HANG exists, its pid in $PIDFILE.
HANG = textwrap.dedent("""
    import os, threading
    if os.path.exists(os.environ["HANG"]):
        open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
        threading.Event().wait()
""")

FAULTS = {
    "argument-does-not-pickle": Fault(
        ("pid", "", threading.Lock()), SerializationError, r"argument 2 \(lock\)", NONE),
    "argument-fails-to-unpickle": Fault(
        ("pid", "", Exploding()), SerializationError,
        "the worker could not unpickle the call: ValueError: no unpickling here", KEPT),
    "argument-future-failed": Fault(
        ("pid", "", FAILED_UPSTREAM), DependencyError, "", NONE),
    "call-raises": Fault(("raise", "path"), CustomError, "the user's message", KEPT),
    "exception-does-not-pickle": Fault(
        ("raise unpicklable", "path"), RemoteError, "Unpicklable: cannot travel", KEPT),
    "result-does-not-pickle": Fault(
        ("return a lock", "path"), SerializationError,
        r"the result \(lock\) could not be pickled", KEPT),
    "result-fails-to-unpickle": Fault(
        ("return what the session cannot unpickle", "path"), SerializationError,
        "could not be unpickled here: ValueError: the result refuses", KEPT),
    "os._exit": Fault(("os._exit", "path"), WorkerDied, "exit code 3", REPLACED),
    "SIGKILL": Fault(("SIGKILL", "path"), WorkerDied, r"signal 9 \(SIGKILL\)", REPLACED),
    "segfault": Fault(("segfault", "path"), WorkerDied, "SIGSEGV", REPLACED),
    "timeout": Fault(("wait forever", "path"), CallTimeout, "ran longer than timeout=2", REPLACED,
                     options=(("timeout", 2),)),
    "init-fails-once": Fault(("pid",), None, "", RESTARTED, blocks=(True,), init_failures=1),
    "init-flaky": Fault(("pid",), None, "", RESTARTED, blocks=(True,), init_failures=2),
    "init-always-fails": Fault(
        ("pid",), WorkerStartError, "init of block pool .* raised", GIVEN_UP, QUEUED_FAIL,
        blocks=(True,), init_failures=1000),
    "worker-never-connects": Fault(
        ("pid",), WorkerStartError, r"signal 9 \(SIGKILL\) before it was ready", REPLACED,
        # exec'ed only: a forked worker runs none of the user's code before it connects
        settings=(("start_timeout", 5),), blocks=(False,), starts=(False,)),
    "mpi-rank-dies": Fault(("rank 1 exits", "path"), WorkerDied, "exit code 3", REPLACED,
                           options=(("cores", 2),), starts=(True,)),
    "disk-full-while-caching": Fault(
        ("return 1 MiB", "path"), None, r"not stored: OSError: \[Errno 28\]", KEPT,
        starts=(True,)),
}


def matrix():
    """The test's parameters: each row on each worker start and kind of call it applies to."""
    for name, fault in FAULTS.items():
        for fork_server in fault.starts:
            for block in fault.blocks:
                yield pytest.param(name, fork_server, block, id="-".join(
                    [name, "forked" if fork_server else "exec-ed",
                     "block" if block else "one-shot"]))


def pids_of(value):
    """The pids a "pid" call returned (a list for an MPI call, one per rank)."""
    return set(value) if isinstance(value, list) else {value}


@pytest.mark.parametrize("name, fork_server, block", list(matrix()))
def test_what_happens_when(name, fork_server, block, tmp_path, request):
    """Cause the fault; the call fails with the row's error (or returns); the worker is kept,
    replaced or restarted as the row says; a call of the same pool submitted right after the
    fault runs (or fails, for a pool that gave up); the session still runs calls after."""
    fault = FAULTS[name]
    settings = dict(fault.settings)
    pidfile = str(tmp_path / "pid")
    handle = fault.handle(block, tmp_path)
    if name == "worker-never-connects":  # its workers hang before they connect, until opened
        hang_dir, gate = tmp_path / "site", tmp_path / "hang"
        hang_dir.mkdir()
        (hang_dir / "sitecustomize.py").write_text(HANG)
        gate.touch()
        path = os.pathsep.join([str(hang_dir), *(entry or os.getcwd() for entry in sys.path)])
        handle = handle.options(env={"PYTHONPATH": path, "HANG": str(gate), "PIDFILE": pidfile})
    if name == "mpi-rank-dies":
        pytest.importorskip("mpi4py")
    if name == "disk-full-while-caching":
        settings["cache_directory"] = request.getfixturevalue("small_disk")
    args = [pidfile if arg == "path" else arg for arg in fault.args]
    with warnings.catch_warnings(record=True) as warned, \
            remotefn.session("local", max_cores=4, fork_server=fork_server,
                             forward_output=False, **settings):
        warnings.simplefilter("always")
        if FAILED_UPSTREAM in args:
            upstream = remote(act)("raise")
            args[args.index(FAILED_UPSTREAM)] = upstream
        future = other = None

        def cause():
            nonlocal future, other
            future = handle(*args)
            if name != "worker-never-connects":
                other = handle("pid")  # the same pool, submitted right after the fault
            return future.result(timeout=120)

        if fault.error is None:
            value = cause()
            assert (value == future.info.pid) if args[0] == "pid" else (len(value) == 1 << 20)
        else:
            with pytest.raises(fault.error, match=fault.gist) as raised:
                cause()
        if name == "worker-never-connects":
            gate.unlink()  # the next worker starts
        other = other or handle("pid")
        culprit = read_pid(pidfile) if os.path.exists(pidfile) else (
            future.info.pid if future is not None else None)

        if fault.error is WorkerDied:
            message = str(raised.value)
            assert "act" in message and "out of memory" in message
            assert f"pid {future.info.pid}" in message
        if fault.error is CallTimeout:
            assert isinstance(raised.value, TimeoutError)
            assert f"pid {future.info.pid}" in str(raised.value)
        if fault.error is CustomError or fault.error is RemoteError:
            assert isinstance(raised.value.__cause__, RemoteTraceback)
            assert "in act" in raised.value.__cause__.text
        if fault.error is WorkerStartError:
            assert raised.value.stderr or name == "worker-never-connects"
        if fault.worker == NONE:
            assert future is None or future.info.pid is None
        if name == "disk-full-while-caching":
            wait_until(lambda: any(re.search(fault.gist, str(w.message)) for w in warned),
                       what="the warning that the result was not stored")
            wait_until(lambda: not [name for name in os.listdir(settings["cache_directory"])
                                    if name.endswith(".tmp")],
                       what="no half-written entry left behind")
            again = handle(*args)
            assert len(again.result(timeout=60)) == 1 << 20 and not again.info.from_cache

        if fault.others == QUEUED_FAIL:
            with pytest.raises(fault.error, match=fault.gist):
                other.result(timeout=120)
        else:
            after = pids_of(other.result(timeout=120))
            if fault.worker == KEPT and block:
                assert after == {culprit}
            if fault.worker == REPLACED:
                wait_until(lambda: not alive(culprit), what=f"the worker {culprit} to end")
                assert culprit not in after
        if fault.worker == RESTARTED:
            assert starts(str(tmp_path / "starts")) == fault.init_failures + 1
        if fault.worker == GIVEN_UP:
            assert starts(str(tmp_path / "starts")) == 3  # three in a row, one worker at a time
            with pytest.raises(WorkerStartError):  # a later call tries again
                handle("pid").result(timeout=120)
            assert starts(str(tmp_path / "starts")) > 3
        # The session still runs calls.
        assert remote(act)("pid").result(timeout=120) != os.getpid()


def test_the_docs_table_is_the_matrix():
    """docs/api.md's "What happens when" table: one line per row of FAULTS, in order, naming
    its error (or none), what becomes of the worker and of other calls."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "api.md")).read()
    section = text.split("## What happens when", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {}
    for line in lines:
        fault, seen, worker, others = [cell.strip() for cell in line.strip("|").split("|")]
        documented[re.match(r"`([^`]+)`", fault).group(1)] = (seen, worker, others)
    assert list(documented) == list(FAULTS)
    for name, (seen, worker, others) in documented.items():
        fault = FAULTS[name]
        if fault.error is None:
            assert seen.startswith("no error"), name
        elif fault.error is CustomError:
            assert seen.startswith("the function's own exception"), name
        else:
            assert seen.startswith(f"`{fault.error.__name__}`"), name
        assert worker.startswith(fault.worker), name
        assert others.startswith(fault.others), name


@pytest.mark.parametrize("args, kwargs, culprit", [
    ((threading.Lock(),), {}, "argument 0 (lock)"),
    ((1, [threading.Lock()]), {}, "argument 1 (list)"),
    ((), {"x": threading.Lock()}, "keyword argument 'x' (lock)"),
])
def test_unpicklable_argument_fails_at_submission(local, args, kwargs, culprit):
    with pytest.raises(SerializationError) as raised:
        remote(identity)(*args, **kwargs)
    assert culprit in str(raised.value)


def test_unpicklable_argument_after_a_dependency_fails_the_future(local):
    handle = remote(identity, block=True)
    upstream = handle(1)
    with pytest.raises(SerializationError, match="argument 0"):
        handle([upstream, threading.Lock()]).result(timeout=30)


def test_init_must_return_a_dict(session):
    handle = remote(identity, block=True, init=lambda: [1, 2])
    with pytest.raises(WorkerStartError, match="init must return a dict"):
        handle(1).result(timeout=30)


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_worker_that_cannot_be_started(block):
    with remotefn.session("local", python="/nonexistent/python", forward_output=False):
        with pytest.raises(WorkerStartError, match="/nonexistent/python"):
            remote(identity, block=block)(1).result(timeout=30)


def test_worker_that_exits_before_its_hello_carries_its_stderr(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'site-packages are broken' >&2\nexit 3\n")
    fake.chmod(0o755)
    with remotefn.session("local", python=str(fake), forward_output=False):
        with pytest.raises(WorkerStartError) as raised:
            remote(identity)(1).result(timeout=30)
    assert "exit code 3" in str(raised.value)
    assert "site-packages are broken" in raised.value.stderr


def python_that_fails(tmp_path, times: int) -> tuple[str, str]:
    """A python= that exits 3 before the worker connects on its first ``times`` launches,
    then runs the real interpreter; and the file that counts its launches."""
    launches = tmp_path / "launches"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho launch >> {launches}\n"
                    f"if [ $(wc -l < {launches}) -le {times} ]; then\n"
                    f"  echo 'MPI_Init failed' >&2; exit 3\nfi\n"
                    f"exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    return str(fake), str(launches)


def test_a_one_shot_worker_that_exits_before_connecting_is_started_once_more(tmp_path):
    python, launches = python_that_fails(tmp_path, times=1)
    with remotefn.session("local", python=python, forward_output=False):
        future = remote(os.getpid)()
        assert future.result(timeout=60) != os.getpid()
    assert open(launches).read().count("launch") == 2


def test_a_one_shot_worker_that_never_connects_fails_its_call_after_the_second_try(tmp_path):
    python, launches = python_that_fails(tmp_path, times=1000)
    with remotefn.session("local", python=python, forward_output=False):
        with pytest.raises(WorkerStartError, match="exit code 3") as raised:
            remote(os.getpid)().result(timeout=60)
        assert "MPI_Init failed" in raised.value.stderr
        assert open(launches).read().count("launch") == 2


def test_missing_working_directory_names_it(session, block, tmp_path):
    """A worker that cannot enter its cwd fails to start (forked: in the child, whose
    traceback is in .stderr; exec'ed: when the session starts it)."""
    missing = str(tmp_path / "missing")
    with pytest.raises(WorkerStartError) as raised:
        remote(identity, cwd=missing, block=block)(1).result(timeout=30)
    assert f"No such file or directory: '{missing}'" in str(raised.value)


def die_on_every_run(log):
    """Appends a line to ``log`` each time it runs, then kills its worker."""
    with open(log, "a") as file:
        file.write("run\n")
    os._exit(3)


def die_on_first_run(log):
    """Kills its worker on the first run only; the run count on the second."""
    with open(log, "a") as file:
        file.write("run\n")
    if open(log).read().count("run") == 1:
        os._exit(9)
    return "second try"


def runs(log):
    return open(log).read().count("run")


def test_retries_count_the_reruns_of_a_call_whose_worker_died(session, block, tmp_path):
    """retries=2 runs a call at most 3 times: a call that kills every worker fails with
    WorkerDied after 3 runs; one that kills only the first succeeds on its second run."""
    log = str(tmp_path / "log")
    with pytest.raises(WorkerDied, match="exit code 3"):
        remote(die_on_every_run, block=block, retries=2)(log).result(timeout=60)
    assert runs(log) == 3
    once = str(tmp_path / "once")
    assert remote(die_on_first_run, block=block, retries=2)(once).result(
        timeout=60) == "second try"
    assert runs(once) == 2


def test_without_retries_a_call_runs_once(session, tmp_path):
    log = str(tmp_path / "log")
    with pytest.raises(WorkerDied):
        remote(die_on_every_run)(log).result(timeout=60)
    assert runs(log) == 1


def test_worker_death_does_not_lose_queued_calls(session):
    """Calls queued behind a call that kills its block worker run on a new worker."""
    handle = remote(getpid, block=True, max_workers=1)
    dying = remote(exit_code_3, block=True, max_workers=1)
    assert dying.remote_options.pool_key() == handle.remote_options.pool_key()
    futures = [handle(), dying(), *[handle() for _ in range(10)]]
    futures[0].result(timeout=30)
    with pytest.raises(WorkerDied):
        futures[1].result(timeout=30)
    dead = futures[1].info.pid
    assert dead not in {f.result(timeout=30) for f in futures[2:]}
    assert not alive(dead)


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("signals and pidfds are Linux-only here", allow_module_level=True)


def identity_and_pid(x):
    return x, os.getpid()


def test_pipelined_calls_blame_only_the_call_that_crashed(session):
    """A worker holds several calls at once; when one kills it, the calls before it keep
    their results and the calls after it run on a new worker."""
    ok = remote(identity_and_pid, block=True, max_workers=1)
    dying = remote(exit_code_3, block=True, max_workers=1)
    for _ in range(5):
        futures = [ok(1), ok(2), dying(), ok(3), ok(4)]
        before = [f.result(timeout=30) for f in futures[:2]]
        assert [value for value, _ in before] == [1, 2]
        with pytest.raises(WorkerDied, match="exit_code_3"):
            futures[2].result(timeout=30)
        after = [f.result(timeout=30) for f in futures[3:]]
        assert [value for value, _ in after] == [3, 4]
        assert futures[2].info.pid not in {pid for _, pid in after}


def big_result(n):
    return bytes(n)


def test_a_result_lost_with_its_worker_is_recomputed_not_blamed(session):
    """A large result is still on its way when the next call kills the worker: the finished
    call runs again elsewhere, and only the crashing call fails."""
    big = remote(big_result, block=True, max_workers=1)
    dying = remote(exit_code_3, block=True, max_workers=1)
    for _ in range(5):
        futures = [big(20 << 20), dying(), big(1)]
        assert len(futures[0].result(timeout=60)) == 20 << 20
        with pytest.raises(WorkerDied, match="exit_code_3"):
            futures[1].result(timeout=60)
        assert futures[2].result(timeout=60) == bytes(1)
        assert futures[2].info.pid != futures[1].info.pid


def test_a_crash_inside_a_batch_of_short_calls_fails_only_that_call(session):
    """Short calls reach a worker many at a time; a call that kills the worker in the
    middle of such a batch fails alone, and every other call of the batch still answers."""
    ok = remote(identity, block=True, max_workers=1)
    dying = remote(exit_code_3, block=True, max_workers=1)
    for attempt in range(3):
        assert [f.result(timeout=30) for f in ok.map(range(200))] == list(range(200))
        futures = [*ok.map(range(20)), dying(), *ok.map(range(20, 40))]
        assert [f.result(timeout=30) for f in futures[:20]] == list(range(20))
        with pytest.raises(WorkerDied, match="exit_code_3"):
            futures[20].result(timeout=30)
        assert [f.result(timeout=30) for f in futures[21:]] == list(range(20, 40))
        assert futures[20].info.pid not in {f.info.pid for f in futures[21:]}


def test_a_killed_fork_server_fails_its_workers_calls_and_workers_start_without_it(tmp_path):
    """The fork server dies (SIGKILL): the call running on a worker it forked fails with
    WorkerDied (the worker exits with its parent), and later calls get exec'ed workers."""
    with remotefn.session("local", forward_output=False):
        assert remote(os.getppid)().result(timeout=30) != os.getpid()  # forked
        [server] = [child for child in psutil.Process().children()
                    if "remotefn.worker.forkserver" in child.cmdline()]
        pidfile = str(tmp_path / "pid")
        running = remote(hold, block=True)(pidfile)
        worker = read_pid(pidfile)
        assert psutil.Process(worker).ppid() == server.pid
        server.kill()
        with pytest.raises(WorkerDied, match="hold"):
            running.result(timeout=60)
        wait_until(lambda: not alive(worker), what="the orphaned worker to exit")
        assert remote(os.getppid)().result(timeout=30) == os.getpid()  # exec'ed
        assert remote(os.getppid, block=True)().result(timeout=30) == os.getpid()
