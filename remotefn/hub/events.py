"""The hub thread's event loop: what it waits on, and what runs when something is ready.

It polls ZeroMQ sockets and file descriptors (each with its handler), keeps timers, and has an
inbox that any thread may post a function to; posting wakes the loop through an eventfd.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import deque
from typing import Any, Callable

import zmq

POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)


class EventLoop:
    """Handlers per socket or fd, timers and an inbox; :meth:`poll` waits, :meth:`handle`
    runs what is due. Everything but :meth:`post` runs in the loop's own thread."""

    def __init__(self) -> None:
        self.poller = zmq.Poller()
        self.handlers: dict[Any, Callable[[int], None]] = {}
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
        self.poller.register(item, events)
        self.handlers[item] = handler

    def unwatch(self, item: Any) -> None:
        if self.handlers.pop(item, None) is not None:
            self.poller.unregister(item)

    def modify(self, item: Any, events: int) -> None:
        self.poller.modify(item, events)

    def later(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` after ``delay`` seconds."""
        when = time.monotonic() + delay
        heapq.heappush(self.timers, (when, next(self._timer_ids), function, args))

    def poll(self) -> list[tuple[Any, int]]:
        """Wait until something is ready, a timer is due or a post arrives."""
        if self.inbox:
            timeout: int | None = 0
        elif self.timers:
            timeout = max(0, int((self.timers[0][0] - time.monotonic()) * 1000) + 1)
        else:
            timeout = None
        return self.poller.poll(timeout)

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

    def drain(self) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
        """Take what was posted and never run (after :meth:`close`, from any thread)."""
        stranded = []
        while True:
            try:
                stranded.append(self.inbox.popleft())
            except IndexError:
                return stranded
