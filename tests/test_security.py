"""Only a session's own workers are heard; nothing is unpickled before it is authenticated."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
import zmq

import remotefn
from remotefn import ProtocolError, WorkerStartError, remote
from remotefn.protocol import messages
from remotefn.protocol.framing import KEY_SIZE, AuthenticationError, Channel, new_key
from remotefn.protocol.messages import Kind
from remotefn.testing import probe
from helpers import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))


def identity(x):
    return x


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def fake_python(tmp_path):
    """An interpreter path that runs tests/fake_worker.py instead of the real worker."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE}/fake_worker.py\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_foreign_client_is_ignored_and_nothing_is_unpickled(tmp_path, transport):
    marker = tmp_path / "unpickled"
    with remotefn.session("local", transport=transport, forward_output=False) as session:
        address = probe(session).address
        context = zmq.Context()
        intruder = context.socket(zmq.DEALER)
        intruder.setsockopt(zmq.LINGER, 0)
        # An intruder that has learnt the session's public key passes the ZeroMQ handshake
        # (see test_handshake.py for one that has not); the MAC still stops it.
        public, secret = zmq.curve_keypair()
        intruder.curve_serverkey = probe(session).server_key
        intruder.curve_publickey, intruder.curve_secretkey = public, secret
        intruder.connect(address)
        evil = pickle.dumps(Evil(str(marker)))
        guessed = Channel(os.urandom(32), b"w0", session_side=False)
        intruder.send_multipart([b"garbage"])
        intruder.send_multipart([evil, evil, evil])
        _, body = messages.result(messages.Usage(0, 0, -1, (0.0,)), (0, [evil]))
        intruder.send_multipart(guessed.seal(Kind.RESULT, body, 1))
        wait_until(lambda: probe(session).rejected >= 3, what="the intruder's messages")
        assert remote(identity)(7).result(timeout=30) == 7
        intruder.close()
        context.term()
    assert not marker.exists()


def test_forged_frames_from_a_worker_identity_are_dropped(tmp_path, fake_python):
    marker = tmp_path / "unpickled"
    env = {"FAKE_MODE": "forged", "FAKE_MARKER": str(marker)}
    with remotefn.session("local", python=fake_python, forward_output=False) as session:
        handle = remote(identity, env=env, block=True, max_workers=1)
        assert handle(1).result(timeout=30) == 1
        assert handle(2).result(timeout=30) == 2
        assert probe(session).rejected == 3
    assert not marker.exists()


def test_replayed_frames_are_dropped(fake_python):
    with remotefn.session("local", python=fake_python, forward_output=False) as session:
        handle = remote(identity, env={"FAKE_MODE": "replayed"}, block=True, max_workers=1)
        assert handle(1).result(timeout=30) == 1
        assert probe(session).rejected == 1


def misbehave_inside_a_call(marker):
    """Runs in a worker: on the worker's own link to the session (its socket pair when
    forked, ZeroMQ when exec'ed) it sends a RESULT sealed with a wrong key whose pickle
    would create ``marker``, an OUTPUT with one bit flipped after sealing, and one OUTPUT
    twice; then it returns normally."""
    import gc

    from remotefn.worker.loop import Worker

    [worker] = [o for o in gc.get_objects() if isinstance(o, Worker)]
    call_id = worker.stdout.call_id

    def send_raw(frames):
        if worker.stream is not None:
            worker.stream.send_all(frames)
        else:
            worker.zmqlink.send(worker.socket, frames)

    wrong_key = Channel(b"k" * KEY_SIZE, worker.identity, session_side=False)
    _, body = messages.result(messages.Usage(0, 0, -1, (0.0,)), (0, [pickle.dumps(Evil(marker))]))
    send_raw(wrong_key.seal(Kind.RESULT, body, call_id=1))
    tampered = worker.channel.seal(Kind.OUTPUT, messages.output(1, "tampered\n"), call_id)
    last = bytearray(tampered[-1])
    last[-1] ^= 1
    send_raw([*tampered[:-1], bytes(last)])
    replayed = worker.channel.seal(Kind.OUTPUT, messages.output(1, "once\n"), call_id)
    send_raw(replayed)
    send_raw(replayed)
    return os.getppid()


@pytest.mark.parametrize("fork_server", [True, False], ids=["socket-pair", "zeromq"])
def test_forged_tampered_and_replayed_frames_from_a_running_worker_are_dropped(
        tmp_path, fork_server):
    """Every message is checked on both links a local worker may have: a forked worker's
    socket pair (the default) and ZeroMQ."""
    marker = tmp_path / "unpickled"
    with remotefn.session("local", fork_server=fork_server, forward_output=False) as session:
        future = remote(misbehave_inside_a_call)(str(marker))
        forked = future.result(timeout=30) != os.getpid()  # the worker's parent
        assert forked == fork_server
        assert probe(session).rejected == 3
    assert future.stdout == "once\n"
    assert not marker.exists()


def test_worker_of_another_version_is_refused_naming_both(fake_python):
    with remotefn.session("local", python=fake_python, forward_output=False):
        handle = remote(identity, env={"FAKE_MODE": "old-version"})
        with pytest.raises(ProtocolError) as raised:
            handle(1).result(timeout=30)
    message = str(raised.value)
    assert "0.0.1" in message and remotefn.__version__ in message
    assert isinstance(raised.value, WorkerStartError)


def environment_seen_by_user_code():
    """Runs in the worker: its own environment, and that of a process the call starts."""
    import json
    import subprocess

    child = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps("
                            "dict(os.environ)))"], capture_output=True, text=True, check=True)
    return os.getpid(), dict(os.environ), json.loads(child.stdout)


@pytest.mark.parametrize("settings, options", [
    ({}, {}),
    ({"fork_server": False}, {}),
    ({}, {"cores": 2}),
], ids=["forked", "exec-ed", "mpi-ranks"])
def test_the_secret_does_not_reach_user_code(settings, options):
    """The worker clears the secret (and every launch variable but its mark) from its
    environment before user code runs: neither the call nor a process it starts can read
    it."""
    if options.get("cores", 1) > 1:
        pytest.importorskip("mpi4py")
    with remotefn.session("local", max_cores=2, forward_output=False, **settings) as session:
        secret = probe(session).secret.hex()
        result = remote(environment_seen_by_user_code, **options)().result(timeout=60)
    ranks = result if options.get("cores", 1) > 1 else [result]
    for pid, environment, child in ranks:
        assert pid != os.getpid()  # seen inside the worker, not here
        for seen in (environment, child):
            assert [name for name in seen if name.startswith("REMOTEFN_")] == ["REMOTEFN_MARK"]
            assert secret not in repr(seen)


def test_each_session_makes_a_fresh_256_bit_secret():
    with remotefn.session("local", forward_output=False) as one, \
            remotefn.session("local", forward_output=False) as other:
        secrets = [probe(one).secret, probe(other).secret]
    assert [len(secret) for secret in secrets] == [32, 32] and secrets[0] != secrets[1]


def test_runtime_directory_and_its_sockets_are_private(tmp_path):
    with remotefn.session("local", transport="ipc", forward_output=False) as session:
        run_dir = probe(session).runtime_dir
        assert os.stat(run_dir).st_mode & 0o077 == 0
        modes = {name: stat.S_IMODE(os.stat(os.path.join(run_dir, name)).st_mode)
                 for name in os.listdir(run_dir)}
    assert {"session", "status", "owner"} <= set(modes)
    assert {name: mode & 0o077 for name, mode in modes.items()} == dict.fromkeys(modes, 0)
    assert not os.path.exists(run_dir)


_KILLED_SESSION = """
import sys, remotefn
from remotefn.testing import probe
with remotefn.session("local", forward_output=False) as session:
    print(probe(session).runtime_dir, flush=True)
    sys.stdin.read()
"""


def test_the_run_directory_of_a_killed_session_goes_with_the_next_session(local):
    script = subprocess.Popen([sys.executable, "-c", _KILLED_SESSION], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    killed_dir = script.stdout.readline().strip()
    script.kill()
    script.wait(timeout=60)
    assert os.path.isdir(killed_dir)  # nothing could remove it
    live_dir = probe(local).runtime_dir
    other = tempfile.mkdtemp(prefix="remotefn-")  # named alike, not a session's
    open(os.path.join(other, "state"), "w").close()
    os.utime(other, (0, 0))
    try:
        with remotefn.session("local", forward_output=False) as session:
            ours = probe(session).runtime_dir
        assert not os.path.exists(ours) and not os.path.exists(killed_dir)
        assert os.path.isdir(live_dir)  # a live session's stays
        assert os.listdir(other) == ["state"]
    finally:
        shutil.rmtree(other)


def test_a_batch_of_calls_survives_the_wire_intact():
    key = new_key()
    session_side = Channel(key, b"w1", session_side=True)
    worker_side = Channel(key, b"w1", session_side=False)
    big = bytes(range(256)) * 1024  # a bulk frame
    calls = [(7, [b"digest", b"fn", b"args"]), (8, [b"digest", b"", big, b"x"]), (9, [b"d"])]
    frames = session_side.seal(Kind.TASKS, messages.tasks(calls))
    kind, _, _, body = worker_side.open(frames)
    assert kind is Kind.TASKS
    assert [(i, [bytes(item) for item in items])
            for i, items in messages.read_tasks(body)] == calls
    tampered = [frames[0], bytearray(frames[1])]
    tampered[1][5] ^= 1
    with pytest.raises(AuthenticationError, match="bad MAC"):
        Channel(key, b"w1", session_side=False).open(tampered)


def test_a_change_anywhere_in_a_large_frame_fails_its_mac():
    """Frames over 16 MiB are hashed in pieces; every piece counts."""
    key = new_key()
    sender = Channel(key, b"w1", session_side=True)
    payload = bytearray(os.urandom(1024)) * (20 << 10)  # 20 MiB
    frames = sender.seal(Kind.RESULT, [b"t", payload])
    kind, _, _, body = Channel(key, b"w1", session_side=False).open(frames)
    assert kind is Kind.RESULT and bytes(body[1]) == payload
    for position in (0, 5 << 20, len(payload) - 1):
        changed = bytearray(payload)
        changed[position] ^= 1
        with pytest.raises(AuthenticationError, match="bad MAC"):
            Channel(key, b"w1", session_side=False).open([frames[0], changed])


def test_a_worker_that_imports_another_protocol_fails_its_start_at_once(tmp_path):
    """A worker whose remotefn speaks another protocol (its python= or PYTHONPATH finds
    another copy) is refused by its first message, before its HELLO could say which version
    it runs: the call fails with ProtocolError naming both protocols, not after
    start_timeout."""
    import shutil

    from remotefn.protocol.messages import PROTOCOL_VERSION

    package = os.path.dirname(remotefn.__file__)
    copy = tmp_path / "other" / "remotefn"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    messages_py = copy / "protocol" / "messages.py"
    text = messages_py.read_text()
    assert f"PROTOCOL_VERSION = {PROTOCOL_VERSION}\n" in text
    messages_py.write_text(text.replace(f"PROTOCOL_VERSION = {PROTOCOL_VERSION}\n",
                                        "PROTOCOL_VERSION = 250\n"))
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={copy.parent}${{PYTHONPATH:+:$PYTHONPATH}} "
                      f"exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    with remotefn.session("local", fork_server=False, python=str(python),
                          forward_output=False):
        with pytest.raises(ProtocolError) as raised:
            # cwd: `python -m` looks there first, and this checkout's remotefn is here
            remote(identity, cwd=str(tmp_path))(1).result(timeout=60)  # start_timeout: 300 s
    assert f"protocol 250 but the session protocol {PROTOCOL_VERSION}" in str(raised.value)
