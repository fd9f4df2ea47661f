"""The ZeroMQ handshake: a peer that does not know the session's key is refused before
anything it sends is read, let alone buffered."""

from __future__ import annotations

import os
import socket
import sys

import psutil
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import remotefn
from remotefn import remote
from remotefn.testing import probe
from helpers import wait_until


def identity(x):
    return x


def _zmtp_null_client(address: str) -> socket.socket:
    """A raw TCP peer that speaks ZMTP 3.0 with the NULL mechanism, as any ZeroMQ socket
    without keys would: greeting, then READY."""
    host, port = address[len("tcp://"):].rsplit(":", 1)
    peer = socket.create_connection((host, int(port)), timeout=30)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00")
    peer.sendall(greeting + b"\x00" * 32)
    ready = b"\x05READY" + b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
    peer.sendall(bytes([0x04, len(ready)]) + ready)
    return peer


def test_a_peer_announcing_a_huge_frame_before_authenticating_costs_no_memory():
    with remotefn.session("local", transport="tcp", forward_output=False) as session:
        peer = _zmtp_null_client(probe(session).address)
        before = psutil.Process().memory_info().rss
        chunk = b"\0" * (1 << 20)
        sent = 0
        try:
            peer.sendall(b"\x02" + (3 << 30).to_bytes(8, "big"))  # a 3 GiB message follows
            while sent < 256 << 20:
                peer.sendall(chunk)
                sent += len(chunk)
        except OSError:  # refused: the session closed the connection
            pass
        finally:
            peer.close()
        grown = psutil.Process().memory_info().rss - before
        assert grown < 64 << 20, f"the session grew by {grown >> 20} MiB"
        assert probe(session).rejected == 0  # nothing reached the session's own checks
        assert remote(identity)(7).result(timeout=60) == 7


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_zeromq_peer_without_the_session_key_fails_the_handshake(transport):
    with remotefn.session("local", transport=transport, forward_output=False) as session:
        context = zmq.Context()
        intruder = context.socket(zmq.DEALER)
        intruder.setsockopt(zmq.LINGER, 0)
        monitor = intruder.get_monitor_socket()
        intruder.connect(probe(session).address)
        intruder.send(b"garbage", zmq.NOBLOCK)
        failed = {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                  zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_DISCONNECTED}
        events = []

        def refused() -> bool:
            while monitor.poll(0):
                events.append(recv_monitor_message(monitor)["event"])
            return bool(failed & set(events))

        wait_until(refused, timeout=30, what="the handshake to fail")
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events
        assert probe(session).rejected == 0
        intruder.disable_monitor()
        monitor.close()
        intruder.close()
        context.term()
        assert remote(identity)(7).result(timeout=60) == 7


def listening_addresses_after(session_pid):
    """Inside an MPI call: wait until every rank is up, then list where the call's processes
    (this worker's process tree, launcher included) listen."""
    from mpi4py import MPI

    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() != 0:
        MPI.COMM_WORLD.Barrier()
        return None
    tree = psutil.Process(os.getpid())
    while tree.parent() is not None and tree.parent().pid != int(session_pid):
        tree = tree.parent()
    pids = {tree.pid, *(p.pid for p in tree.children(recursive=True))}
    found = sorted({c.laddr.ip for c in psutil.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN and c.pid in pids})
    MPI.COMM_WORLD.Barrier()
    return found


@pytest.mark.parametrize("mpiexec", [None, os.path.join(os.path.dirname(sys.executable),
                                                        "mpiexec")],
                         ids=["found", "given"])
def test_a_local_mpi_call_listens_on_loopback_only(mpiexec):
    """Whether the session finds mpiexec or is given it (MPICH's hydra, here)."""
    pytest.importorskip("mpi4py")
    if mpiexec is not None and not os.access(mpiexec, os.X_OK):
        pytest.skip(f"no mpiexec beside {sys.executable}")
    with remotefn.session("local", max_cores=2, mpiexec=mpiexec, forward_output=False):
        found = remote(listening_addresses_after, cores=2)(str(os.getpid())).result(timeout=120)
    assert found[0], "the call's processes listen nowhere: the test sees nothing"
    assert set(found[0]) <= {"127.0.0.1", "::1"}
