"""No hang and no orphan: shutdown, errors, Ctrl-C and a killed caller leave no worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

import remotefn
from remotefn import RemoteFnError, remote
from remotefn.testing import probe
from helpers import alive, read_pid, wait_until, write_pid


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
    # A liveness bound only; that they exit within 5 s rests on the watchdog's constants
    # (see test_the_watchdog_gives_up_on_a_silent_session_within_five_seconds).
    wait_until(lambda: not any(alive(pid) for pid in started), timeout=60,
               what="the workers of a killed session to exit")


def test_the_watchdog_gives_up_on_a_silent_session_within_five_seconds():
    """A worker on ZeroMQ pings its session every PING_INTERVAL and exits once no answer came
    for SESSION_TIMEOUT; a worker on a socket pair sees the session's end close at once.
    Either also exits within PING_INTERVAL once the process that started it is gone."""
    from remotefn.worker import watchdog

    assert watchdog.SESSION_TIMEOUT + watchdog.PING_INTERVAL <= 5


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
