"""Block pools, init, worker environment and the local backend's command line."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest

import remotefn
from remotefn import remote
from remotefn.backends.base import THREAD_VARIABLES, WorkerSpec, worker_environment
from remotefn.backends.local import LocalBackend
from remotefn.options import resolve
from remotefn.testing import probe
from helpers import wait_for_file, wait_until


def load():
    return {"table": [1, 2, 3], "scale": 10, "unused": object.__name__}


def lookup(i, table, scale=1):
    return table[i] * scale


def getpid():
    return os.getpid()


def environment(*names):
    return {name: os.environ.get(name) for name in names}


def echo(array):
    array += 1  # arrives writable
    return array


def test_init_fills_missing_keywords_and_calls_win(local):
    handle = remote(lookup, block=True, init=load, max_workers=1)
    assert handle(0).result(timeout=30) == 10
    assert handle(1, scale=2).result(timeout=30) == 4
    assert handle(2, [7, 8, 9]).result(timeout=30) == 90
    assert handle(2, table=[5, 5, 5], scale=3).result(timeout=30) == 15


def test_init_runs_once_per_worker(local, tmp_path):
    log = tmp_path / "init.log"

    def counted_init():
        with open(log, "a") as file:
            file.write(f"{os.getpid()}\n")
        return {}

    handle = remote(getpid, block=True, init=counted_init, max_workers=2)
    pids = {f.result(timeout=30) for f in [handle() for _ in range(40)]}
    assert sorted(log.read_text().split()) == sorted(str(pid) for pid in pids)


def test_block_pool_reuses_at_most_max_workers(local):
    handle = remote(getpid, block=True, max_workers=2)
    pids = {f.result(timeout=30) for f in [handle() for _ in range(50)]}
    assert 1 <= len(pids) <= 2


def test_one_shot_calls_get_a_fresh_worker_each(local):
    handle = remote(getpid)
    pids = [f.result(timeout=30) for f in [handle() for _ in range(4)]]
    assert len(set(pids)) == 4


def test_threads_per_core_sets_thread_variables_and_env_wins(local):
    handle = remote(environment, threads_per_core=2, env={"MKL_NUM_THREADS": "1", "MY": "x"})
    seen = handle(*THREAD_VARIABLES, "MY").result(timeout=30)
    assert seen == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "2", "NUMEXPR_NUM_THREADS": "2", "MY": "x"}
    assert "MY" not in os.environ


def test_cwd_option(local, tmp_path):
    assert remote(os.getcwd, cwd=str(tmp_path))().result(timeout=30) == str(tmp_path)


@pytest.mark.parametrize("block", [False, True])
def test_numpy_arrays_travel_out_of_band_and_arrive_writable(local, block):
    array = np.arange(1_000_000, dtype=np.float64)
    result = remote(echo, block=block)(array).result(timeout=30)
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array + 1)
    assert array[0] == 0  # the caller's array is untouched


def test_local_command_line_is_a_pure_function():
    backend = LocalBackend(python="/opt/python3")
    spec = WorkerSpec("w7", resolve({"threads_per_core": 3}), {"REMOTEFN_KEY": "secret"})
    assert backend.command(spec) == ["/opt/python3", "-m", "remotefn.worker"]
    assert "secret" not in " ".join(backend.command(spec))


def test_worker_environment_layers():
    spec = WorkerSpec("w1", resolve({"threads_per_core": 3, "env": {"OMP_NUM_THREADS": "5"}}),
                      {"REMOTEFN_WORKER": "w1"})
    base = {"PATH": "/bin", "REMOTEFN_KEY": "stale", "PYTHONPATH": "/extra"}
    env = worker_environment(spec, base)
    assert env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == "5" and env["MKL_NUM_THREADS"] == "3"
    assert env["REMOTEFN_WORKER"] == "w1" and "REMOTEFN_KEY" not in env
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == "/extra"
    assert all(p in env["PYTHONPATH"].split(os.pathsep) for p in sys.path if p)


def test_local_capacity_and_address(tmp_path):
    assert LocalBackend(max_cores=64).capacity().cpus == 64
    assert LocalBackend().capacity().cpus == len(os.sched_getaffinity(0))
    assert LocalBackend().address(str(tmp_path)) == f"ipc://{tmp_path}/session"
    assert LocalBackend(transport="tcp", interface="10.0.0.1").address("x") == "tcp://10.0.0.1"


def parent_pid():
    return os.getppid()


def test_single_rank_workers_are_forked_from_the_fork_server():
    import psutil

    with remotefn.session("local", forward_output=False) as session:
        parent = remote(parent_pid)().result(timeout=30)
        server = session.backend.fork_server.process.pid
        assert parent == server
        assert "remotefn.worker.forkserver" in psutil.Process(server).cmdline()


@pytest.mark.parametrize("settings, options", [
    ({"fork_server": False}, {}),
    ({}, {"env": {"PYTHONHASHSEED": "7"}}),
])
def test_workers_are_exec_ed_when_forking_would_be_wrong(settings, options):
    with remotefn.session("local", forward_output=False, **settings):
        assert remote(parent_pid, **options)().result(timeout=30) == os.getpid()


def test_forked_workers_report_their_exit_codes(local):
    from remotefn import WorkerDied

    def exit_5():
        os._exit(5)

    with pytest.raises(WorkerDied, match="exit code 5"):
        remote(exit_5)().result(timeout=30)


class CountingCallable:
    """Counts how often it is pickled (in this process)."""

    pickled = 0

    def __call__(self, x):
        return x + 1

    def __reduce__(self):
        CountingCallable.pickled += 1
        return (CountingCallable, ())


def test_a_function_is_pickled_once_and_then_referred_to_by_digest(local):
    import threading

    function = CountingCallable()
    handle = remote(function, block=True, max_workers=2)
    threads = threading.active_count()
    assert [f.result(timeout=30) for f in handle.map(range(50))] == list(range(1, 51))
    assert CountingCallable.pickled == 1
    assert threading.active_count() == threads  # no thread per call


def test_arguments_are_pickled_when_the_call_is_made(local):
    """Changing an argument after the call does not change what the call receives (the
    call goes to a pool whose worker is not started yet, so it is sent later)."""
    table = {"rows": [1, 2]}
    future = remote(gated, block=True)(table)
    table["rows"].append(3)
    assert future.result(timeout=30) == {"rows": [1, 2]}


def test_plain_data_goes_through_the_standard_pickler_and_the_rest_through_cloudpickle():
    from remotefn.protocol import pickling

    plain = (1, "a", [2.0, None], {"k": b"v"})
    assert pickling.dumps(plain) == [pickle.dumps(plain, protocol=5)]
    square = pickling.loads(pickling.dumps(lambda x: x * x))  # by value: cloudpickle
    assert square(3) == 9


def test_large_arrays_travel_as_out_of_band_frames():
    from remotefn.protocol import pickling

    array = np.ones(1 << 20)
    frames = pickling.dumps(("x", array))
    assert len(frames) == 2 and memoryview(frames[1]).nbytes == array.nbytes
    # A snapshot taken at the call, not a view the caller could still change.
    assert not np.shares_memory(np.frombuffer(frames[1], dtype=array.dtype), array)
    text, copy = pickling.loads([frames[0], bytearray(frames[1])])
    assert text == "x" and copy.flags.writeable and np.array_equal(copy, array)


def test_closing_a_session_prints_nothing(capfd):
    for _ in range(3):
        with remotefn.session("local", forward_output=False):
            [f.result(timeout=30) for f in [remote(parent_pid)() for _ in range(4)]]
    assert "Traceback" not in capfd.readouterr().err


def gated(x, gate=None):
    if gate:
        wait_for_file(gate)
    return x


def handed_out(session, futures):
    """Once the hub has placed every call (each one handed to the worker, so running, or
    waiting in the session): how many the worker holds."""
    wait_until(lambda: probe(session).queued + sum(f.running() for f in futures) == len(futures),
               what="the hub to place every call")
    return sum(f.running() for f in futures)


def test_a_block_worker_holds_the_call_it_runs_and_at_most_two_ahead(tmp_path):
    """Calls of more than about 0.7 ms: the worker is handed two calls ahead of the one it
    runs (they count as running); the rest wait in the session."""
    gate = str(tmp_path / "gate")
    with remotefn.session("local", max_cores=1, forward_output=False) as session:
        handle = remote(gated, block=True, max_workers=1)
        assert handle(-1).result(timeout=30) == -1
        futures = [handle(0, gate), *[handle(i) for i in range(1, 10)]]
        assert handed_out(session, futures) == 3
        open(gate, "w").close()
        assert [f.result(timeout=30) for f in futures] == list(range(10))


def test_a_block_worker_of_short_calls_is_handed_at_most_32_at_a_time(tmp_path):
    """Once the pool's calls are known to be short, a worker holds many calls at once (its
    batch), never more than 32."""
    gate = str(tmp_path / "gate")
    with remotefn.session("local", max_cores=1, forward_output=False) as session:
        handle = remote(gated, block=True, max_workers=1)
        assert [f.result(timeout=30) for f in handle.map(range(300))] == list(range(300))
        futures = [handle(0, gate), *handle.map(range(1, 101))]
        assert 3 < handed_out(session, futures) <= 32
        open(gate, "w").close()
        assert [f.result(timeout=30) for f in futures] == list(range(101))
