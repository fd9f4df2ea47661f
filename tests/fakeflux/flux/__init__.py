"""A stand-in for the part of flux-python that remotefn's flux backend uses.

Jobs are real local processes: a job of N tasks runs under the mpich wheel's mpiexec (so MPI
ranks are real), its environment and working directory as the jobspec says. The instance's
size comes from FAKEFLUX_CORES and FAKEFLUX_GPUS. ``pmi=pmix`` starts the tasks as
singletons, as a Flux without the flux-pmix plugin does. A job whose command starts with
``flux start`` runs the rest in a nested instance, as Flux does: with a FLUX_URI of its own
and the job's cores and GPUs as the instance's size. Lives in the tests, never in the
library.
"""

from __future__ import annotations

import os


class Flux:
    """A handle on the (stand-in) instance."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or os.environ.get("FLUX_URI")


def instance_size() -> tuple[int, int]:
    return int(os.environ.get("FAKEFLUX_CORES", "4")), int(os.environ.get("FAKEFLUX_GPUS", "0"))
