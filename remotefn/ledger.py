"""The capacity ledger: which cores and GPUs of the session are free.

Only the hub thread touches it. A worker takes an :class:`Allocation` when it is launched
and gives it back when it exits (or is told to).
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends import Capacity


@dataclass(frozen=True)
class Allocation:
    cores: int
    gpu_ids: tuple[int, ...] = ()


class Ledger:
    """Counts cores in use and hands out GPU ids so that no two workers share one."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.cores_in_use = 0
        self.free_gpus: list[int] = list(capacity.gpu_ids)

    def fits(self, cores: int, gpus: int) -> bool:
        return (self.cores_in_use + cores <= self.capacity.cores
                and gpus <= len(self.free_gpus))

    def take(self, cores: int, gpus: int) -> Allocation | None:
        """Reserve ``cores`` and ``gpus``; None if they are not free now."""
        if not self.fits(cores, gpus):
            return None
        self.cores_in_use += cores
        ids = tuple(self.free_gpus[:gpus])
        del self.free_gpus[:gpus]
        return Allocation(cores, ids)

    def give_back(self, allocation: Allocation) -> None:
        self.cores_in_use -= allocation.cores
        self.free_gpus = sorted([*self.free_gpus, *allocation.gpu_ids])

    def never_fits(self, cores: int, gpus: int) -> str | None:
        """Why a worker of this size can never start in this session, or None."""
        if cores > self.capacity.cores:
            return f"{cores} cores but the session has {self.capacity.cores}"
        if gpus > len(self.capacity.gpu_ids):
            return f"{gpus} GPUs but the session has {len(self.capacity.gpu_ids)}"
        return None

    def report(self) -> dict[str, dict[str, int]]:
        total_gpus = len(self.capacity.gpu_ids)
        return {
            "cores": {"total": self.capacity.cores, "in_use": self.cores_in_use,
                      "free": self.capacity.cores - self.cores_in_use},
            "gpus": {"total": total_gpus, "in_use": total_gpus - len(self.free_gpus),
                     "free": len(self.free_gpus)},
        }
