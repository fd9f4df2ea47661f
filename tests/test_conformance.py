"""CPython's own tests of ``concurrent.futures`` executors, run against a remotefn session.

They are read from Debian's ``libpython3.X-testsuite`` package (``make test`` installs it
when run as root), never copied here; without it these tests are skipped with the reason.
The deliberate differences are in :data:`DIFFERENCES`, each with why (docs/api.md lists them).
Executors: the generic tests (ExecutorTest, WaitTests, AsCompletedTests, and the shutdown
tests that start no interpreter naming a ``concurrent.futures`` class); futures: FutureTests,
on RemoteFuture.
"""

from __future__ import annotations

import importlib
import logging
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
    "test_multiple_set_result":
        "a RemoteFuture's repr names its class and its function; the test matches the "
        "standard repr in its error message exactly",
    "test_multiple_set_exception":
        "a RemoteFuture's repr names its class and its function (as above)",
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


def remote_future() -> remotefn.RemoteFuture:
    """A RemoteFuture standing for a ``Future()``: its condition and waits are remotefn's."""
    return remotefn.RemoteFuture(remotefn.CallInfo("f", 0, 0.0))


class RemotefnFutureTest(cpython.FutureTests):
    """CPython's tests of Future, on RemoteFuture wherever they make one (``Future()`` and
    ``create_future``; the module's constant futures stay standard ones)."""

    def setUp(self):
        skip = DIFFERENCES.get(self._testMethodName)
        if skip:
            self.skipTest(f"deliberate difference: {skip}")
        self._standard = cpython.Future
        cpython.Future = remote_future
        # A failing callback is logged; these tests read it on stderr, where logging's last
        # resort puts it when nothing is configured (pytest configures a handler).
        self._logger = logging.getLogger("concurrent.futures")
        self._handler = _ToStderr()
        self._logger.addHandler(self._handler)
        self._propagate, self._logger.propagate = self._logger.propagate, False
        super().setUp()

    def tearDown(self):
        cpython.Future = self._standard
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
        super().tearDown()


class _ToStderr(logging.Handler):
    """Writes records to whatever ``sys.stderr`` is when they come (tests capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")
