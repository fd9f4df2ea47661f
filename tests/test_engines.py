"""Tests that need SLURM, Flux or GPUs never pass silently: where the engine is missing they
skip with the reason in the summary, and where REQUIRE_<ENGINE>=1 says it was expected (as
``make test`` does for SLURM when it has a cluster) the skip is a failure."""

from __future__ import annotations

import pytest

TESTS = """
    import pytest
    from helpers import needs

    @needs("slurm", "sinfo is not answering here")
    def test_marked_and_missing():
        pass

    @needs("slurm", None)
    def test_marked_and_present():
        pass

    @needs("slurm", None)
    def test_skips_inside_the_test():
        pytest.importorskip("no_such_module_here")

    @needs("flux", "FLUX_URI is not set")
    def test_another_engine():
        pass

    def test_unmarked_skip():
        pytest.skip("not an engine")
"""


@pytest.fixture
def run(pytester, monkeypatch):
    pytester.makeconftest('pytest_plugins = ["engines"]')
    pytester.makepyfile(test_marked=TESTS)

    def run_with(**environment):
        for engine in ("SLURM", "FLUX", "GPU"):
            monkeypatch.delenv(f"REQUIRE_{engine}", raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        return pytester.runpytest("-ra", "-p", "no:cacheprovider")

    return run_with


def test_a_missing_engine_is_a_skip_that_prints_its_reason(run):
    result = run()
    result.assert_outcomes(passed=1, skipped=4)
    summary = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert summary == [
        "SKIPPED [1] test_marked.py:4: needs slurm: sinfo is not answering here",
        "SKIPPED [1] test_marked.py:14: could not import 'no_such_module_here': No module "
        "named 'no_such_module_here'",
        "SKIPPED [1] test_marked.py:16: needs flux: FLUX_URI is not set",
        "SKIPPED [1] test_marked.py:21: not an engine"]


def test_require_slurm_turns_every_skip_of_a_slurm_test_into_a_failure(run):
    result = run(REQUIRE_SLURM="1")
    result.assert_outcomes(passed=1, errors=1, failed=1, skipped=2)  # errors: at setup
    result.stdout.fnmatch_lines([
        "ERROR*test_marked_and_missing - REQUIRE_SLURM=1*",
        "FAILED*test_skips_inside_the_test - REQUIRE_SLURM=1*"])
    assert "sinfo is not answering here" in result.stdout.str()


def test_require_flux_fails_only_the_flux_tests(run):
    result = run(REQUIRE_FLUX="1")
    result.assert_outcomes(passed=1, errors=1, skipped=3)
    result.stdout.fnmatch_lines(["ERROR*test_another_engine - REQUIRE_FLUX=1*"])
    assert "FLUX_URI is not set" in result.stdout.str()


def test_require_zero_is_not_required(run):
    run(REQUIRE_SLURM="0", REQUIRE_FLUX="").assert_outcomes(passed=1, skipped=4)
