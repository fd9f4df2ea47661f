"""Large buffers between a session and its forked workers travel in shared memory (memfd
segments passed over the socket pair): each side gets a private copy, segments are reused
only by their owner, and none outlives a process that is killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

import remotefn
from helpers import alive, read_pid, wait_for_file, wait_until, write_pid
from remotefn import WorkerDied, remote
from remotefn.protocol import segments
from remotefn.testing import probe
from remotefn.protocol.framing import Channel
from remotefn.protocol.messages import Kind
from remotefn.protocol.socketpair import FrameStream

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(not segments.supported(), reason="memfds are Linux only")

MIB = 1 << 20


@pytest.fixture
def before() -> tuple[int, int]:
    """This process's segment descriptors and mappings before the test (a default session
    made by an earlier test may keep some for reuse)."""
    return memfds()


def memfds(pid: int | str = "self") -> tuple[int, int]:
    """How many segment descriptors ``pid`` holds, and how many segment mappings."""
    fds = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += os.readlink(f"/proc/{pid}/fd/{name}").startswith("/memfd:remotefn")
        except OSError:  # closed meanwhile
            pass
    with open(f"/proc/{pid}/maps") as maps:
        mapped = sum("/memfd:remotefn" in line for line in maps)
    return fds, mapped


def test_a_passed_segment_arrives_as_a_private_writable_copy(before):
    ours, theirs = socket.socketpair()
    key = os.urandom(32)
    session = Channel(key, b"w1", session_side=True)
    worker = Channel(key, b"w1", session_side=False)
    sender, receiver = FrameStream(ours), FrameStream(theirs, report_released=True)
    pool = segments.Pool()
    data = np.arange(MIB, dtype=np.uint8)
    segment = pool.copy(data)
    data[:] = 7  # after the copy: the segment holds the value at the call
    sender.send_all(session.seal(Kind.TASK, [b"small", segment], call_id=3, passing=True))
    kind, _, call_id, body = worker.open(receiver.receive())
    assert (kind, call_id, bytes(body[0])) == (Kind.TASK, 3, b"small")
    arrived = np.frombuffer(body[1], dtype=np.uint8)
    np.testing.assert_array_equal(arrived, np.arange(MIB, dtype=np.uint8))
    arrived[:] = 1  # writable, and private: the sender's segment keeps its bytes
    assert bytes(segment.view()[:3]) == bytes([0, 1, 2])
    assert receiver.released == [segment.id]
    assert memfds()[0] == before[0] + 2  # the segment and its mapping's copy; none received
    pool.release_ids(receiver.released)
    pool.close()
    assert memfds() == before
    for end in (sender, receiver):
        end.close()


def test_descriptors_stay_with_their_messages_when_sends_are_cut_short(before):
    """A non-blocking sender whose socket fills up sends messages in pieces; each passed
    segment still arrives with its own message, in order."""
    import select
    import threading

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sender, receiver = FrameStream(ours), FrameStream(theirs)
    pool = segments.Pool()
    sent = [pool.copy(bytes([i]) * (MIB // 2)) for i in range(40)]
    received: list[tuple[bytes, int, int, int]] = []

    def read() -> None:
        for _ in sent:
            head, segment, filler = receiver.receive()
            received.append((bytes(head), segment[0], len(segment), len(filler)))

    reader = threading.Thread(target=read)
    reader.start()
    for i, segment in enumerate(sent):  # queued while the socket is full, several at a time
        sender.send([bytes([i]), segment, bytes(200_000)])
    while not sender.flush():
        select.select([], [ours], [], 5)
    reader.join(60)
    assert received == [(bytes([i]), i, MIB // 2, 200_000) for i in range(40)]
    for segment in sent:
        segment.release()
    pool.close()
    for end in (sender, receiver):
        end.close()
    assert memfds() == before


def test_a_head_that_lies_about_how_a_frame_came_is_dropped():
    ours, theirs = socket.socketpair()
    key = os.urandom(32)
    session = Channel(key, b"w1", session_side=True)
    worker = Channel(key, b"w1", session_side=False)
    sender, receiver = FrameStream(ours), FrameStream(theirs)
    pool = segments.Pool()
    segment = pool.copy(bytes(MIB))
    frames = session.seal(Kind.TASK, [b"x", segment], passing=True)
    sender.send_all([frames[0], bytes(1000)])  # bytes where the head says a segment
    with pytest.raises(Exception, match="passed otherwise|bad MAC"):
        worker.open(receiver.receive())
    segment.release()
    pool.close()
    for end in (sender, receiver):
        end.close()


def test_descriptors_that_no_frame_names_are_refused_and_closed(before):
    """A peer that passes descriptors with messages that name none cannot make the receiver
    pile them up: past what two messages may pass, the stream is closed, and so are they."""
    import array

    from remotefn.protocol.socketpair import StreamClosed

    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    receiver = FrameStream(theirs)
    pool = segments.Pool()
    segment = pool.copy(bytes(MIB))
    unnamed = array.array("i", [segment.fd] * 8)
    message = b"".join(FrameStream.encode([b"no segment here"]))
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(StreamClosed, match="no frame names"):
        for _ in range(100):
            ours.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, unnamed)])
            receiver.receive_ready()
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    for end in (ours, receiver):
        end.close()
    segment.release()
    pool.close()
    assert memfds() == before


def doubled_after_changing_it(array, marker):
    """Changes its argument in place; the first time it also kills its worker."""
    array *= 2
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return array


def test_a_retry_sees_the_argument_as_it_was_at_the_call(tmp_path):
    """The first worker changed its copy and died; the retry on a new worker gets the
    caller's values, and the caller's own array was never touched."""
    original = np.arange(2 * MIB, dtype=np.float64)
    data = original.copy()
    with remotefn.session("local", max_cores=1, forward_output=False):
        handle = remote(doubled_after_changing_it, block=True, retries=1)
        result = handle(data, str(tmp_path / "died-once")).result(timeout=60)
    np.testing.assert_array_equal(result, original * 2)
    np.testing.assert_array_equal(data, original)


def negated(array):
    return -array


def added(a, b):
    return a + b


def test_reused_segments_carry_each_calls_own_values():
    """Many calls of one size in both directions, so segments are reused; every result kept
    by the caller keeps its own values."""
    with remotefn.session("local", max_cores=2, forward_output=False):
        handle = remote(negated, block=True, max_workers=2)
        inputs = [np.full(MIB // 8, float(i)) for i in range(12)]
        results = []
        for start in range(0, 12, 3):  # a few in flight at a time
            futures = [handle(a) for a in inputs[start:start + 3]]
            results.extend(f.result(timeout=60) for f in futures)
        for i, result in enumerate(results):
            assert result.flags.writeable
            np.testing.assert_array_equal(result, np.full(MIB // 8, -float(i)))
        results[0][:] = 5  # a result is the caller's own memory
        assert results[1][0] == -1.0


def held(array, pid_file, gate):
    write_pid(pid_file)
    wait_for_file(gate)
    return array.sum()


def test_no_segment_outlives_a_killed_worker_or_the_session(tmp_path, before):
    with remotefn.session("local", max_cores=1, forward_output=False):
        handle = remote(held, block=True)
        array = np.ones(4 * MIB)
        future = handle(array, str(tmp_path / "pid"), str(tmp_path / "never"))
        worker = read_pid(str(tmp_path / "pid"))
        assert memfds(worker)[0] <= 1  # at most its pool's; the argument was copied out
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            future.result(timeout=60)
        open(tmp_path / "open", "w").close()
        again = handle(array, str(tmp_path / "pid2"), str(tmp_path / "open"))
        assert again.result(timeout=60) == array.sum()
        assert memfds()[0] > before[0]  # segments kept for reuse
    assert memfds() == before


def test_a_killed_session_leaves_its_worker_to_exit_with_its_segments(tmp_path):
    pid_file, gate = str(tmp_path / "pid"), str(tmp_path / "never")
    script = textwrap.dedent(f"""
        import numpy, remotefn, test_shared_memory
        with remotefn.session("local", max_cores=1, forward_output=False):
            f = remotefn.remote(test_shared_memory.held, block=True)
            f(numpy.ones({4 * MIB}), {pid_file!r}, {gate!r}).result()
    """)
    caller = subprocess.Popen([sys.executable, "-c", script],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    worker = read_pid(pid_file, process=caller)
    started = [child.pid for child in psutil.Process(caller.pid).children(recursive=True)]
    assert worker in started
    caller.send_signal(signal.SIGKILL)
    caller.wait(timeout=60)
    wait_until(lambda: not any(alive(pid) for pid in started), timeout=60,
               what="the worker and fork server of a killed session to exit")


def test_workers_on_zeromq_get_the_bytes_of_a_segment(before):
    """A worker that is not forked (here: exec'ed, on ZeroMQ) cannot take a descriptor: the
    session's segment goes as its bytes, authenticated as any frame."""
    original = np.arange(MIB, dtype=np.float64)
    with remotefn.session("local", max_cores=1, forward_output=False, fork_server=False):
        result = remote(negated, block=True)(original).result(timeout=60)
    np.testing.assert_array_equal(result, -original)
    assert memfds() == before


def test_calls_answered_from_the_cache_leave_no_segment(tmp_path, before):
    """A call answered from the cache never reaches a worker; its argument's segment is
    closed, not kept."""
    array = np.ones(MIB)
    with remotefn.session("local", max_cores=1, forward_output=False,
                          cache_directory=str(tmp_path)):
        handle = remote(negated, block=True)
        first = handle(array).result(timeout=60)
        for _ in range(3):
            again = handle(array)
            assert again.result(timeout=60).sum() == first.sum() and again.info.from_cache
    assert memfds() == before


def test_a_session_shut_down_in_a_done_callback_closes_its_segments(before):
    """shutdown() in a callback the hub thread runs returns at once; the session's segments
    still close, whether the caller keeps the session or not."""
    import concurrent.futures

    session = remotefn.session("local", max_cores=1, forward_output=False)
    with session:
        array = np.ones(MIB)
        first = remote(negated, block=True)(array)
        concurrent.futures.wait([first])  # answered by the hub thread: the pool keeps it
        assert memfds()[0] > before[0]
        second = remote(negated, block=True)(array)
        second.add_done_callback(lambda _: session.shutdown())
        concurrent.futures.wait([second])
        wait_until(lambda: probe(session).stopped, what="the session to stop")
        assert memfds() == before


def test_a_kernel_without_huge_pages_still_receives_large_segments(monkeypatch):
    """MADV_HUGEPAGE is advice: where the kernel refuses it (built without transparent huge
    pages: EINVAL), a passed segment still arrives."""
    import errno

    def refuse(self, *args):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(segments.Received, "madvise", refuse)
    pool = segments.Pool()
    segment = pool.copy(np.arange(4 * MIB, dtype=np.uint8))
    received = segments.receive(os.dup(segment.fd), segment.size)
    assert bytes(received[:3]) == bytes([0, 1, 2]) and len(received) == 4 * MIB
    segment.release()
    pool.close()


def break_the_stream_then_wait(path):
    """Pass the session descriptors that no frame names (a worker gone wrong), then wait."""
    import array
    import gc
    import time

    write_pid(path)
    stream = next(o for o in gc.get_objects() if isinstance(o, FrameStream))
    unnamed = array.array("i", [0] * 8)
    message = b"".join(FrameStream.encode([b"no segment here"]))
    for _ in range(40):
        stream.socket.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, unnamed)])
    time.sleep(600)


def test_a_worker_that_breaks_the_stream_is_ended_and_its_call_fails(tmp_path):
    """The session stops reading a socket pair that broke its rules; the worker on it is
    killed, so that its call fails instead of waiting for ever."""
    with remotefn.session("local", max_cores=1, forward_output=False) as session:
        future = remote(break_the_stream_then_wait, block=True)(str(tmp_path / "pid"))
        worker = read_pid(str(tmp_path / "pid"))
        with pytest.raises(WorkerDied):
            future.result(timeout=60)
        wait_until(lambda: not alive(worker), what="the worker to end")
        assert probe(session).rejected >= 1  # counted and logged
        assert remote(negated, block=True)(np.ones(4)).result(timeout=60).sum() == -4


@pytest.mark.parametrize("sealed, length, announced", [(True, 4096, 8192), (False, 8192, 8192),
                                                       (True, 4096, 0)])
def test_a_descriptor_that_is_not_a_segment_of_the_size_announced_is_refused(
        sealed, length, announced):
    """Checked before it is mapped: a segment that could shrink, or is shorter than its
    message says, would fault when read. The error names the sizes."""
    import fcntl

    fd = os.memfd_create("remotefn", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, length)
    if sealed:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    with pytest.raises(ValueError, match=f"segment of the {announced} bytes announced: it "
                                         f"holds {length} bytes"):
        segments.receive(fd, announced)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed all the same


def test_a_call_whose_segments_cannot_be_passed_fails_instead_of_waiting(monkeypatch, before):
    """With no descriptor left to pass a segment with (EMFILE), the call fails: its worker
    never got it, so it is stopped, and the call fails with WorkerDied."""
    import errno

    from remotefn.protocol import socketpair

    with remotefn.session("local", max_cores=1, forward_output=False):
        handle = remote(negated, block=True)
        assert handle(np.ones(4)).result(timeout=60).sum() == -4  # up, on a socket pair
        dup = os.dup
        calls = []

        def dup_then_fail(fd):
            calls.append(fd)
            if len(calls) > 1:
                raise OSError(errno.EMFILE, "Too many open files")
            return dup(fd)

        monkeypatch.setattr(socketpair.os, "dup", dup_then_fail)
        with pytest.raises(WorkerDied):
            remote(added, block=True)(np.ones(MIB), np.ones(MIB)).result(timeout=60)
        monkeypatch.undo()
        assert handle(np.ones(4)).result(timeout=60).sum() == -4
    assert memfds() == before
