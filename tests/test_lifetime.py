"""No hang and no orphan: shutdown, errors, Ctrl-C and a killed caller leave no worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import remotefn
from remotefn import RemoteFnError, remote
from remotefn.testing import probe
from helpers import alive, read_pid, wait_for_file, wait_until, write_pid


def getpid():
    return os.getpid()


def nested_pids():
    """Runs in a worker and calls another handle from there."""
    inner = remote(getpid)
    return os.getpid(), inner().result(timeout=30)


def caller_script(body: str) -> str:
    """A script that runs ``body``; ``hold(path)``, run remotely, writes its worker's pid to
    ``path`` and then runs forever."""
    return textwrap.dedent(f"""
        import os, sys, threading
        import remotefn
        from remotefn import remote
        from helpers import write_pid

        def getpid():
            return os.getpid()

        def hold(path):
            write_pid(path)
            threading.Event().wait()

        {textwrap.indent(textwrap.dedent(body), '        ').strip()}
    """)


def start_caller(body: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", caller_script(body)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def descendants(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def hold(path):
    """Writes this worker's pid to ``path``, then never returns."""
    write_pid(path)
    threading.Event().wait()


def test_shutdown_stops_block_workers():
    session = remotefn.session("local", forward_output=False)
    handle = remote(getpid, block=True, max_workers=2)
    pids = {session.submit(handle).result(timeout=30) for _ in range(4)}
    assert all(alive(pid) for pid in pids)
    session.shutdown()
    assert not any(alive(pid) for pid in pids)
    assert probe(session).stopped


def test_an_error_in_the_with_block_cancels_unstarted_calls_and_kills_running_workers(
        tmp_path):
    pidfile = str(tmp_path / "pid")
    with pytest.raises(KeyError):
        with remotefn.session("local", max_cores=1, forward_output=False):
            running = remote(hold)(pidfile)
            waiting = [remote(getpid)() for _ in range(3)]
            worker = read_pid(pidfile)
            raise KeyError("user error")
    assert not alive(worker)  # killed, though its call never returns
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(RemoteFnError, match="shut down"):
        running.result(timeout=0)


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_ctrl_c_in_the_caller_leaves_no_worker(tmp_path, block):
    """Ctrl-C while a call runs: the caller kills and reaps every process it started (the
    worker running the call, the fork server) before it exits."""
    pidfile = str(tmp_path / "pid")
    caller = start_caller(f"""
        with remotefn.session("local", forward_output=False):
            remote(hold, block={block})({pidfile!r}).result()
    """)
    worker = read_pid(pidfile, process=caller)
    started = descendants(caller.pid)
    assert worker in started and alive(worker)
    caller.send_signal(signal.SIGINT)
    assert caller.wait(timeout=60) != 0
    assert [pid for pid in started if alive(pid)] == []


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "exec-ed"])
def test_workers_of_a_killed_caller_exit_on_their_own(tmp_path, fork_server):
    """A session killed with SIGKILL cleans nothing up; its workers (a block worker and a
    one-shot worker, both running a call) notice and exit."""
    block_pid, one_shot_pid = str(tmp_path / "block"), str(tmp_path / "one-shot")
    caller = start_caller(f"""
        with remotefn.session("local", forward_output=False, fork_server={fork_server}):
            remote(hold, block=True, max_workers=1)({block_pid!r})
            remote(hold)({one_shot_pid!r})
            threading.Event().wait()
    """)
    workers = [read_pid(block_pid, process=caller), read_pid(one_shot_pid, process=caller)]
    started = descendants(caller.pid)
    assert set(workers) <= set(started) and all(alive(pid) for pid in workers)
    caller.kill()
    caller.wait(timeout=60)
    # A liveness bound only; how soon they exit rests on the watchdog's constants (see
    # test_the_watchdog_gives_up_on_a_silent_session_within_five_seconds and the tests after).
    wait_until(lambda: not any(alive(pid) for pid in started), timeout=60,
               what="the workers of a killed session to exit")


def test_the_watchdog_gives_up_on_a_silent_session_within_five_seconds():
    """A worker on ZeroMQ has libzmq ping its session every HEARTBEAT_INTERVAL and drop the
    connection once nothing came for SESSION_TIMEOUT after a PING; it exits when no new
    handshake follows within RECONNECT_GRACE. A worker on a socket pair sees the session's end
    close at once. Either also exits within HEARTBEAT_INTERVAL once the process that started
    it is gone."""
    from remotefn.worker import watchdog

    assert watchdog.HEARTBEAT_INTERVAL + watchdog.SESSION_TIMEOUT \
        + watchdog.RECONNECT_GRACE <= 5


def pid_until(path, gate):
    """Writes this worker's pid to ``path``, then returns once ``gate`` exists."""
    write_pid(path)
    wait_for_file(gate)


def test_a_worker_on_zeromq_holds_one_connection_to_its_session(tmp_path):
    """Calls, results and heartbeats share the worker's one CURVE connection (one handshake
    per worker), and the session answers the heartbeats in libzmq's I/O thread."""
    pidfile, gate = str(tmp_path / "pid"), tmp_path / "gate"
    with remotefn.session("local", transport="tcp", fork_server=False,
                          forward_output=False) as session:
        future = remote(pid_until)(pidfile, str(gate))
        worker = read_pid(pidfile)
        port = int(probe(session).address.rsplit(":", 1)[1])
        connections = [c for c in psutil.Process(worker).net_connections(kind="inet")
                       if c.status == psutil.CONN_ESTABLISHED]
        threads = {thread.name for thread in threading.enumerate()}
        gate.touch()
        future.result(timeout=60)
    assert [c.raddr.port for c in connections] == [port]
    assert not any("heartbeat" in name for name in threads)


def heavy_modules():
    """Runs in a worker: which of the modules a watchdog could pull in are loaded."""
    import sys

    return sorted(name for name in ("asyncio", "zmq.asyncio", "zmq.utils.monitor")
                  if name in sys.modules)


def test_the_watchdog_of_a_worker_on_zeromq_imports_no_asyncio():
    """pyzmq's monitor parser imports asyncio: about 25 ms of CPU in every worker, a fifth of
    a one-shot Flux job's rate."""
    with remotefn.session("local", fork_server=False, forward_output=False):
        assert remote(heavy_modules)().result(timeout=60) == []


def _exit_delay(caller: subprocess.Popen, worker: int, stop: signal.Signals) -> float:
    """Seconds from sending ``stop`` to the caller until ``worker`` has exited."""
    stopped = time.monotonic()
    caller.send_signal(stop)
    wait_until(lambda: not alive(worker), timeout=60, what="the worker to exit")
    return time.monotonic() - stopped


@pytest.mark.parametrize("cores", [1, 2], ids=["exec-ed", "mpi-ranks"])
def test_a_worker_on_zeromq_of_a_killed_session_exits_within_the_reconnect_grace(
        tmp_path, cores):
    """The connection drops when the session dies: the worker need not wait for its
    heartbeats to go unanswered (SESSION_TIMEOUT) to know. Rank 0 of an MPI worker is the
    case that shows it: its parent, the MPI launcher, outlives the session."""
    from remotefn.worker import watchdog

    if cores > 1:
        pytest.importorskip("mpi4py")
    pidfile = str(tmp_path / "pid")
    caller = start_caller(f"""
        def hold_on_rank_0(path):
            if int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", 0))):
                threading.Event().wait()
            hold(path)

        with remotefn.session("local", forward_output=False, fork_server=False,
                              max_cores=2):
            remote(hold_on_rank_0, block=True, cores={cores})({pidfile!r})
            threading.Event().wait()
    """)
    worker = read_pid(pidfile, process=caller)
    started = descendants(caller.pid)
    delay = _exit_delay(caller, worker, signal.SIGKILL)
    caller.wait(timeout=60)
    # Unanswered heartbeats alone would have taken longer: SESSION_TIMEOUT, then the grace.
    silent = watchdog.SESSION_TIMEOUT
    assert delay < silent, f"exited {delay:.1f} s after the session died"
    wait_until(lambda: not any(alive(pid) for pid in started), timeout=60,
               what="the worker's other processes to exit")


def test_a_worker_on_zeromq_of_a_frozen_session_exits(tmp_path):
    """A session stopped with SIGSTOP is alive but answers no heartbeat: its workers exit
    within the watchdog's bound all the same, and the processes their calls started too."""
    from remotefn.worker import watchdog

    pidfile = str(tmp_path / "pid")
    caller = start_caller(f"""
        with remotefn.session("local", forward_output=False, fork_server=False):
            remote(hold, block=True)({pidfile!r})
            threading.Event().wait()
    """)
    worker = read_pid(pidfile, process=caller)
    try:
        delay = _exit_delay(caller, worker, signal.SIGSTOP)
    finally:
        caller.kill()
        caller.send_signal(signal.SIGCONT)
        caller.wait(timeout=60)
    bound = watchdog.HEARTBEAT_INTERVAL + watchdog.SESSION_TIMEOUT + watchdog.RECONNECT_GRACE
    assert delay < bound + 2, f"exited {delay:.1f} s after the session froze"


def test_default_session_is_shut_down_at_interpreter_exit():
    caller = start_caller("""
        print(remote(getpid, block=True)().result(), flush=True)
    """)
    worker = int(caller.stdout.readline())
    assert caller.wait(timeout=60) == 0
    assert not alive(worker)


def test_handle_called_inside_a_call_runs_in_a_nested_local_session(local):
    outer, inner = remote(nested_pids)().result(timeout=60)
    assert outer != os.getpid() and inner not in (outer, os.getpid())
    assert probe(local).pools == 1


def test_the_watchdog_of_a_worker_that_closed_its_own_socket_pair_lets_it_end_quietly():
    """A forked worker closes its end of the socket pair as it ends normally: its watchdog
    must not take that for the session going (exit code 70 and killing what calls started)."""
    import socket
    import threading

    from remotefn.worker import watchdog

    mine, theirs = socket.socketpair()
    verdict = []
    thread = threading.Thread(target=lambda: verdict.append(
        watchdog._connection_closed(mine.fileno(), os.getppid())))
    thread.start()
    mine.close()
    thread.join(timeout=30)
    theirs.close()
    assert verdict == [False]
