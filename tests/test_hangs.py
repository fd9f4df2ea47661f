"""Nothing hangs, nothing is killed early, nothing loops forever: what careless use runs into.

Each test asserts completion and outcome; the suite's timeout catches a hang.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
from typing import NamedTuple

import pytest

import remotefn
from remotefn import DependencyError, SerializationError, WorkerStartError, remote
from helpers import alive, fork_daemon, live_children, start_daemon, wait_for_file, wait_until


def identity(x):
    return x


def increment(x):
    return x + 1


def fail_after(gate):
    wait_for_file(gate)
    raise ValueError("the head of the chain failed")


def value_after(gate, value):
    wait_for_file(gate)
    return value


# -- chains -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fails", "is cancelled"])
def test_a_chain_of_ten_thousand_links_fails_entirely_when_its_head_does(tmp_path, how):
    gate = tmp_path / "gate"
    with remotefn.session("local", max_cores=2, forward_output=False):
        link = remote(increment, block=True, max_workers=1)
        blocker = remote(value_after, block=True, max_workers=1)(str(gate), 0)
        head = remote(fail_after, block=True, max_workers=1)(str(gate)) if how == "fails" \
            else remote(identity, block=True, max_workers=1)(blocker)
        futures = [head]
        for _ in range(10_000):
            futures.append(link(futures[-1]))
        if how == "is cancelled":
            assert head.cancel()
        gate.touch()
        messages = set()
        for future in futures[1:]:
            with pytest.raises(DependencyError) as raised:
                future.result(timeout=60)
            messages.add(str(raised.value))
        assert blocker.result(timeout=60) == 0
    # Every link says what happened at the head, however deep it is.
    [message] = messages
    assert ("the head of the chain failed" if how == "fails" else "was cancelled") in message


def test_a_chain_of_ten_thousand_links_completes():
    with remotefn.session("local", max_cores=2, forward_output=False):
        link = remote(increment, block=True, max_workers=2)
        future = link(0)
        for _ in range(9_999):
            future = link(future)
        assert future.result(timeout=300) == 10_000


# -- containers ---------------------------------------------------------------------------------


class Point(NamedTuple):
    x: int
    y: object


class Tagged(list):
    """A list subclass with an attribute of its own."""


def describe(value):
    return type(value).__name__, value


def _containers(future):
    tagged = Tagged([future, 2])
    tagged.tag = "kept"
    counter = collections.Counter({"a": 1})
    counter["b"] = future
    default = collections.defaultdict(list, {"x": future})
    return {
        "defaultdict": (default, collections.defaultdict(list, {"x": 5})),
        "Counter": (counter, collections.Counter({"a": 1, "b": 5})),
        "OrderedDict": (collections.OrderedDict(z=future, a=1),
                        collections.OrderedDict(z=5, a=1)),
        "namedtuple": (Point(1, future), Point(1, 5)),
        "list subclass": (tagged, Tagged([5, 2])),
        "deque": (collections.deque([future, 1]), collections.deque([5, 1])),
        "frozenset": (frozenset([future]), frozenset([5])),
    }


@pytest.mark.parametrize("name", list(_containers(None)))
def test_a_future_inside_a_container_arrives_resolved_in_that_container(local, name):
    five = remote(identity)(5)
    argument, expected = _containers(five)[name]
    kind, value = remote(describe)(argument).result(timeout=60)
    assert kind == type(expected).__name__
    assert value == expected and type(value) is type(expected)
    if name == "list subclass":
        assert value.tag == "kept"


def test_a_container_that_holds_itself_is_sent_as_pickle_sends_it(local):
    looped = [1]
    looped.append(looped)
    value = remote(identity)(looped).result(timeout=60)
    assert value[0] == 1 and value[1] is value
    with_future = [remote(identity)(2)]
    with_future.append(with_future)
    value = remote(identity)(with_future).result(timeout=60)
    assert value[0] == 2 and value[1] is value


class Pair(tuple):
    """A tuple subclass whose constructor pickle cannot call (no __getnewargs__)."""

    def __new__(cls, first, second):
        return super().__new__(cls, (first, second))


def test_a_container_that_cannot_be_rebuilt_fails_at_submission_naming_it(local):
    with pytest.raises(SerializationError, match="Pair"):
        remote(identity)(Pair(remote(identity)(1), 2))


# -- pools whose workers cannot start ------------------------------------------------------------


def counting_init_that_fails(log):
    with open(log, "a") as file:
        file.write("start\n")
    raise RuntimeError("the data set is missing")


def test_a_pool_whose_init_keeps_failing_gives_up_and_fails_its_calls(local, tmp_path):
    log = tmp_path / "starts"
    handle = remote(identity, block=True, max_workers=4,
                    init=lambda: counting_init_that_fails(str(log)))
    futures = [handle(i) for i in range(20)]
    for future in futures:
        with pytest.raises(WorkerStartError, match="the data set is missing"):
            future.result(timeout=60)
    starts = log.read_text().count("start")
    assert starts <= 3 + 4  # three in a row, plus the ones already starting meanwhile
    # A later call tries again (the user may have fixed the cause meanwhile).
    with pytest.raises(WorkerStartError):
        handle(0).result(timeout=60)
    assert log.read_text().count("start") > starts


@pytest.mark.parametrize("fork_server", [True, False])
def test_a_pool_whose_worker_cannot_launch_recovers_for_later_calls(tmp_path, fork_server):
    missing = tmp_path / "missing"
    with remotefn.session("local", fork_server=fork_server, forward_output=False):
        handle = remote(identity, block=True, cwd=str(missing))
        with pytest.raises(WorkerStartError):
            handle(1).result(timeout=60)
        missing.mkdir()
        assert handle(2).result(timeout=60) == 2


# -- timeouts -----------------------------------------------------------------------------------


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_a_timeout_counts_from_the_calls_own_start(local):
    plain = remote(nap, block=True, max_workers=1)
    assert plain(0).result(timeout=60) == 0  # the pool without a timeout exists first
    timed = plain.options(timeout=2.5)  # a call's 1 s leaves 1.5 s to a loaded machine
    futures = [timed(1.0) for _ in range(4)]  # one worker: each waits for the one before
    assert [f.result(timeout=60) for f in futures] == [1.0] * 4  # the 3rd ends 3 s in


# -- Ctrl-C and failed construction -------------------------------------------------------------

_DEFAULT_SESSION_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from remotefn import remote

    def sleeper(path):
        with open(path + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        time.sleep(600)

    remote(sleeper, block=True)(sys.argv[1]).result()
""")


def test_one_ctrl_c_stops_a_script_using_the_default_session(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = subprocess.Popen([sys.executable, "-c", _DEFAULT_SESSION_SCRIPT, str(pid_file)],
                              stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    wait_until(pid_file.exists, timeout=60, what="the worker to start")
    worker = int(pid_file.read_text())
    script.send_signal(signal.SIGINT)
    assert script.wait(timeout=60) != 0
    assert b"KeyboardInterrupt" in script.stderr.read()
    wait_until(lambda: not alive(worker), timeout=10, what="the worker to be reaped")


def test_a_session_that_cannot_open_leaves_nothing_running():
    import gc

    with pytest.raises(ValueError, match="not an ip"):
        remotefn.session("local", transport="tcp", interface="not an ip")
    gc.collect()  # a socket left open would make this wait forever
    assert live_children() == []


# -- a busy session thread ----------------------------------------------------------------------


def pid_after(gate):
    wait_for_file(gate)
    return os.getpid()


def test_a_session_thread_busy_longer_than_the_session_timeout_kills_no_worker(tmp_path):
    import time

    from remotefn.worker import watchdog

    assert watchdog.SESSION_TIMEOUT < 10
    gate = tmp_path / "gate"
    # Workers over ZeroMQ (not forked) drop a connection silent for SESSION_TIMEOUT; the
    # session's ZeroMQ I/O thread, not the busy one, answers their heartbeats.
    with remotefn.session("local", fork_server=False, forward_output=False):
        handle = remote(pid_after, block=True, max_workers=1)
        first = handle(str(gate))
        # The callback runs in the session's thread, which finishes the call.
        first.add_done_callback(lambda _: time.sleep(10))
        gate.touch()
        pid = first.result(timeout=60)
        assert handle(str(gate)).result(timeout=60) == pid  # the same worker, still alive


def chatter_after(gate, lines):
    wait_for_file(gate)
    for line in range(lines):
        print("line", line)
    return os.getpid()


def test_a_worker_filling_its_connection_while_the_session_thread_is_busy_lives(tmp_path):
    """The session's thread is busy for longer than a frozen session takes to lose its workers
    while a worker on ZeroMQ sends more than the connection holds, so that ZeroMQ stops reading
    it: the session's I/O thread still answers its heartbeats, and nothing is lost."""
    import time

    from remotefn.worker import watchdog

    busy = watchdog.HEARTBEAT_INTERVAL + watchdog.SESSION_TIMEOUT + watchdog.RECONNECT_GRACE + 2
    first_gate, gate = tmp_path / "first", tmp_path / "gate"

    def hold_the_session_thread(_):
        gate.touch()
        time.sleep(busy)

    with remotefn.session("local", fork_server=False, forward_output=False, max_cores=2):
        chatty = remote(chatter_after, block=True, max_workers=1)(str(gate), 20000)
        first = remote(pid_after)(str(first_gate))
        first.add_done_callback(hold_the_session_thread)  # runs in the session's thread
        first_gate.touch()
        pid = chatty.result(timeout=120)
        assert remote(pid_after, block=True, max_workers=1)(str(gate)).result(timeout=60) == pid
    assert len(chatty.stdout.splitlines()) == 20000


def test_waiting_for_a_remote_call_in_a_done_callback_raises_instead_of_freezing(local,
                                                                                  tmp_path):
    gate, later = tmp_path / "gate", tmp_path / "later"
    errors = []

    def callback(_):
        try:
            pending.result()
        except RuntimeError as error:
            errors.append(error)

    pending = remote(value_after)(str(later), 7)
    first = remote(value_after)(str(gate), 1)
    first.add_done_callback(callback)  # runs in the session's thread, which finishes first
    gate.touch()
    assert first.result(timeout=60) == 1
    wait_until(lambda: errors, timeout=30, what="the callback to run")
    assert "done-callback" in str(errors[0])
    later.touch()
    assert pending.result(timeout=60) == 7  # the session still works


# -- what the session keeps, and small mistakes ---------------------------------------------------


class Holder:
    def __call__(self, x):
        return x


def test_a_finished_calls_function_is_not_kept_by_the_session(local):
    import gc
    import weakref

    holder = Holder()
    gone = weakref.ref(holder)
    assert local.submit(holder, 3).result(timeout=60) == 3
    del holder
    gc.collect()
    assert gone() is None


def test_max_workers_without_block_is_refused_naming_both():
    with pytest.raises(ValueError, match="max_workers=2 needs block=True"):
        remote(identity, max_workers=2)


def test_an_async_generator_is_refused_when_decorated():
    async def fetch():
        yield 1

    with pytest.raises(TypeError, match="fetch.*async generator"):
        remote(fetch)


# -- a killed session leaves nothing behind ---------------------------------------------------------

_GRANDCHILD_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, time
    import remotefn
    from remotefn import remote

    def start_grandchild(path):
        from helpers import start_daemon

        child = subprocess.Popen(["sleep", "600"])
        daemon = start_daemon()  # its own session, and its parent (sh) gone
        with open(path + ".tmp", "w") as file:
            file.write(f"{os.getpid()} {child.pid} {daemon}")
        os.rename(path + ".tmp", path)
        time.sleep(600)

    with remotefn.session("local", fork_server=sys.argv[2] == "fork"):
        remote(start_grandchild)(sys.argv[1]).result()
""")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
@pytest.mark.parametrize("start", ["fork", "exec"])
def test_killing_the_session_ends_the_processes_its_calls_started(tmp_path, start, signum):
    pids = tmp_path / "pids"
    script = subprocess.Popen([sys.executable, "-c", _GRANDCHILD_SCRIPT, str(pids), start],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                              stderr=subprocess.DEVNULL)
    wait_until(pids.exists, timeout=60, what="the call to start its child")
    worker, grandchild, daemon = map(int, pids.read_text().split())
    assert os.getsid(daemon) == daemon != os.getsid(worker)  # left the worker's session
    script.send_signal(signum)
    assert script.wait(timeout=60) != 0
    wait_until(lambda: not any(map(alive, (worker, grandchild, daemon))), timeout=30,
               what="the worker and the processes its call started to end")


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_a_session_that_ends_ends_the_daemons_its_calls_started(start):
    with remotefn.session("local", fork_server=start == "fork", forward_output=False):
        daemons = [remote(start_daemon)().result(timeout=60),
                   remote(start_daemon, block=True)().result(timeout=60),
                   remote(fork_daemon)().result(timeout=60)]
        assert all(map(alive, daemons))
    wait_until(lambda: not any(map(alive, daemons)), timeout=30, what="the daemons to end")


_FINISHED_CALLS_DAEMONS = textwrap.dedent("""
    import sys
    import remotefn
    from remotefn import remote
    from helpers import fork_daemon, start_daemon

    with remotefn.session("local", max_cores=2, fork_server=sys.argv[2] == "fork",
                          forward_output=False):
        pids = [remote(start_daemon)().result(), remote(fork_daemon)().result()]
        if sys.argv[1] == "mpi":
            pids += remote(start_daemon, cores=2)().result()
        print(*pids, flush=True)
        sys.stdin.read()
""")


@pytest.mark.parametrize("start", ["fork", "exec"])
@pytest.mark.parametrize("calls", ["one-shot", "mpi"])
def test_a_killed_session_ends_the_daemons_of_calls_that_finished(calls, start):
    """No worker of the session is left to see it go: its fork server, or without one its
    sentinel, ends them."""
    if calls == "mpi":
        pytest.importorskip("mpi4py")
    script = subprocess.Popen([sys.executable, "-c", _FINISHED_CALLS_DAEMONS, calls, start],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        daemons = [int(pid) for pid in script.stdout.readline().split()]
        assert daemons and all(map(alive, daemons))
    finally:
        script.kill()
        script.wait(timeout=60)
    wait_until(lambda: not any(map(alive, daemons)), timeout=30, what="the daemons to end")


def test_a_running_calls_start_is_known_while_it_runs(local, tmp_path):
    gate = tmp_path / "gate"
    handle = remote(value_after, block=True, max_workers=1)
    first, second = handle(str(gate), 1), handle(str(tmp_path / "second"), 2)
    wait_until(first.running, timeout=60, what="the call to run")
    assert first.info.started is not None
    (running,) = [r for r in local.resources()["running"] if r["call"].endswith(
        f"(call {first.info.call_id})")]
    assert running["started"] == first.info.started
    gate.touch()
    assert first.result(timeout=60) == 1
    wait_until(lambda: second.info.started is not None, timeout=60,
               what="the next call's start")
    assert second.info.started >= first.info.finished - 1e-6
    (tmp_path / "second").touch()
    assert second.result(timeout=60) == 2
