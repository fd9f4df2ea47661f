"""The hub thread's event loop: what it waits on, and what runs when something is ready.

It waits on file descriptors and ZeroMQ sockets (each with its handler) with ``epoll``, keeps
timers, and has an inbox that any thread may post a function to; posting wakes the loop
through an eventfd. A wake-up costs the same however many workers are watched: the kernel
reports only the descriptors that are ready.

A ZeroMQ socket is watched through its ``FD`` option, which only signals that the socket's
``EVENTS`` may have changed (edge-triggered: sending or receiving may consume the signal while
messages wait), so every :meth:`EventLoop.poll` also reads ``EVENTS`` of each such socket,
of which a session has one or two.

Waking a sleeping thread costs tens of microseconds (about 27 µs on a 2-core VM), as much as a
very short call takes: a thread waiting for the answer to such a call polls for it without
sleeping for up to ``POLL_FIRST`` seconds first (the hub thread here, a caller waiting for its
own call in :mod:`.direct`). Polling spends CPU the whole time, so only calls answered within
about that long are polled for.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import threading
import time
from collections import deque
from typing import Any, Callable

import zmq

#: A call whose pool's recent calls ran under SHORT_CALL seconds is answered soon: whoever
#: waits for it polls for up to POLL_FIRST seconds before it sleeps...
SHORT_CALL = 0.00003
POLL_FIRST = 0.0001
#: ... given another CPU to run the worker meanwhile.
SEVERAL_CPUS = len(os.sched_getaffinity(0)) > 1

POLLIN = select.EPOLLIN
POLLOUT = select.EPOLLOUT
_EVENTS = zmq.EVENTS
_ZMQ_POLLIN = int(zmq.POLLIN)
_ZMQ_POLLOUT = int(zmq.POLLOUT)


class EventLoop:
    """Handlers per socket or fd, timers and an inbox; :meth:`poll` waits, :meth:`handle`
    runs what is due. Everything but :meth:`post` runs in the loop's own thread."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        #: A watched item (an fd, or a ZeroMQ socket) -> its handler.
        self.handlers: dict[Any, Callable[[int], None]] = {}
        #: The fd epoll reports -> the item watched through it.
        self._items: dict[int, Any] = {}
        #: ZeroMQ sockets -> the events (POLLIN, POLLOUT) watched on them.
        self._sockets: dict[zmq.Socket, int] = {}
        self.inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self.timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._timer_ids = itertools.count()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self.watch(self.wake_fd, self._woken)
        #: The thread that runs the loop; set before it starts.
        self.thread: threading.Thread | None = None
        #: Set once the loop has closed; posts after that are never run.
        self.closed = threading.Event()

    # -- from any thread -----------------------------------------------------------------

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` in the loop's thread soon."""
        self.inbox.append((function, args))
        if not self._wake_pending and threading.current_thread() is not self.thread \
                and not self.closed.is_set():
            self._wake_pending = True
            try:
                os.eventfd_write(self.wake_fd, 1)
            except OSError:  # the loop has closed the fd
                pass

    # -- in the loop's thread --------------------------------------------------------------

    def watch(self, item: Any, handler: Callable[[int], None], events: int = POLLIN) -> None:
        """Call ``handler(events)`` whenever ``item`` (a socket or an fd) is ready."""
        if isinstance(item, zmq.Socket):
            self._sockets[item] = events
            fd = _fd_of(item)
            self.epoll.register(fd, POLLIN)
        else:
            fd = item
            self.epoll.register(fd, events)
        self._items[fd] = item
        self.handlers[item] = handler

    def unwatch(self, item: Any) -> None:
        if self.handlers.pop(item, None) is None:
            return
        fd = _fd_of(item) if isinstance(item, zmq.Socket) else item
        self._sockets.pop(item, None)
        self._items.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except OSError:  # closed already: the kernel forgot it then
            pass

    def modify(self, item: Any, events: int) -> None:
        """Watch ``item`` (an fd; from any thread) for ``events`` from now on."""
        try:
            self.epoll.modify(item, events)
        except (OSError, ValueError):  # no longer watched (the worker is gone), or closed
            pass

    def later(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` after ``delay`` seconds."""
        when = time.monotonic() + delay
        heapq.heappush(self.timers, (when, next(self._timer_ids), function, args))

    def poll(self, poll_first: float = 0.0) -> list[tuple[Any, int]]:
        """Wait until something is ready, a timer is due or a post arrives; polling without
        sleeping for up to ``poll_first`` seconds first."""
        sockets = self._sockets
        ready: list[tuple[Any, int]] = [(socket, now) for socket, events in sockets.items()
                 if (now := _socket_events(socket, events))]
        if self.inbox or ready:
            timeout = 0.0
        elif self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        else:
            timeout = -1.0
        checked = bool(ready)
        items = self._items
        reported = None
        if poll_first and timeout != 0.0:
            begun = time.monotonic()
            until = begun + (poll_first if timeout < 0 else min(poll_first, timeout))
            while not (reported := self.epoll.poll(0)) and time.monotonic() < until:
                pass
            if timeout > 0:
                timeout = max(0.0, timeout - (time.monotonic() - begun))
        for fd, events in reported or self.epoll.poll(timeout):
            item = items.get(fd)
            if item is None:  # unwatched by another handler since: nothing to run
                continue
            if item.__class__ is int:
                ready.append((item, events))
            elif not checked:  # a ZeroMQ socket's FD: its EVENTS say what is ready
                checked = True
                ready.extend((socket, now) for socket, events in sockets.items()
                             if (now := _socket_events(socket, events)))
        return ready

    def handle(self, ready: list[tuple[Any, int]]) -> None:
        """Run the handlers of what :meth:`poll` reported, then the inbox, then due timers."""
        handlers = self.handlers
        for item, events in ready:
            handler = handlers.get(item)
            if handler is not None:
                handler(events)
        inbox = self.inbox
        while inbox:
            function, args = inbox.popleft()
            function(*args)
        timers = self.timers
        if timers:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _, _, function, args = heapq.heappop(timers)
                function(*args)

    def _woken(self, events: int) -> None:
        # Read before clearing the flag: a post() that sees the flag still set has appended
        # its item already, and the inbox is emptied next; one that sees it cleared writes
        # again.
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass
        self._wake_pending = False

    def close(self) -> None:
        """Stop taking posts (they stay in the inbox: see :meth:`drain`)."""
        self.closed.set()
        os.close(self.wake_fd)
        self.epoll.close()

    def drain(self) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
        """Take what was posted and never run (after :meth:`close`, from any thread)."""
        stranded = []
        while True:
            try:
                stranded.append(self.inbox.popleft())
            except IndexError:
                return stranded


def _fd_of(socket: zmq.Socket) -> int:
    """The file descriptor that signals ZeroMQ ``socket``'s events."""
    return int(socket.getsockopt(zmq.FD))


def _socket_events(socket: zmq.Socket, watched: int) -> int:
    """Which of the ``watched`` events (POLLIN, POLLOUT) ZeroMQ ``socket`` is ready for."""
    events = int(socket.getsockopt(_EVENTS))
    return ((POLLIN if events & _ZMQ_POLLIN else 0)
            | (POLLOUT if events & _ZMQ_POLLOUT else 0)) & watched
