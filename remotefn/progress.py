"""Progress bars: ``remotefn.progress(futures)`` shows how many calls are done.

The bar is tqdm's (``tqdm.auto``: a widget in notebooks, text elsewhere); install it with
``pip install 'remotefn[monitor]'``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterable, TypeVar

from .errors import MissingDependency

F = TypeVar("F", bound=concurrent.futures.Future)


def progress(futures: Iterable[F], *, desc: str | None = None, **bar: Any) -> list[F]:
    """Show a progress bar until every future in ``futures`` is done, counting the calls that
    failed (or were cancelled) and those answered from the cache; returns the futures in the
    order given. Blocks; extra keywords go to ``tqdm`` (``file=``, ``leave=``, ...).

    Raises :class:`~remotefn.errors.MissingDependency` when tqdm is not installed.
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise MissingDependency("progress bars need tqdm: pip install 'remotefn[monitor]' "
                                "(or pip install tqdm)") from None
    futures = list(futures)
    counts = {"failed": 0, "cached": 0}
    with tqdm(total=len(futures), desc=desc, unit="call", **bar) as shown:
        for future in concurrent.futures.as_completed(futures):
            if future.cancelled() or future.exception() is not None:
                counts["failed"] += 1
            elif getattr(getattr(future, "info", None), "from_cache", False):
                counts["cached"] += 1
            shown.set_postfix(counts, refresh=False)
            shown.update(1)
    return futures
