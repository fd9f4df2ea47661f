"""The watchdog: a thread that ends the worker once its session is gone, so that a killed
session leaves no worker behind, nor any process its calls started.

A worker on a socket pair sees the session go as the socket closing. A worker on ZeroMQ has
libzmq's I/O thread ping the session on its one connection (ZMTP heartbeats, authenticated
by CURVE, answered by the session's I/O thread without the GIL) and drop the connection when
nothing comes back; the watchdog reads the socket's monitor and gives up when the connection
dropped and no new handshake followed. Either also ends when the process that started it (the
session, an MPI launcher, srun) is gone.

Who owns what, in a worker on ZeroMQ::

    main thread      the DEALER socket (calls and results); made the monitor before connecting
    libzmq I/O       PINGs every HEARTBEAT_INTERVAL; no traffic for SESSION_TIMEOUT: disconnect
    watchdog thread  the monitor's PAIR socket: DISCONNECTED, HANDSHAKE_SUCCEEDED, STOPPED
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..protocol import launch, zmqlink
from ..sessions import registry

if TYPE_CHECKING:
    import zmq

#: How often libzmq pings the session (and the session the worker), and how often the
#: watchdog checks its parent.
HEARTBEAT_INTERVAL = zmqlink.HEARTBEAT_INTERVAL
#: A connection to the session that carried nothing for this long after a PING is dropped
#: (the session's I/O thread answers PINGs without the GIL: only a stopped or unreachable
#: session fails to).
SESSION_TIMEOUT = 3.0
#: A worker whose connection dropped exits unless a new handshake succeeds within this long
#: (a live session answers a reconnect within the reconnect interval, 0.1 s, and a handshake).
RECONNECT_GRACE = 1.0
EXIT_SESSION_LOST = 70


def keep_alive(socket: "zmq.Socket") -> "zmq.Socket":
    """Make ``socket`` (before it connects) ping the session and drop a connection that went
    silent; returns the monitor socket that reports drops and handshakes, for the watchdog
    thread alone (see :func:`start`)."""
    import zmq

    socket.setsockopt(zmq.HEARTBEAT_IVL, int(HEARTBEAT_INTERVAL * 1000))
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(SESSION_TIMEOUT * 1000))
    return socket.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                     | zmq.EVENT_MONITOR_STOPPED)


def start(link: "int | zmq.Socket") -> None:
    """Start the watchdog thread on ``link``: a socket pair's descriptor, or the monitor
    socket from :func:`keep_alive`, which the thread owns and closes from then on."""
    watch = _connection_closed if isinstance(link, int) else _connection_lost
    threading.Thread(target=_watch_session, name="remotefn-watchdog", daemon=True,
                     args=(watch, link, os.getppid())).start()


def end_on_sigterm() -> None:
    """On SIGTERM (how SLURM and Flux end a step or job first: the scheduler kills the rest
    only after a grace period), end what this worker's calls started, then die of it."""
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: Any) -> None:
    try:
        end_what_calls_started()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _watch_session(watch: Callable[..., bool], *args: Any) -> None:
    """Exit the process once ``watch(*args)`` says the session is gone, or fails; return
    quietly when it says the worker closed its link (it is ending on its own)."""
    gone = True
    try:
        gone = watch(*args)
    finally:
        if gone:
            _end_worker()


def _end_worker() -> None:
    try:
        registry.kill_local_sessions()
        end_what_calls_started(whole_session=True)
        print("remotefn worker: the session is gone; exiting", file=sys.__stderr__)
    except BaseException:  # stderr may be a pipe to the dead session
        pass
    os._exit(EXIT_SESSION_LOST)


def end_what_calls_started(whole_session: bool = False) -> None:
    """SIGKILL every process this worker's calls started: its descendants, every other
    member of its process group when it leads one (local workers), and every process that
    carries its mark (those that left both: ``setsid``, a daemon's double fork); with
    ``whole_session`` (the session is gone), every process that carries a mark of its
    session, also of the session's workers that have ended."""
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
    mark = os.environ.get(launch.MARK)
    if mark and whole_session:
        launch.end_marked(session=launch.session_of(mark))
    elif mark:
        launch.end_marked([mark])


def _connection_closed(connection: int, parent: int) -> bool:
    """Return True once the session has closed its end of the socket pair (a session that
    dies closes it too) or the process that started this worker is gone; False once the
    worker closed its own end (it is ending on its own)."""
    poller = select.poll()
    poller.register(connection, select.POLLRDHUP)
    while os.getppid() == parent:
        ready = poller.poll(HEARTBEAT_INTERVAL * 1000)
        if ready:
            return not ready[0][1] & select.POLLNVAL
    return True


def _connection_lost(monitor: "zmq.Socket", parent: int) -> bool:
    """Return True once the connection to the session dropped (the session died, or sent
    nothing for SESSION_TIMEOUT) and no handshake succeeded for RECONNECT_GRACE, or the
    process that started this worker is gone; False once the worker closed its socket."""
    import zmq

    try:
        return _follow(monitor, parent)
    except zmq.ContextTerminated:
        return False
    finally:
        monitor.close(linger=0)


def _follow(monitor: "zmq.Socket", parent: int) -> bool:
    import zmq

    lost_at: float | None = None
    while os.getppid() == parent:
        wait = HEARTBEAT_INTERVAL
        if lost_at is not None:
            wait = min(wait, lost_at + RECONNECT_GRACE - time.monotonic())
            if wait <= 0:
                return True
        if not monitor.poll(int(wait * 1000)):
            continue
        event = _event(monitor.recv_multipart())
        if event == zmq.EVENT_MONITOR_STOPPED:
            return False
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            lost_at = None
        elif event == zmq.EVENT_DISCONNECTED and lost_at is None:
            lost_at = time.monotonic()
    return True


def _event(frames: list[bytes]) -> int:
    """The event number of a monitor message: its first frame starts with it, 16 bits little
    endian (pyzmq's own parser imports asyncio: 25 ms of CPU in every worker)."""
    return int.from_bytes(frames[0][:2], "little")
