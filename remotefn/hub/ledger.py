"""The capacity ledger: which CPUs and GPUs of the session are free.

Only the hub thread changes it. A worker takes a :class:`Share` when it is launched and gives
it back when it exits (or is told to).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import Capacity


@dataclass(frozen=True)
class Share:
    """What one worker holds: CPUs and the ids of its GPUs."""

    cpus: int
    gpu_ids: tuple[int, ...] = ()


class Ledger:
    """Counts CPUs in use and hands out GPU ids so that no two workers share one."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.cpus_in_use = 0
        self.free_gpus: list[int] = list(capacity.gpu_ids)

    def fits(self, cpus: int, gpus: int, freed: Share = Share(0)) -> bool:
        """Whether ``cpus`` and ``gpus`` are free now (once ``freed`` is given back)."""
        return (self.cpus_in_use - freed.cpus + cpus <= self.capacity.cpus
                and gpus <= len(self.free_gpus) + len(freed.gpu_ids))

    def take(self, cpus: int, gpus: int) -> Share | None:
        """Reserve ``cpus`` and ``gpus``; None if they are not free now."""
        if not self.fits(cpus, gpus):
            return None
        self.cpus_in_use += cpus
        ids = tuple(self.free_gpus[:gpus])
        del self.free_gpus[:gpus]
        return Share(cpus, ids)

    def give_back(self, share: Share) -> None:
        self.cpus_in_use -= share.cpus
        self.free_gpus = sorted([*self.free_gpus, *share.gpu_ids])

    def never_fits(self, cpus: int, gpus: int) -> str | None:
        """Why a worker of this size can never start in this session, or None."""
        if cpus > self.capacity.cpus:
            return f"{cpus} cores but the session has {self.capacity.cpus}"
        if gpus > len(self.capacity.gpu_ids):
            return f"{gpus} GPUs but the session has {len(self.capacity.gpu_ids)}"
        return None

    def report(self) -> dict[str, dict[str, int]]:
        total_gpus = len(self.capacity.gpu_ids)
        return {
            "cores": {"total": self.capacity.cpus, "in_use": self.cpus_in_use,
                      "free": self.capacity.cpus - self.cpus_in_use},
            "gpus": {"total": total_gpus, "in_use": total_gpus - len(self.free_gpus),
                     "free": len(self.free_gpus)},
        }
