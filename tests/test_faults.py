"""Fault injection: each way a call can go wrong maps to one exception the user sees."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

import remotefn
from remotefn import (CallTimeout, RemoteError, RemoteTraceback, SerializationError, WorkerDied,
                      WorkerStartError, remote)


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


def spin(seconds):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return seconds


@pytest.fixture(params=[False, True], ids=["one-shot", "block"])
def block(request):
    return request.param


@pytest.mark.parametrize("function, error, text", [
    (exit_code_3, WorkerDied, "exit code 3"),
    (kill_self, WorkerDied, "signal 9 (SIGKILL)"),
    (segfault, WorkerDied, "SIGSEGV"),
])
def test_worker_death_fails_the_call(local, block, function, error, text):
    future = remote(function, block=block)()
    with pytest.raises(error) as raised:
        future.result(timeout=30)
    assert text in str(raised.value)
    assert function.__name__ in str(raised.value)
    assert remote(identity, block=block)(1).result(timeout=30) == 1


def test_user_exception_keeps_its_type_and_the_remote_traceback(local, block):
    with pytest.raises(CustomError, match="the user's message") as raised:
        remote(raise_custom, block=block)().result(timeout=30)
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_custom" in cause.text and "CustomError" in cause.text


def test_exception_that_does_not_pickle_becomes_remote_error(local):
    with pytest.raises(RemoteError) as raised:
        remote(raise_unpicklable)().result(timeout=30)
    assert "Unpicklable" in str(raised.value) and "cannot travel" in str(raised.value)


def test_unpicklable_result_names_the_result(local, block):
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
    lock_future = local.submit(identity, 1)
    lock_future.result(timeout=30)
    handle = remote(identity, block=True)
    upstream = handle(1)
    with pytest.raises(SerializationError, match="argument 0"):
        handle([upstream, threading.Lock()]).result(timeout=30)


def test_init_that_raises_fails_every_waiting_call(local):
    def broken_init():
        raise RuntimeError("no data file")

    handle = remote(identity, block=True, init=broken_init, max_workers=2)
    futures = handle.map(range(5))
    for future in futures:
        with pytest.raises(WorkerStartError) as raised:
            future.result(timeout=30)
        assert "no data file" in str(raised.value)
        assert "no data file" in raised.value.stderr


def test_init_must_return_a_dict(local):
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


def test_missing_working_directory(local, tmp_path):
    with pytest.raises(WorkerStartError, match="missing"):
        remote(identity, cwd=str(tmp_path / "missing"))(1).result(timeout=30)


def test_timeout_stops_the_call_and_replaces_the_worker(local, block):
    handle = remote(spin, block=block, max_workers=1, timeout=0.5) if block else \
        remote(spin, timeout=0.5)
    with pytest.raises(CallTimeout, match="timeout=0.5"):
        handle(60).result(timeout=30)
    assert handle(0).result(timeout=30) == 0


def test_retries_rerun_a_call_whose_worker_died(local, block, tmp_path):
    marker = str(tmp_path / "died-once")

    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(9)
        return "second try"

    assert remote(die_once, block=block, retries=1)(marker).result(timeout=30) == "second try"


def test_retries_run_out(local, tmp_path):
    with pytest.raises(WorkerDied, match="exit code 3"):
        remote(exit_code_3, retries=2)().result(timeout=30)


def test_worker_death_does_not_lose_queued_calls(local):
    handle = remote(identity, block=True, max_workers=1)
    dying = remote(exit_code_3, block=True, max_workers=1)
    assert dying.remote_options.pool_key() == handle.remote_options.pool_key()
    futures = [handle(1), dying(), *handle.map(range(10))]
    assert futures[0].result(timeout=30) == 1
    with pytest.raises(WorkerDied):
        futures[1].result(timeout=30)
    assert [f.result(timeout=30) for f in futures[2:]] == list(range(10))


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("signals and pidfds are Linux-only here", allow_module_level=True)


def test_pipelined_calls_blame_only_the_call_that_crashed(local):
    """A worker holds several calls at once; when one kills it, the calls before it keep
    their results and the calls after it run on a new worker."""
    ok = remote(identity, block=True, max_workers=1)
    dying = remote(exit_code_3, block=True, max_workers=1)
    for _ in range(5):
        futures = [ok(1), ok(2), dying(), ok(3), ok(4)]
        assert [f.result(timeout=30) for f in futures[:2]] == [1, 2]
        with pytest.raises(WorkerDied, match="exit_code_3"):
            futures[2].result(timeout=30)
        assert [f.result(timeout=30) for f in futures[3:]] == [3, 4]


def big_result(n):
    return bytes(n)


def test_a_result_lost_with_its_worker_is_recomputed_not_blamed(local):
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


def test_a_crash_inside_a_batch_of_short_calls_fails_only_that_call(local):
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
