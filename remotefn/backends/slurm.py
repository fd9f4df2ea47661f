"""The SLURM backend (workers as ``srun`` job steps); not available in this version."""

from __future__ import annotations

from typing import Any


class SlurmBackend:
    name = "slurm"

    def __init__(self, **settings: Any) -> None:
        raise NotImplementedError(
            "the slurm backend is not available yet; use remotefn.session(backend='local') "
            "or set REMOTEFN_BACKEND=local")


BACKEND = SlurmBackend
