"""A thread waiting for its call: however the call ends, ``result()`` returns or raises.

A call sent straight to an idle block worker is usually waited for by the thread that made
it, which then reads the answer itself; these tests end such calls in the ways that do not
come through that answer (a timeout of the wait, the worker's death while a process it forked
keeps its connection open) and run done-callbacks there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from remotefn import WorkerDied, remote
from remotefn.hub import direct
from helpers import alive, read_pid, wait_for_file, wait_until, write_pid


def pid():
    return os.getpid()


def value_after(gate, value):
    wait_for_file(gate)
    return value


def die_leaving_a_child(path):
    """Exit, leaving a child that holds this worker's connection open and writes its pid."""
    if os.fork() == 0:
        write_pid(path)
        time.sleep(120)
        os._exit(0)
    read_pid(path)
    os._exit(3)


def test_a_wait_that_times_out_leaves_the_call_running_and_its_result_arrives(local, tmp_path):
    gate = tmp_path / "gate"
    handle = remote(value_after, block=True, max_workers=1)
    worker = remote(pid, block=True, max_workers=1)().result(timeout=60)
    future = handle(str(gate), 5)  # to the idle worker at once
    begun = time.monotonic()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.3)
    assert 0.3 <= time.monotonic() - begun < 10
    gate.touch()
    assert future.result(timeout=60) == 5
    assert future.info.pid == worker
    assert [handle(str(gate), i).result(timeout=60) for i in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("poll_first, timeout, within", [(30, 0.05, 10), (0.01, 0.3, 10)],
                         ids=["ends-while-polling", "ends-after-polling"])
def test_a_wait_that_polls_first_ends_at_its_timeout_and_the_result_still_arrives(
        local, tmp_path, monkeypatch, poll_first, timeout, within):
    """A thread waiting for a short call polls before it sleeps (here for ``poll_first``
    seconds, and whatever the pool's calls took); its timeout still ends the wait on time."""
    monkeypatch.setattr(direct, "SHORT_CALL", 1e9)
    monkeypatch.setattr(direct, "POLL_FIRST", poll_first)
    monkeypatch.setattr(direct, "SEVERAL_CPUS", True)
    gate = tmp_path / "gate"
    quick = remote(pid, block=True, max_workers=1)
    worker = quick().result(timeout=60)  # the pool has a measured run time
    future = remote(value_after, block=True, max_workers=1)(str(gate), 5)
    begun = time.monotonic()
    with pytest.raises(TimeoutError):
        future.result(timeout=timeout)
    assert timeout <= time.monotonic() - begun < within
    gate.touch()
    assert future.result(timeout=60) == 5
    assert future.info.pid == worker
    assert quick().result(timeout=60) == worker


def test_a_worker_that_dies_while_its_child_keeps_the_connection_fails_the_waiting_call(
        local, tmp_path):
    child = tmp_path / "child"
    remote(pid, block=True, max_workers=1)().result(timeout=60)  # the worker is up and idle
    future = remote(die_leaving_a_child, block=True, max_workers=1)(str(child))
    begun = time.monotonic()
    try:
        with pytest.raises(WorkerDied, match="exit code 3"):
            future.result(timeout=60)
        assert time.monotonic() - begun < 30  # not at the end of the wait's timeout
    finally:
        orphan = read_pid(str(child))
        os.kill(orphan, signal.SIGKILL)
        wait_until(lambda: not alive(orphan), what="the worker's child to be gone")
    assert remote(pid, block=True, max_workers=1)().result(timeout=60) != future.info.pid


def test_done_callbacks_run_while_the_caller_waits_and_may_submit_but_not_wait(local,
                                                                                tmp_path):
    gate = tmp_path / "gate"
    handle = remote(value_after, block=True, max_workers=2)
    handle(str(gate), 0)  # starts the pool
    gate.touch()
    handle(str(gate), 0).result(timeout=60)
    pending = remote(value_after)(str(tmp_path / "later"), 9)
    seen: list[object] = []

    def callback(future):
        try:
            pending.result()
        except RuntimeError as error:
            seen.append(error)
        seen.append(handle(str(gate), future.result() + 1))

    future = handle(str(gate), 1)
    future.add_done_callback(callback)
    assert future.result(timeout=60) == 1
    wait_until(lambda: len(seen) == 2, what="the callback to run")
    assert "done-callback" in str(seen[0])
    assert seen[1].result(timeout=60) == 2
    (tmp_path / "later").touch()
    assert pending.result(timeout=60) == 9


def test_several_threads_wait_for_one_call_each_as_it_asked(local, tmp_path):
    """Threads waiting on one future at once: one that gives up times out alone, the others
    all get the value when it arrives, and concurrent.futures.wait sees it done."""
    import concurrent.futures
    import threading

    gate = tmp_path / "gate"
    future = remote(value_after, block=True, max_workers=1)(str(gate), 7)
    results: list[object] = []
    waiters = [threading.Thread(target=lambda: results.append(future.result(timeout=60)))
               for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.2)
    done, _ = concurrent.futures.wait([future], timeout=0.1)
    assert not done
    gate.touch()
    for waiter in waiters:
        waiter.join(timeout=60)
    assert results == [7, 7, 7, 7]
    done, _ = concurrent.futures.wait([future], timeout=60)
    assert done == {future}


_SHUTDOWN_IN_CALLBACK = textwrap.dedent("""
    import os, sys, threading
    import remotefn
    from remotefn import remote
    from helpers import wait_until
    from test_waiting import pid, value_after

    where = []
    main = threading.main_thread()

    def waiting():
        \"\"\"Whether the main thread waits: reading its result itself, or as usual.\"\"\"
        frame = sys._current_frames().get(main.ident)
        while frame is not None:
            name = frame.f_code.co_name
            if name == "read_own_result" or (name == "wait" and frame.f_code.co_filename.endswith(
                    ("threading.py", os.path.join("remotefn", "future.py")))):
                return True
            frame = frame.f_back
        return False

    def open_gate(gate):
        wait_until(waiting, what="the caller to wait")
        open(gate, "w").close()

    with remotefn.session("local", max_cores=1, forward_output=False) as session:
        handle = remote(value_after, block=True, max_workers=1)
        remote(pid, block=True, max_workers=1)().result(timeout=60)  # up and idle

        def callback(done):
            where.append(threading.current_thread().name)
            if threading.current_thread() is main:  # the caller read its result itself
                session.shutdown()  # wait=True, in a done-callback

        for attempt in range(20):  # the caller reads it itself unless the hub is busy then
            gate = f"{sys.argv[1]}-{attempt}"
            future = handle(gate, 7)  # to the idle worker at once
            future.add_done_callback(callback)
            threading.Thread(target=open_gate, args=(gate,), daemon=True).start()
            assert future.result(timeout=60) == 7
            if where[-1] == "MainThread":
                break
        print("callback ran in", where[-1], flush=True)
""")


def test_shutdown_in_a_done_callback_run_by_the_waiting_thread_returns(tmp_path):
    """The thread that reads its own result runs done-callbacks holding the hub's lock; a
    ``session.shutdown()`` there must not wait for the hub (which waits for that lock)."""
    script = subprocess.run(
        [sys.executable, "-c", _SHUTDOWN_IN_CALLBACK, str(tmp_path / "gate")],
        capture_output=True, text=True, timeout=60, cwd=os.path.dirname(__file__),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert script.returncode == 0, script.stderr
    assert "callback ran in MainThread" in script.stdout


class _Interrupted(Exception):
    """What the test's SIGINT handler raises (a KeyboardInterrupt would stop pytest)."""


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_a_wait_interrupted_while_it_takes_the_lock_back_leaves_no_waiter_behind():
    """Ctrl-C arriving while a timed-out ``result()`` waits to take its future's lock back
    (held by another thread: the hub setting a result, a ``wait()`` adding its waiter) is
    raised once the lock is held: the thread must still leave the futures' shared table of
    waiting threads, whose entry would otherwise outlive the future (kept by its id)."""
    import gc
    import inspect
    import threading

    from remotefn.future import _WAITING, CallInfo, RemoteFuture, _Condition

    def interrupt(signum, frame):
        raise _Interrupted

    future = RemoteFuture(CallInfo("f", 1, 0.0))
    key = id(future._condition)
    main = threading.get_ident()

    lines, first = inspect.getsourcelines(_Condition.wait)
    taking_back = first + next(i for i, line in enumerate(lines) if "_acquire_restore" in line)

    def taking_the_lock_back():
        frame = sys._current_frames().get(main)
        return frame is not None and frame.f_code is _Condition.wait.__code__ \
            and frame.f_lineno == taking_back

    def hold_the_lock():
        wait_until(lambda: key in _WAITING, what="the main thread to wait")
        with future._condition:  # the main thread's wait times out, then waits for the lock
            wait_until(taking_the_lock_back, what="the main thread to take the lock back")
            signal.pthread_kill(main, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, interrupt)
    holder = threading.Thread(target=hold_the_lock)
    try:
        holder.start()
        with pytest.raises(_Interrupted):
            future.result(timeout=0.05)
    finally:
        holder.join(timeout=60)
        signal.signal(signal.SIGINT, previous)
    assert _WAITING.get(key) is None
    future = None  # type: ignore[assignment]  # its condition freed with it
    gc.collect()
    assert key not in _WAITING
