"""CPython's own tests of ``concurrent.futures`` executors, run against a remotefn session.

They are read from Debian's ``libpython3.X-testsuite`` package (``make test`` installs it
when run as root), never copied here; without it these tests are skipped with the reason.
The deliberate differences are in :data:`DIFFERENCES`, each with why.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

import pytest

import remotefn

SOURCE = (f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/test/"
          "test_concurrent_futures.py")

#: CPython tests that remotefn fails on purpose, and why.
DIFFERENCES = {
    "test_max_workers_negative":
        "a session is sized by its backend's max_cores, not max_workers; a bad max_cores "
        "raises ValueError naming max_cores",
    "test_cancel_futures":
        "shutdown(cancel_futures=True) cancels every call that has not started, as "
        "documented; calls are marked running only when a worker takes them, so right after "
        "submission all 50 may still be waiting and be cancelled (the test expects some to "
        "have started)",
}


def _load():
    """CPython's test module, importable by workers as ``cpython_futures_tests``."""
    if not os.path.exists(SOURCE):
        return None
    directory = os.path.join(tempfile.gettempdir(), f"remotefn-cpython-tests-{os.getuid()}")
    os.makedirs(directory, exist_ok=True)
    link = os.path.join(directory, "cpython_futures_tests.py")
    if os.path.realpath(link) != SOURCE:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(SOURCE, link)
    if directory not in sys.path:
        sys.path.append(directory)  # workers inherit the caller's import path
    return importlib.import_module("cpython_futures_tests")


cpython = _load()
if cpython is None:
    pytest.skip(f"CPython's executor tests are not installed ({SOURCE}); as root: "
                f"apt-get install libpython{sys.version_info.major}.{sys.version_info.minor}"
                "-testsuite", allow_module_level=True)


def session_executor(max_workers=None, **settings):
    """A local session standing for an executor of ``max_workers`` workers."""
    return remotefn.session("local", max_cores=max_workers, forward_output=False, **settings)


class RemotefnMixin(cpython.ExecutorMixin):
    executor_type = staticmethod(session_executor)

    def setUp(self):
        skip = DIFFERENCES.get(self._testMethodName)
        if skip:
            self.skipTest(f"deliberate difference: {skip}")
        super().setUp()


class RemotefnExecutorTest(RemotefnMixin, cpython.ExecutorTest, cpython.BaseTestCase):
    pass


class RemotefnWaitTest(RemotefnMixin, cpython.WaitTests, cpython.BaseTestCase):
    pass


class RemotefnAsCompletedTest(RemotefnMixin, cpython.AsCompletedTests, cpython.BaseTestCase):
    pass


class RemotefnShutdownTest(RemotefnMixin, cpython.BaseTestCase):
    """The parts of CPython's shutdown tests that do not start an interpreter naming a
    ``concurrent.futures`` class."""

    test_run_after_shutdown = cpython.ExecutorShutdownTest.test_run_after_shutdown
    test_hang_issue12364 = cpython.ExecutorShutdownTest.test_hang_issue12364
    test_cancel_futures = cpython.ExecutorShutdownTest.test_cancel_futures
