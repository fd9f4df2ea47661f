"""The watchdog: a thread that ends the worker once its session is gone, so that a killed
session leaves no worker behind, nor any process its calls started.

A worker on a socket pair sees the session go as the socket closing; a worker on ZeroMQ pings
the session on a second socket and gives up when the answers stop. Either also ends when the
process that started it (the session, an MPI launcher, srun) is gone.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from typing import Any, Callable

from ..protocol import zmqlink
from ..protocol.framing import AuthenticationError, Channel
from ..protocol.messages import Kind
from ..sessions import registry

PING_INTERVAL = 1.0
#: A worker exits when its session has not answered for this long.
SESSION_TIMEOUT = 4.0
EXIT_SESSION_LOST = 70


def start(heartbeat: str, server_key: bytes, key: bytes, identity: bytes,
          connection: int | None) -> None:
    """Start the watchdog thread for a worker on ``connection`` (a socket pair), or on ZeroMQ
    pinging the session's ``heartbeat`` address."""
    watch = (_connection_closed, connection, os.getppid()) if connection is not None \
        else (_heartbeat, heartbeat, server_key, key, identity, os.getppid())
    threading.Thread(target=_watch_session, name="remotefn-heartbeat", daemon=True,
                     args=watch).start()


def _watch_session(watch: Callable[..., None], *args: Any) -> None:
    """Exit the process once ``watch(*args)`` returns (the session is gone) or fails."""
    try:
        watch(*args)
    finally:
        try:
            registry.kill_local_sessions()
            end_what_calls_started()
            print("remotefn worker: the session is gone; exiting", file=sys.__stderr__)
        except BaseException:  # stderr may be a pipe to the dead session
            pass
        os._exit(EXIT_SESSION_LOST)


def end_what_calls_started() -> None:
    """SIGKILL every process this worker's calls started: its descendants and, when the
    worker leads its own process group (local workers), every other member of that group
    (children whose parent has already exited)."""
    me = os.getpid()
    leads_group = os.getpgrp() == me
    parents: dict[int, int] = {}
    group: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
        if leads_group and int(fields[2]) == me:
            group.append(int(entry))
    doomed = set(group)
    frontier = [me]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        doomed.update(children)
        frontier.extend(children)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _connection_closed(connection: int, parent: int) -> None:
    """Return once the session has closed its end of the socket pair (a session that dies
    closes it too) or the process that started this worker is gone."""
    poller = select.poll()
    poller.register(connection, select.POLLRDHUP)
    while os.getppid() == parent:
        if poller.poll(PING_INTERVAL * 1000):
            return


def _heartbeat(address: str, server_key: bytes, key: bytes, identity: bytes,
               parent: int) -> None:
    """Ping the session every PING_INTERVAL; return once it stopped answering or the process
    that started this worker is gone."""
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity + b"#hb")
    sock.setsockopt(zmq.LINGER, 0)
    zmqlink.connect_curve(sock, server_key)
    sock.connect(address)
    channel = Channel(key, identity + b"#hb", session_side=False)
    last_answer = time.monotonic()
    while time.monotonic() - last_answer <= SESSION_TIMEOUT:
        if os.getppid() != parent:
            return
        try:  # with the session gone there is no peer, and a blocking send would wait forever
            sock.send_multipart(channel.seal(Kind.PING), zmq.NOBLOCK)
        except zmq.Again:
            pass
        deadline = time.monotonic() + PING_INTERVAL
        while (remaining := deadline - time.monotonic()) > 0:
            if sock.poll(remaining * 1000):
                try:
                    channel.open(sock.recv_multipart())
                    last_answer = time.monotonic()
                except AuthenticationError:
                    pass
