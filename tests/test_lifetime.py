"""No hang and no orphan: shutdown, errors, Ctrl-C and a killed caller leave no worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import remotefn
from remotefn import remote
from remotefn.testing import probe
from helpers import alive, live_children, wait_until


def getpid():
    return os.getpid()


def nested_pids():
    """Runs in a worker and calls another handle from there."""
    inner = remote(getpid)
    return os.getpid(), inner().result(timeout=30)


def caller_script(body: str) -> str:
    """A script that prints worker pids on stdout, one per line, then runs ``body``."""
    return textwrap.dedent(f"""
        import os, sys, time
        import remotefn
        from remotefn import remote

        def getpid():
            return os.getpid()

        def sleep_forever():
            import time
            while True:
                time.sleep(1)

        {textwrap.indent(textwrap.dedent(body), '        ').strip()}
    """)


def start_caller(body: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", caller_script(body)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_shutdown_stops_block_workers():
    session = remotefn.session("local", forward_output=False)
    handle = remote(getpid, block=True, max_workers=2)
    pids = {session.submit(handle).result(timeout=30) for _ in range(4)}
    session.shutdown()
    assert not any(alive(pid) for pid in pids)
    assert probe(session).stopped


def test_exception_in_with_block_kills_running_workers(tmp_path):
    started = tmp_path / "started"

    def run_forever(path):
        import time

        open(path, "w").close()
        while True:
            time.sleep(0.05)

    with pytest.raises(KeyError):
        with remotefn.session("local", forward_output=False):
            future = remote(run_forever)(str(started))
            wait_until(started.exists, what="the call to start")
            pids = [child.pid for child in live_children()]
            raise KeyError("user error")
    assert pids and not any(alive(pid) for pid in pids)
    assert future.done()


@pytest.mark.parametrize("block", [False, True], ids=["one-shot", "block"])
def test_ctrl_c_in_the_caller_leaves_no_worker(block):
    caller = start_caller(f"""
        with remotefn.session("local", forward_output=False):
            print(remote(getpid, block={block})().result(), flush=True)
            remote(sleep_forever, block={block})().result()
    """)
    pid = int(caller.stdout.readline())
    wait_until(lambda: len([c for c in live_children() if c.pid != caller.pid]) >= 1,
               what="the long call's worker")
    workers = [c.pid for c in live_children() if c.pid != caller.pid]
    caller.send_signal(signal.SIGINT)
    assert caller.wait(timeout=30) != 0
    assert not alive(pid)
    wait_until(lambda: not any(alive(w) for w in workers), timeout=2,
               what="the workers to be gone")


def test_killed_caller_leaves_no_worker_after_five_seconds():
    caller = start_caller("""
        with remotefn.session("local", forward_output=False):
            handle = remote(getpid, block=True, max_workers=1)
            print(handle().result(), flush=True)
            remote(sleep_forever)()
            sleep_forever()
    """)
    block_worker = int(caller.stdout.readline())
    wait_until(lambda: len(live_children()) >= 3, what="the one-shot worker")
    workers = [c.pid for c in live_children() if c.pid != caller.pid]
    caller.kill()
    caller.wait()
    assert block_worker in workers
    wait_until(lambda: not any(alive(w) for w in workers), timeout=6,
               what="workers of a killed session to exit")


def test_default_session_is_shut_down_at_interpreter_exit():
    caller = start_caller("""
        print(remote(getpid, block=True)().result(), flush=True)
    """)
    worker = int(caller.stdout.readline())
    assert caller.wait(timeout=30) == 0
    assert not alive(worker)


def test_handle_called_inside_a_call_runs_in_a_nested_local_session(local):
    outer, inner = remote(nested_pids)().result(timeout=60)
    assert outer != os.getpid() and inner not in (outer, os.getpid())
    assert probe(local).pools == 1
