"""The capacity ledger: which CPUs, GPUs and memory of each node of the session are free.

Only the hub thread changes it. A worker takes a :class:`Share` when it is launched and gives
it back when it exits (or is told to). A session without named nodes (local, Flux) is one
node. A worker's ranks go on one node where they fit, else spread over the nodes in order,
as ``srun`` places a step's tasks; the share says where, so the backend can pin the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import Capacity, Node
from ..options import CallOptions


@dataclass(frozen=True)
class Demand:
    """What one worker needs: ``ranks`` of ``cpus`` CPUs and ``gpus`` GPUs each, on exactly
    ``nodes`` nodes or at most ``per_node`` ranks a node when the call says so."""

    ranks: int
    cpus: int = 1
    gpus: int = 0
    nodes: int | None = None
    per_node: int | None = None

    @classmethod
    def of(cls, options: CallOptions, workers: int = 1) -> "Demand":
        extras = dict(options.extras)
        return cls(options.cores * workers, options.threads_per_core, options.gpus,
                   extras.get("nodes") if workers == 1 else None,
                   extras.get("ntasks_per_node"))

    def describe(self) -> str:
        gpus = f" and {self.gpus} GPUs" if self.gpus else ""
        return f"{self.ranks} x {self.cpus} CPUs{gpus}"


@dataclass(frozen=True)
class Share:
    """What one worker holds: CPUs, the ids of its GPUs, and per node (index into the
    ledger's nodes) the CPUs, GPU ids and memory it holds there."""

    cpus: int
    gpu_ids: tuple[int, ...] = ()
    places: tuple[tuple[int, int, tuple[int, ...], int], ...] = ()


class _Free:
    """What is free on one node."""

    __slots__ = ("cpus", "gpus", "memory", "up")

    def __init__(self, node: Node) -> None:
        self.cpus = node.cpus
        self.gpus = list(node.gpu_ids)
        #: MB free; None where memory is not counted.
        self.memory: int | None = node.memory or None
        self.up = True


class Ledger:
    """Counts CPUs and memory in use per node and hands out GPU ids so that no two workers
    share one."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.nodes: tuple[Node, ...] = capacity.nodes or (
            Node("", capacity.cpus, capacity.gpu_ids),)
        self.free = [_Free(node) for node in self.nodes]
        #: The nodes that failed, in the order they did.
        self.lost: list[str] = []

    def _memory(self, demand: Demand) -> int:
        return demand.cpus * self.capacity.memory_per_cpu

    def _ranks_on(self, free: _Free, demand: Demand) -> int:
        """How many ranks of ``demand`` fit in ``free``."""
        if not free.up:
            return 0
        fit = free.cpus // demand.cpus
        if demand.gpus:
            fit = min(fit, len(free.gpus) // demand.gpus)
        memory = self._memory(demand)
        if memory and free.memory is not None:
            fit = min(fit, free.memory // memory)
        return min(fit, demand.per_node or fit)

    def _place(self, demand: Demand, free: list[_Free]) -> list[tuple[int, int]] | None:
        """``(node index, ranks)`` for each node the worker would use, or None. Without named
        nodes, where the ranks go is the backend's scheduler's business (Flux's ``nodes``)."""
        if not self.capacity.nodes and (demand.nodes or demand.per_node):
            demand = Demand(demand.ranks, demand.cpus, demand.gpus)
        room = [self._ranks_on(f, demand) for f in free]
        if demand.nodes is None:
            for index, fit in enumerate(room):
                if fit >= demand.ranks:
                    return [(index, demand.ranks)]
            chosen = [index for index, fit in enumerate(room) if fit]
        else:
            chosen = [index for index, fit in enumerate(room) if fit][:demand.nodes]
            if demand.ranks < demand.nodes or len(chosen) < demand.nodes:
                return None
        counts = {index: 1 if demand.nodes else 0 for index in chosen}  # srun -N: one each
        left = demand.ranks - sum(counts.values())
        for index in chosen:
            more = min(left, room[index] - counts[index])
            counts[index] += more
            left -= more
        if left:
            return None
        return [(index, ranks) for index, ranks in counts.items() if ranks]

    def _with_freed(self, freed: Share | None) -> list[_Free]:
        if freed is None or not freed.places:
            return self.free
        copies = []
        for index, free in enumerate(self.free):
            copy = _Free(self.nodes[index])
            copy.cpus, copy.gpus, copy.up = free.cpus, list(free.gpus), free.up
            copy.memory = free.memory
            copies.append(copy)
        for index, cpus, gpu_ids, memory in freed.places:
            copy = copies[index]
            copy.cpus += cpus
            copy.gpus.extend(gpu_ids)
            if copy.memory is not None:
                copy.memory += memory
        return copies

    def fits(self, demand: Demand, freed: Share | None = None) -> bool:
        """Whether ``demand`` fits now (once ``freed`` is given back)."""
        return self._place(demand, self._with_freed(freed)) is not None

    def take(self, demand: Demand) -> Share | None:
        """Reserve what ``demand`` needs; None if it does not fit now."""
        places = self._place(demand, self.free)
        if places is None:
            return None
        held: list[tuple[int, int, tuple[int, ...], int]] = []
        all_gpus: list[int] = []
        for index, ranks in places:
            free = self.free[index]
            cpus, memory = ranks * demand.cpus, ranks * self._memory(demand)
            gpus = tuple(free.gpus[:ranks * demand.gpus])
            del free.gpus[:ranks * demand.gpus]
            free.cpus -= cpus
            if free.memory is not None:
                free.memory -= memory
            held.append((index, cpus, gpus, memory))
            all_gpus.extend(gpus)
        return Share(demand.ranks * demand.cpus, tuple(all_gpus), tuple(held))

    def give_back(self, share: Share) -> None:
        for index, cpus, gpu_ids, memory in share.places:
            free = self.free[index]
            free.cpus += cpus
            if free.memory is not None:
                free.memory += memory
            free.gpus = sorted([*free.gpus, *gpu_ids])

    def node_names(self, share: Share) -> tuple[str, ...]:
        """The names of the nodes ``share`` is on (empty for an unnamed node)."""
        return tuple(self.nodes[index].name for index, *_ in share.places
                     if self.nodes[index].name)

    def lose(self, name: str) -> bool:
        """Take the node ``name`` out of the ledger (it failed); False if it is unknown."""
        for node, free in zip(self.nodes, self.free):
            if node.name == name and free.up:
                free.up = False
                self.lost.append(name)
                return True
        return False

    def never_fits(self, demand: Demand) -> str | None:
        """Why a worker of this size can never start in this session, or None."""
        cpus, gpus = demand.ranks * demand.cpus, demand.ranks * demand.gpus
        up = [(node, free) for node, free in zip(self.nodes, self.free) if free.up]
        total_cpus = sum(node.cpus for node, _ in up)
        total_gpus = sum(len(node.gpu_ids) for node, _ in up)
        if cpus > total_cpus:
            return f"{cpus} cores but the session has {total_cpus}"
        if gpus > total_gpus:
            return f"{gpus} GPUs but the session has {total_gpus}"
        if self._place(demand, [_Free(node) for node, _ in up]) is None:
            largest = max(up, key=lambda pair: pair[0].cpus)[0]
            with_gpus = f" and {demand.gpus} GPUs" if demand.gpus else ""
            spread = f" on {demand.nodes} nodes" if demand.nodes else ""
            name = largest.name or "this node"
            return (f"{demand.ranks} ranks of {demand.cpus} CPUs{with_gpus} each{spread}, "
                    f"which the session's nodes cannot hold (the largest, {name}, "
                    f"has {largest.cpus} CPUs and {len(largest.gpu_ids)} GPUs)")
        return None

    def why_waiting(self, demand: Demand) -> str | None:
        """Why ``demand`` does not fit now (what is free on each node), or None if it does."""
        if self.fits(demand):
            return None
        free = ", ".join(
            f"{node.name + ' ' if node.name else ''}{f.cpus} CPUs {len(f.gpus)} GPUs"
            + (f" {f.memory} MB" if f.memory is not None else "")
            for node, f in zip(self.nodes, self.free) if f.up)
        where = " on one node" if demand.ranks == 1 else ""
        return f"waiting for {demand.describe()}{where}; free: {free}"

    def report(self) -> dict[str, object]:
        up = [(node, free) for node, free in zip(self.nodes, self.free) if free.up]
        total_cpus = sum(node.cpus for node, _ in up)
        total_gpus = sum(len(node.gpu_ids) for node, _ in up)
        free_cpus = sum(free.cpus for _, free in up)
        free_gpus = sum(len(free.gpus) for _, free in up)
        report: dict[str, object] = {
            "cores": {"total": total_cpus, "in_use": total_cpus - free_cpus, "free": free_cpus},
            "gpus": {"total": total_gpus, "in_use": total_gpus - free_gpus, "free": free_gpus},
        }
        if self.capacity.nodes:
            report["nodes"] = [{"node": node.name, "state": "up" if free.up else "lost",
                                "cores": {"total": node.cpus, "free": free.cpus},
                                "gpus": {"total": len(node.gpu_ids), "free": len(free.gpus)},
                                "memory": {"total": node.memory, "free": free.memory}}
                               for node, free in zip(self.nodes, self.free)]
        return report
