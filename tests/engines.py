"""A pytest plugin: tests that need an engine (SLURM, Flux, GPUs) skip where it is missing,
with the reason, and fail instead where ``REQUIRE_<ENGINE>=1`` says it was expected.

Mark such a test with :func:`helpers.needs`. ``make test`` sets ``REQUIRE_SLURM=1`` when it
started or found a SLURM cluster, so that a cluster that stopped answering fails the run
instead of passing it with the SLURM tests skipped. Loaded by conftest.py.
"""

from __future__ import annotations

import os

import pytest

ENGINES = ("slurm", "flux", "gpu")


def required(engine: str) -> bool:
    """Whether ``REQUIRE_<ENGINE>=1`` says this run must have ``engine``."""
    return os.environ.get(f"REQUIRE_{engine.upper()}") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(engine, reason): the test needs engine (slurm, flux or gpu); reason "
        "says why it is missing here (None: present); REQUIRE_<ENGINE>=1 turns its skip into "
        "a failure")


def _engines(item: pytest.Item) -> list[tuple[str, str | None]]:
    found = []
    for mark in item.iter_markers("needs"):
        engine = mark.args[0]
        if engine not in ENGINES:
            raise ValueError(f"needs() takes one of {', '.join(ENGINES)}, got {engine!r}")
        found.append((engine, mark.kwargs.get("reason")))
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for engine, reason in _engines(item):
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"needs {engine}: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Any skip of a test that needs a required engine (its mark's, reported as an error at
    setup, or one raised inside the test such as importorskip) becomes a failure naming the
    variable."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    missing = [engine for engine, _ in _engines(item) if required(engine)]
    if missing:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_{missing[0].upper()}=1 but the test was skipped: {reason}"
