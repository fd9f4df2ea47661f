"""Stand-in of flux.resource.list: resource_list(handle).get() with all/free/allocated."""

from __future__ import annotations

from dataclasses import dataclass

import flux
from flux.job import running_jobs


@dataclass
class ResourceSet:
    ncores: int
    ngpus: int
    nnodes: int = 1


@dataclass
class ResourceList:
    all: ResourceSet
    free: ResourceSet
    allocated: ResourceSet


class _Request:
    def get(self) -> ResourceList:
        cores, gpus = flux.instance_size()
        used_cores = sum(job.cores for job in running_jobs())
        used_gpus = sum(job.gpus for job in running_jobs())
        return ResourceList(ResourceSet(cores, gpus), ResourceSet(cores - used_cores,
                                                                  gpus - used_gpus),
                            ResourceSet(used_cores, used_gpus))


def resource_list(handle: flux.Flux) -> _Request:
    return _Request()
