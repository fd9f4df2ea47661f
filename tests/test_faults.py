"""Fault injection: each way a call can go wrong maps to one exception the user sees.

Every fault runs on both ways the local backend starts a single-rank worker: forked from the
fork server (the default, a socket pair to the session) and exec'ed (``fork_server=False``,
ZeroMQ); see the ``session`` fixture.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import psutil
import pytest

import remotefn
from remotefn import (CallTimeout, RemoteError, RemoteTraceback, SerializationError,
                      WorkerDied, WorkerStartError, remote)
from helpers import alive, read_pid, wait_until, write_pid


class CustomError(Exception):
    pass


def raise_custom():
    raise CustomError("the user's message")


def exit_code_3():
    os._exit(3)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def segfault():
    import ctypes

    ctypes.string_at(0)


def return_lock():
    return threading.Lock()


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("this exception refuses to pickle")


def raise_unpicklable():
    raise Unpicklable("cannot travel")


def identity(x):
    return x


def getpid():
    return os.getpid()


def out_of_memory():
    """What the kernel's OOM killer does to a process over its memory limit: SIGKILL. (A real
    OOM kill needs a memory cgroup the tests cannot make; the session sees the same signal.)"""
    os.kill(os.getpid(), signal.SIGKILL)


def hold(path):
    """Writes this worker's pid to ``path``, then never returns."""
    write_pid(path)
    threading.Event().wait()


def spin(seconds):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return seconds


@pytest.fixture(params=[True, False], ids=["forked", "exec-ed"])
def session(request):
    """A local session whose single-rank workers are forked by the fork server, or exec'ed."""
    with remotefn.session("local", max_cores=4, fork_server=request.param,
                          forward_output=False) as opened:
        yield opened


@pytest.fixture(params=[False, True], ids=["one-shot", "block"])
def block(request):
    return request.param


def assert_replaced(dead_pid, handle):
    """The worker ``dead_pid`` is gone, and the next call of ``handle`` (whose options, and so
    whose pool, are those of the call that killed it) runs on another, live worker."""
    wait_until(lambda: not alive(dead_pid), what=f"the worker {dead_pid} to be gone")
    replacement = handle()
    pid = replacement.result(timeout=60)
    assert pid != dead_pid and replacement.info.pid == pid


@pytest.mark.parametrize("function, text", [
    (exit_code_3, "exit code 3"),
    (kill_self, "signal 9 (SIGKILL)"),
    (segfault, "SIGSEGV"),
    (out_of_memory, "signal 9 (SIGKILL)"),
], ids=["os._exit", "signal", "segfault", "out-of-memory"])
def test_worker_death_fails_the_call_with_worker_died_and_the_worker_is_replaced(
        session, block, function, text):
    """WorkerDied names the exit code or signal, the call and the worker, and says what may
    have caused it (out of memory included); the pool goes on with a new worker."""
    future = remote(function, block=block)()
    with pytest.raises(WorkerDied) as raised:
        future.result(timeout=30)
    message = str(raised.value)
    assert text in message and function.__name__ in message
    assert f"pid {future.info.pid}" in message and "out of memory" in message
    assert_replaced(future.info.pid, remote(getpid, block=block))


def test_user_exception_keeps_its_type_and_the_remote_traceback(session, block):
    with pytest.raises(CustomError, match="the user's message") as raised:
        remote(raise_custom, block=block)().result(timeout=30)
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_custom" in cause.text and "CustomError" in cause.text


def test_exception_that_does_not_pickle_becomes_remote_error_with_its_traceback(session,
                                                                                block):
    """RemoteError carries the exception's type, message and the remote traceback."""
    with pytest.raises(RemoteError) as raised:
        remote(raise_unpicklable, block=block)().result(timeout=30)
    message = str(raised.value)
    assert "Unpicklable: cannot travel" in message
    assert 'in raise_unpicklable\n    raise Unpicklable("cannot travel")' in message
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert "raise_unpicklable" in raised.value.__cause__.text


def test_unpicklable_result_names_the_result(session, block):
    with pytest.raises(SerializationError) as raised:
        remote(return_lock, block=block)().result(timeout=30)
    assert "return_lock" in str(raised.value) and "lock" in str(raised.value)


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


def test_init_that_raises_fails_every_waiting_call(session):
    def broken_init():
        raise RuntimeError("no data file")

    handle = remote(identity, block=True, init=broken_init, max_workers=2)
    futures = handle.map(range(5))
    for future in futures:
        with pytest.raises(WorkerStartError) as raised:
            future.result(timeout=30)
        assert "no data file" in str(raised.value)
        assert "no data file" in raised.value.stderr


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


def test_a_worker_that_never_connects_is_killed_after_start_timeout(tmp_path, caplog):
    """start_timeout: seconds a worker may take to connect; then it is killed and its call
    fails with WorkerStartError."""
    silent = tmp_path / "python"
    silent.write_text("#!/bin/sh\nexec tail -f /dev/null\n")  # never says hello
    silent.chmod(0o755)
    with remotefn.session("local", python=str(silent), start_timeout=1,
                          forward_output=False):
        with pytest.raises(WorkerStartError, match="signal 9 .SIGKILL. before it was ready"):
            remote(identity)(1).result(timeout=60)
    assert "did not connect within start_timeout=1 s" in caplog.text


def test_missing_working_directory_names_it(session, block, tmp_path):
    """A worker that cannot enter its cwd fails to start (forked: in the child, whose
    traceback is in .stderr; exec'ed: when the session starts it)."""
    missing = str(tmp_path / "missing")
    with pytest.raises(WorkerStartError) as raised:
        remote(identity, cwd=missing, block=block)(1).result(timeout=30)
    assert f"No such file or directory: '{missing}'" in str(raised.value)


def test_timeout_fails_the_call_with_call_timeout_and_replaces_the_worker(session, block):
    """The call's worker is killed (its pid is gone) and the pool's next call runs on a new
    worker; the next call has no timeout, so a slow start cannot fail it."""
    handle = remote(spin, block=block, max_workers=1) if block else remote(spin)
    future = handle.options(timeout=0.5)(600)
    with pytest.raises(CallTimeout, match="timeout=0.5") as raised:
        future.result(timeout=60)
    assert isinstance(raised.value, TimeoutError)
    assert f"pid {future.info.pid}" in str(raised.value)
    # The pool of calls with this timeout (timeout is part of what makes a pool) replaces it;
    # the timer counts from the call's start, after the worker is up.
    same_pool = remote(getpid, block=block, max_workers=1) if block else remote(getpid)
    assert_replaced(future.info.pid, same_pool.options(timeout=0.5))


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
