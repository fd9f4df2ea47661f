"""Shared-memory segments: large buffers between a session and a worker it forked, passed as
memfds over their private socket pair instead of being copied through the kernel.

Who writes and who reads::

    sender: Pool.take -> copy the buffer in (the call's snapshot) -> fd over the socket pair
    receiver: map the fd, copy it out into memory of its own (writable, private), unmap,
              close the fd; report the segment's id as released
    sender: Pool.give_back when the segment is free again (the session: when the call is
            finished; a worker: when the session's RELEASE names it)

The receiver always copies out, so a segment is reused only by its owner and no process ever
sees a buffer change under it. A segment's pages stay allocated while it waits in its pool,
which is what makes the next copy cheap (allocating shared pages costs more than copying into
them). Memfds vanish with their last descriptor: a process that dies takes its segments with
it. The socket pair is private to the two processes, so the kernel vouches for whoever passed
a descriptor; the message that names it is still authenticated (see :mod:`.framing`).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
import weakref
from typing import Any, MutableMapping

#: Buffers at least this large travel in segments (below it a copy through the socket costs
#: less than the system calls of a segment).
SHARED_MIN = 1 << 18
#: The most free bytes a pool keeps for reuse; beyond, freed segments are closed.
FREE_LIMIT = 256 << 20
#: The most segments a pool lends at once (each holds two descriptors); beyond, buffers are
#: copied as bytes.
MAX_LENT = 128
#: The most segments one message passes as descriptors (SCM_RIGHTS takes up to 253); a
#: message with more sends the rest as bytes.
MAX_PASSED = 64
_ROUND = 1 << 16
#: A segment's size is sealed, so that a receiver can never map past its end.
_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)


def supported() -> bool:
    """Whether this system has sealable memfds (Linux)."""
    return hasattr(os, "memfd_create") and _SEALS != 0


class Segment:
    """A memfd mapped here, lent by a pool; ``size`` bytes of it hold the buffer."""

    __slots__ = ("fd", "map", "capacity", "size", "id", "pool", "__weakref__")

    def __init__(self, capacity: int, segment_id: int, pool: "Pool") -> None:
        fd = os.memfd_create("remotefn", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, capacity)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            # MAP_POPULATE: allocate every page now, in one pass, rather than one fault each.
            self.map = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.capacity = capacity
        self.size = 0
        self.id = segment_id
        self.pool: Pool | None = pool

    def view(self) -> memoryview:
        """The buffer's bytes (for links that cannot pass descriptors)."""
        return memoryview(self.map)[:self.size]

    def release(self) -> None:
        """Back to its pool: the buffer it holds is no longer needed."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.give_back(self)

    def close(self) -> None:
        self.pool = None
        if self.fd >= 0:
            try:
                self.map.close()
            except BufferError:  # a view is still being sent; the mapping goes with it
                pass
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:  # not when __init__ failed
            self.close()


class Pool:
    """The segments of one process (a session, or a worker on a socket pair): lends one per
    large buffer and keeps freed ones, up to :data:`FREE_LIMIT` bytes, for the next.
    Thread-safe: a session's callers take segments while its hub thread gives them back.

    ``hold_lent``: the pool keeps lent segments alive until given back (a worker, whose
    results are freed by the session's RELEASE); otherwise whoever holds a segment keeps it,
    and one dropped without being given back closes (a session's call answered from the
    cache, or cancelled)."""

    def __init__(self, hold_lent: bool = False) -> None:
        self._lock = threading.Lock()
        self.free: list[Segment] = []
        self.free_bytes = 0
        #: Segments out, by id: sent and not yet given back.
        self.lent: MutableMapping[int, Segment] = {} if hold_lent \
            else weakref.WeakValueDictionary()
        self._next_id = 0
        self.closed = False

    def copy(self, buffer: Any) -> Segment | None:
        """A segment holding a copy of ``buffer`` (a contiguous buffer), or None when the
        pool lends too many or the system has no descriptor left (copy it as bytes then)."""
        source = memoryview(buffer).cast("B")
        size = source.nbytes
        with self._lock:
            if self.closed or len(self.lent) >= MAX_LENT:
                return None
            segment = self._reuse(size)
            self._next_id += 1
            segment_id = self._next_id
        if segment is None:
            try:
                segment = Segment(-(-size // _ROUND) * _ROUND, segment_id, self)
            except OSError:
                return None
        segment.map[:size] = source  # outside the lock: other callers copy meanwhile
        segment.id, segment.size, segment.pool = segment_id, size, self
        with self._lock:
            self.lent[segment_id] = segment
        return segment

    def _reuse(self, size: int) -> Segment | None:
        best = None
        for segment in self.free:
            if size <= segment.capacity <= 2 * size + _ROUND and (
                    best is None or segment.capacity < best.capacity):
                best = segment
        if best is not None:
            self.free.remove(best)
            self.free_bytes -= best.capacity
        return best

    def give_back(self, segment: Segment) -> None:
        """``segment`` is free again: keep it for reuse, or close it."""
        closing = [segment]
        with self._lock:
            self.lent.pop(segment.id, None)
            if not self.closed and segment.capacity <= FREE_LIMIT:
                closing.clear()
                self.free.append(segment)
                self.free_bytes += segment.capacity
                while self.free_bytes > FREE_LIMIT:
                    oldest = self.free.pop(0)
                    self.free_bytes -= oldest.capacity
                    closing.append(oldest)
        for old in closing:
            old.close()

    def release_ids(self, ids: list[int]) -> None:
        """Give back the lent segments named by the receiver's RELEASE."""
        for segment_id in ids:
            with self._lock:
                segment = self.lent.get(segment_id)
            if segment is not None:
                segment.release()

    def close(self) -> None:
        """Close the free segments; lent ones close when they come back (or are dropped)."""
        with self._lock:
            self.closed = True
            free, self.free, self.free_bytes = self.free, [], 0
        for segment in free:
            segment.close()


class Received(mmap.mmap):
    """A buffer copied out of a segment that arrived: private, writable memory of this
    process (anonymous, so it holds no descriptor)."""


def receive(fd: int, size: int) -> Received:
    """Copy ``size`` bytes out of the segment ``fd`` into a :class:`Received` buffer and close
    ``fd``. ``ValueError`` when ``fd`` is not a sealed segment that large (it would fault)."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        actual = os.fstat(fd).st_size
        if size < 1 or not seals & fcntl.F_SEAL_SHRINK or actual < size:
            raise ValueError(f"a passed descriptor is not a segment of the {size} bytes "
                             f"announced: it holds {actual} bytes, "
                             f"{'sealed' if seals & fcntl.F_SEAL_SHRINK else 'not sealed'} "
                             f"against shrinking")
        out = Received(-1, size, flags=mmap.MAP_PRIVATE)
        if size >= 2 << 20:
            try:
                out.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # advice only: a kernel without transparent huge pages refuses it
                pass
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                       prot=mmap.PROT_READ) as source:
            memoryview(out)[:] = memoryview(source)
    except OSError as error:
        raise ValueError(f"a passed segment cannot be read: {error}") from None
    finally:
        os.close(fd)
    return out


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
