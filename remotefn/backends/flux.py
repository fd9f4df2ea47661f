"""The Flux backend (workers as Flux jobs); not available in this version."""

from __future__ import annotations

from typing import Any


class FluxBackend:
    name = "flux"

    def __init__(self, **settings: Any) -> None:
        raise NotImplementedError(
            "the flux backend is not available yet; use remotefn.session(backend='local') "
            "or set REMOTEFN_BACKEND=local")


BACKEND = FluxBackend
