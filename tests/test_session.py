"""A session behaves as the standard library's executors do."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import threading
import weakref

import pytest

import remotefn
from remotefn import remote
from remotefn import backends
from remotefn.sessions import registry
from remotefn.sessions.defaults import current, default
from remotefn.testing import probe
from helpers import alive, wait_for_file, wait_until


def identity(x):
    return x


def keywords(fn=None, self=None, **rest):
    return {"fn": fn, "self": self, **rest}


def wait_for(event_path, value):
    """Block until the file at event_path exists, then return value."""
    wait_for_file(event_path)
    return value


def test_submit_plain_function(local):
    assert local.submit(pow, 2, 10).result(timeout=30) == 1024


def test_submit_after_shutdown_raises():
    s = remotefn.session("local", forward_output=False)
    s.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        s.submit(identity, 1)


def test_keywords_named_fn_and_self_pass_through(local):
    result = local.submit(keywords, fn="a", self="b", cores=7).result(timeout=30)
    assert result == {"fn": "a", "self": "b", "cores": 7}


def test_map_keeps_order_with_chunksize_and_timeout(local):
    assert list(local.map(identity, range(25), timeout=60)) == list(range(25))
    assert list(local.map(pow, range(10), [2] * 10, chunksize=3)) == [i ** 2 for i in range(10)]
    with pytest.raises(ValueError, match="chunksize must be >= 1, got 0"):
        local.map(identity, [1], chunksize=0)


def test_map_timeout_raises(local, tmp_path):
    results = local.map(wait_for, [str(tmp_path / "never")], [1], timeout=0.2)
    with pytest.raises(TimeoutError):
        list(results)
    (tmp_path / "never").touch()  # the call may finish now; the session waits for it


def test_wait_and_as_completed(local):
    handle = remote(identity, block=True, max_workers=2)
    futures = [local.submit(handle, i) for i in range(10)]
    done, not_done = concurrent.futures.wait(futures, timeout=60)
    assert len(done) == 10 and not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == list(range(10))


def test_shutdown_cancel_futures_cancels_queued_calls_and_waits_for_running_ones(tmp_path):
    gate = tmp_path / "gate"
    s = remotefn.session("local", max_cores=1, forward_output=False)
    try:
        handle = remote(wait_for, block=True, max_workers=1)
        running = s.submit(handle, str(gate), "first")
        queued = [s.submit(handle, str(gate), i) for i in range(5)]
        # Like ProcessPoolExecutor, a worker is handed its next calls ahead of time (two
        # here); those are running as far as cancel() is concerned. The rest wait here.
        wait_until(queued[1].running, what="the worker to hold three calls")
        assert not queued[2].running()
        shutting = threading.Thread(target=s.shutdown, kwargs={"wait": True,
                                                              "cancel_futures": True})
        shutting.start()
        wait_until(queued[-1].cancelled, what="shutdown to cancel the calls not handed out")
        assert shutting.is_alive()  # it waits for the running calls, which wait for the gate
        gate.touch()
        shutting.join(60)
        assert not shutting.is_alive() and probe(s).stopped
        assert running.result() == "first"
        assert all(f.cancelled() for f in queued[2:])
        assert [f.result() for f in queued[:2]] == [0, 1]
    finally:
        gate.touch()
        s.shutdown()


def getpid():
    return os.getpid()


def test_leaving_the_with_block_waits_for_its_calls_then_stops_the_workers(tmp_path):
    """The gate the calls wait for opens only once the session is being left, so the block
    must wait: calls running, handed ahead and not yet started all finish, then the workers
    stop."""
    gate = tmp_path / "gate"
    with remotefn.session("local", max_cores=1, forward_output=False) as session:
        handle = remote(wait_for, block=True, max_workers=1)
        futures = [handle(str(gate), i) for i in range(4)] + [remote(getpid)()]
        wait_until(futures[0].running, what="the first call to run")
        worker = futures[0].info.pid

        def open_gate_once_leaving():
            wait_until(lambda: session.closed, what="the with block to be left")
            gate.touch()

        opener = threading.Thread(target=open_gate_once_leaving)
        opener.start()
    opener.join(60)
    assert [f.result(timeout=0) for f in futures[:4]] == [0, 1, 2, 3]
    assert futures[4].result(timeout=0) != worker  # it had not started when the block ended
    assert not alive(worker) and probe(session).stopped


def test_shutdown_without_waiting_returns_at_once_and_the_calls_still_finish(tmp_path):
    gate = tmp_path / "gate"
    s = remotefn.session("local", forward_output=False)
    try:
        future = s.submit(wait_for, str(gate), 1)
        wait_until(future.running, what="the call to run")
        s.shutdown(wait=False)  # returns while the call waits for the gate
        assert not future.done() and not probe(s).stopped
        with pytest.raises(RuntimeError, match="shut down"):
            s.submit(identity, 1)
        gate.touch()
        assert future.result(timeout=60) == 1
        wait_until(lambda: probe(s).stopped, what="the session to stop its workers")
    finally:
        gate.touch()
        s.shutdown()


def test_cancel_a_queued_call(tmp_path):
    gate = tmp_path / "gate"
    with remotefn.session("local", max_cores=1, forward_output=False) as s:
        handle = remote(wait_for, block=True, max_workers=1)
        first = s.submit(handle, str(gate), 1)
        wait_until(first.running, what="the first call to start")
        others = [s.submit(handle, str(gate), i) for i in range(2, 6)]
        assert others[-1].cancel()
        gate.touch()
        assert [f.result(timeout=30) for f in [first, *others[:-1]]] == [1, 2, 3, 4]
        assert others[-1].cancelled()


def test_no_reference_to_a_finished_call_is_kept(local):
    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    future = local.submit(identity, payload)
    result = future.result(timeout=30)
    del payload, future, result
    gc.collect()
    assert ref() is None


def test_handles_submit_to_the_session_of_the_with_block():
    with remotefn.session("local", forward_output=False) as outer:
        assert current() is outer
        with remotefn.session("local", forward_output=False) as inner:
            assert current() is inner
            assert remote(identity)(1).result(timeout=30) == 1
            assert (probe(inner).pools, probe(outer).pools) == (1, 0)  # it ran in inner
        assert current() is outer
        assert remote(identity)(2).result(timeout=30) == 2
        assert probe(outer).pools == 1
    assert registry.current_session.get() is None


@pytest.mark.parametrize("environ, backend", [
    ({}, "local"),
    ({"SLURM_JOB_ID": "12"}, "slurm"),
    ({"FLUX_URI": "local:///tmp/flux"}, "flux"),
    ({"FLUX_URI": "x", "SLURM_JOB_ID": "12"}, "flux"),
    ({"SLURM_JOB_ID": "12", "REMOTEFN_BACKEND": "local"}, "local"),
])
def test_default_backend_comes_from_the_environment(environ, backend):
    assert backends.detect(environ) == backend


def test_default_session_is_created_on_first_call_and_reused():
    try:
        handle = remote(os.getpid)
        first = handle()
        assert first.result(timeout=30) != os.getpid()
        assert default() is default()
        assert default().backend.name == "local"
    finally:
        registry.shutdown_default()


def test_futures_carry_where_and_when_the_call_ran(local):
    future = local.submit(os.getpid)
    pid = future.result(timeout=30)
    info = future.info
    assert info.pid == pid and info.worker_id.startswith("w")
    assert info.host == os.uname().nodename
    assert info.queued <= info.started <= info.finished
    assert info.runtime >= 0 and info.function.endswith("getpid")


def test_resources_reports_capacity_and_workers(local):
    handle = remote(os.getpid, block=True, max_workers=1)
    future = local.submit(handle)
    pid = future.result(timeout=30)
    report = local.resources()
    assert report["backend"] == "local"
    assert report["cores"] == {"total": 4, "in_use": 1, "free": 3}
    assert report["gpus"] == {"total": 0, "in_use": 0, "free": 0}
    [worker] = report["workers"]
    assert (worker["state"], worker["pid"], worker["host"]) == ("ready", pid, os.uname().nodename)
    assert (worker["cores"], worker["gpus"]) == (1, [])
    assert worker["worker"] == future.info.worker_id and "block pool" in worker["pool"]
    assert report["running"] == []


def test_python_m_remotefn_shows_the_local_capacity():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "remotefn", "--backend", "local"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "backend: local" in out
    assert f"cores: {len(os.sched_getaffinity(0))} total" in out


def test_a_call_reaching_a_stopped_hub_fails_instead_of_waiting():
    s = remotefn.session("local", forward_output=False)
    assert probe(s).stop_hub(timeout=30)
    future = s.submit(identity, 1)  # the session was not shut down, but its hub is gone
    with pytest.raises(RuntimeError, match="stopped"):
        future.result(timeout=30)
    s.shutdown()


def scaled(array, factor):
    array *= factor  # the worker may change what it received
    return array


def test_arrays_are_sent_as_they_were_at_the_call_and_arrive_writable(local):
    np = pytest.importorskip("numpy")
    handle = remote(scaled, block=True, max_workers=1)
    original = np.arange(1 << 20, dtype=np.float64)  # 8 MiB: travels as its own frame
    data = original.copy()
    future = handle(data, 2.0)
    data[:] = -1  # changed right after the call: the call still sees the values it was given
    result = future.result(timeout=60)
    np.testing.assert_array_equal(result, original * 2)
    result += 1  # and the result is an ordinary writable array
    assert result.flags.writeable and result[1] == 3.0


def test_calls_from_many_threads_at_once_all_complete(local):
    """Submitting threads race with the session's own thread; no call may be left behind."""
    handle = remote(identity, block=True, max_workers=2)
    results: dict[int, list[int]] = {}

    def submitter(thread: int) -> None:
        values = []
        for start in range(0, 400, 40):
            futures = [local.submit(handle, thread * 1000 + i) for i in range(start, start + 40)]
            values.extend(f.result(timeout=60) for f in futures)
            values.append(local.submit(handle, -thread).result(timeout=60))  # one at a time
        results[thread] = values

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for t in range(4):
        expected = []
        for start in range(0, 400, 40):
            expected.extend(t * 1000 + i for i in range(start, start + 40))
            expected.append(-t)
        assert results[t] == expected


def test_threads_started_in_a_with_block_submit_to_its_session():
    """A thread pool inside the block does not see the context variable; its calls still go
    to the open session, not to a default session of their own."""
    with remotefn.session("local", forward_output=False) as session:
        handle = remote(identity, block=True, max_workers=1)
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            futures = list(threads.map(lambda x: handle(x), range(6)))
            sessions = list(threads.map(lambda _: current(), range(2)))
        assert [f.result(timeout=30) for f in futures] == list(range(6))
        assert all(s is session for s in sessions)
        assert {f.info.worker_id for f in futures} <= {w["worker"] for w in
                                                       session.resources()["workers"]}
    assert registry.open_blocks() == []


# -- an explicit default, for notebooks ------------------------------------------------------


def test_an_activated_session_takes_calls_outside_with_blocks_until_shut_down():
    registry.shutdown_default()
    chosen = remotefn.session("local", max_cores=2, forward_output=False)
    try:
        assert registry.default_session is not chosen  # opening it changes nothing
        assert chosen.activate() is chosen
        assert chosen.activate() is chosen  # activating it again changes nothing either
        assert current() is chosen
        future = remote(os.getpid)()
        assert future.result(timeout=30) != os.getpid()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(current()))
        thread.start()
        thread.join()
        assert seen == [chosen]
        with remotefn.session("local", max_cores=1, forward_output=False) as inner:
            assert current() is inner
        assert current() is chosen
    finally:
        chosen.shutdown()
    try:
        assert current() is not chosen
    finally:
        registry.shutdown_default()


def test_a_second_activation_is_refused_with_what_to_do():
    registry.shutdown_default()
    first = remotefn.session("local", max_cores=1, forward_output=False)
    second = remotefn.session("local", max_cores=1, forward_output=False)
    try:
        remotefn.set_default(first)
        with pytest.raises(RuntimeError, match=r"already the default session; shut it down "
                                               r"first \(remotefn.current\(\).shutdown\(\)"):
            second.activate()
        assert current() is first
        first.shutdown()
        assert second.activate() is second and current() is second
    finally:
        first.shutdown()
        second.shutdown()
    with pytest.raises(RuntimeError, match="was shut down"):
        second.activate()


def test_an_unknown_setting_names_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown session setting 'max_core' for the local "
                                        r"backend; valid settings: .*forward_output.*max_cores"):
        remotefn.session("local", max_core=2)


# -- gather and the short-calls warning -------------------------------------------------------


def test_gather_returns_values_in_order_and_raises_the_first_error(local, tmp_path):
    import operator

    futures = [local.submit(pow, i, 2) for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        futures.append(pool.submit(pow, 7, 2))
        assert remotefn.gather(futures) == [0, 1, 4, 9, 16, 25, 49]
    gate = str(tmp_path / "gate")
    slow = local.submit(wait_for_file, gate)
    failing = [local.submit(operator.truediv, 1, 0), local.submit(operator.getitem, [], 1)]
    concurrent.futures.wait(failing)
    with pytest.raises(ZeroDivisionError):  # at once: slow is still running
        remotefn.gather([slow, *failing])
    with pytest.raises(TimeoutError, match="1 of 1 futures"):
        remotefn.gather([slow], timeout=0.1)
    open(gate, "w").close()
    assert remotefn.gather([slow]) == [None]


def test_many_short_one_shot_calls_warn_once_saying_what_to_change():
    import warnings

    from sample_module import pooled_square

    with remotefn.session("local", max_cores=4, forward_output=False) as session:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            remotefn.gather(pooled_square.map(range(100)))  # a block pool: no warning
            assert not [w for w in caught if "block=True" in str(w.message)]
            # Builtins: nothing to import in the worker, so each call is short on any machine.
            remotefn.gather(session.submit(pow, i, 2) for i in range(50))
            remotefn.gather(session.submit(pow, i, 2) for i in range(60))
        found = [w for w in caught if "block=True" in str(w.message)]
    assert len(found) == 1 and found[0].category is RuntimeWarning
    assert "started for it alone (block=False, the default)" in str(found[0].message)
