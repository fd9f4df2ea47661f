"""Whether a call's options can ever run in a session: checked once per set of options."""

from __future__ import annotations

from ..backends.base import Backend
from ..hub.ledger import Demand, Ledger
from ..options import CallOptions


class Admission:
    """Checks options against the session's capacity and its backend's rules, and remembers
    the options it accepted (calls come in runs with the same options)."""

    def __init__(self, ledger: Ledger, backend: Backend) -> None:
        self.ledger = ledger
        self.backend = backend
        self._accepted: set[CallOptions] = set()
        self._last: CallOptions | None = None

    def check(self, options: CallOptions) -> None:
        """Raise ``ValueError`` (or what the backend raises) for options that can never
        run here."""
        if options is self._last:
            return
        try:
            if options in self._accepted:
                return
        except TypeError:  # extras holding lists: checked on every call
            pass
        self._check_fits(options)
        self.backend.check_options(options)
        self.backend.check_extras(options.extras)
        try:
            self._accepted.add(options)
        except TypeError:
            return
        self._last = options

    def _check_fits(self, options: CallOptions) -> None:
        why = self.ledger.never_fits(Demand.of(options))
        if why is not None:
            raise ValueError(f"the call asks for {options.cores} ranks x "
                             f"{options.threads_per_core} threads and {options.gpus} GPUs per "
                             f"rank: {why}")
        if options.block and options.max_workers:
            why = self.ledger.never_fits(Demand.of(options, options.max_workers))
            if why is not None:
                raise ValueError(f"a block pool of max_workers={options.max_workers} workers "
                                 f"asks for {why}; lower max_workers")
