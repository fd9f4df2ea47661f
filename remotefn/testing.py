"""The one hook into a live session for remotefn's own tests.

It shows what the session's hub knows that the public API does not: its address, the
messages it dropped, its secret, its run directory and the calls it keeps waiting, and lets
a test stop the hub under a session that was not shut down. Programs should not use it; it
may change in any release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sessions.session import Session


class SessionProbe:
    """A view of one session's hub, for tests."""

    def __init__(self, session: "Session") -> None:
        self._hub = session._hub

    @property
    def address(self) -> str:
        """The address the session's workers connect to."""
        return self._hub.address

    @property
    def server_key(self) -> bytes:
        """The CURVE public key a peer needs to complete the ZeroMQ handshake."""
        return self._hub.links.server_public

    @property
    def rejected(self) -> int:
        """Messages dropped because they failed authentication or came from unknown peers."""
        return self._hub.rejected

    @property
    def secret(self) -> bytes:
        """The session's secret key (to check that it reaches nothing it should not)."""
        return self._hub.key

    @property
    def runtime_dir(self) -> str:
        """The session's private run directory."""
        return self._hub.runtime_dir

    @property
    def pools(self) -> int:
        """How many pools (sets of workers sharing options) the session has made."""
        return len(self._hub.scheduler.pools)

    @property
    def queued(self) -> int:
        """Calls the hub has taken in and left waiting for a worker, counted under the hub's
        lock, so after it has scheduled them: a call counted here is on no worker now."""
        with self._hub.lock:
            return sum(len(pool.queue) for pool in self._hub.scheduler.pools.values())

    @property
    def stopped(self) -> bool:
        """Whether the hub has stopped every worker and closed its sockets."""
        return self._hub.stopped.is_set()

    def stop_hub(self, timeout: float = 30.0) -> bool:
        """Kill the workers and stop the hub without shutting the session down, as a crash
        would; True once it has stopped."""
        self._hub.stop(kill=True)
        return self._hub.stopped.wait(timeout)


def probe(session: "Session") -> SessionProbe:
    """The test hook of ``session``."""
    return SessionProbe(session)
