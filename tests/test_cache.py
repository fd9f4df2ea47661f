"""The HDF5 result cache: reuse across runs, invalidation, safety under crashes and races."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import h5py
import numpy as np
import pytest

import remotefn
from remotefn import SerializationError, cache, remote
from remotefn.cache import store
from helpers import read_pid, wait_until


def record(path, x):
    """Appends a line to ``path`` each time it really runs."""
    with open(path, "a") as file:
        file.write(f"{x}\n")
    return x * 2


def runs(path) -> int:
    return len(open(path).read().split()) if os.path.exists(path) else 0


def array_of(n):
    return np.arange(n, dtype=np.float64)


def fail(x):
    raise ValueError(x)


def locked():
    return threading.Lock()


@pytest.fixture
def cached(tmp_path):
    with remotefn.session("local", cache_directory=str(tmp_path / "cache"),
                          forward_output=False) as session:
        yield session


SCRIPT = """
    import sys
    import remotefn
    from remotefn import remote

    def record(path, x):
        with open(path, "a") as file:
            file.write(f"{x}\\n")
        return x * {factor}

    with remotefn.session("local", cache_directory=sys.argv[1], forward_output=False):
        future = remote(record)(sys.argv[2], 21)
        print(future.result(), future.info.from_cache)
"""


def run_script(directory, log, factor=2):
    code = textwrap.dedent(SCRIPT.replace("{factor}", str(factor)))
    out = subprocess.run([sys.executable, "-c", code, str(directory), str(log)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_rerun_in_a_fresh_process_is_served_from_the_cache(tmp_path):
    log = tmp_path / "log"
    assert run_script(tmp_path / "cache", log) == ["42", "False"]
    assert run_script(tmp_path / "cache", log) == ["42", "True"]
    assert runs(log) == 1


def test_a_change_to_the_functions_code_invalidates(tmp_path):
    log = tmp_path / "log"
    assert run_script(tmp_path / "cache", log, factor=2) == ["42", "False"]
    assert run_script(tmp_path / "cache", log, factor=3) == ["63", "False"]
    assert runs(log) == 2


def test_cache_by_name_ignores_code_changes(tmp_path):
    def first(x):
        return x + 1

    def second(x):
        return x + 2

    second.__qualname__ = first.__qualname__
    with remotefn.session("local", cache_directory=str(tmp_path), cache_by="name",
                          forward_output=False) as session:
        assert session.submit(first, 1).result(timeout=30) == 2
        hit = session.submit(second, 1)
        assert hit.result(timeout=30) == 2 and hit.info.from_cache


def test_hit_never_runs_the_function(cached, tmp_path):
    log = str(tmp_path / "log")
    handle = remote(record)
    assert handle(log, 1).result(timeout=30) == 2
    again = handle(log, 1)
    assert again.done() and again.info.from_cache and again.result() == 2
    assert handle(log, 2).result(timeout=30) == 4
    assert runs(log) == 2


def test_salt_and_key_function(cached, tmp_path):
    log = str(tmp_path / "log")
    handle = remote(record)
    handle(log, 1).result(timeout=30)
    salted = handle.options(cache_salt="v2")(log, 1)
    assert salted.result(timeout=30) == 2 and not salted.info.from_cache
    keyed = handle.options(cache_key=lambda path, x: x % 10)
    keyed(log, 3).result(timeout=30)
    assert keyed(log, 13).result(timeout=30) == 6  # same key as 3: the stored result
    assert runs(log) == 3


def test_dependency_chains_hit(cached, tmp_path):
    log = str(tmp_path / "log")
    handle = remote(record)
    first = handle(log, handle(log, 1))
    assert first.result(timeout=30) == 4
    second = handle(log, handle(log, 1))
    assert second.result(timeout=30) == 4 and second.info.from_cache
    assert runs(log) == 2


def test_identical_calls_in_flight_run_once(cached, tmp_path):
    log = str(tmp_path / "log")
    handle = remote(record)
    futures = [handle(log, 5) for _ in range(5)]
    assert [f.result(timeout=30) for f in futures] == [10] * 5
    assert runs(log) == 1
    assert sum(f.info.from_cache for f in futures) == 4


def test_exceptions_are_not_cached(cached, tmp_path):
    handle = remote(fail)
    for _ in range(2):
        with pytest.raises(ValueError):
            handle("again").result(timeout=30)
    cached.shutdown()
    assert cache.entries(cached.cache_directory) == []


def test_cache_false_opts_out(cached, tmp_path):
    log = str(tmp_path / "log")
    handle = remote(record, cache=False)
    handle(log, 1).result(timeout=30)
    handle(log, 1).result(timeout=30)
    assert runs(log) == 2


def test_numpy_results_are_datasets_plain_h5py_can_read(cached):
    handle = remote(array_of)
    np.testing.assert_array_equal(handle(5).result(timeout=30), np.arange(5.0))
    cached.shutdown()  # a future may resolve before its entry is written; shutdown flushes
    [entry] = cache.entries(cached.cache_directory)
    with h5py.File(entry.path, "r") as file:
        np.testing.assert_array_equal(file["result"][()], np.arange(5.0))
        assert file.attrs["function"].endswith("array_of")
        assert file.attrs["runtime"] >= 0
        assert file.attrs["remotefn_version"] == remotefn.__version__
    assert os.path.basename(entry.path).startswith("test_cache.array_of_")


def test_arrays_hash_by_content_without_regard_to_identity():
    a = np.arange(1000.0)
    key = cache.call_key(record, "f", (a,), {})
    assert key == cache.call_key(record, "f", (a.copy(),), {})
    assert key != cache.call_key(record, "f", (a.astype(np.float32),), {})
    assert key != cache.call_key(record, "f", (a.reshape(10, 100),), {})
    assert cache.call_key(record, "f", ({"b": 1, "a": {3, 2}},), {}) == \
        cache.call_key(record, "f", ({"a": {2, 3}, "b": 1},), {})


def test_truncated_entry_is_a_miss_with_a_warning_and_is_replaced(cached, tmp_path):
    log = str(tmp_path / "log")
    handle = remote(record)
    handle(log, 1).result(timeout=30)
    cached.shutdown()
    [entry] = cache.entries(cached.cache_directory)
    with open(entry.path, "r+b") as file:
        file.truncate(100)
    with pytest.raises(ValueError, match="HDF5 cannot read it"):  # DamagedEntry, documented
        cache.load(entry.path)
    with remotefn.session("local", cache_directory=cached.cache_directory,
                          forward_output=False):
        with pytest.warns(RuntimeWarning, match="damaged entry .*" + os.path.basename(
                entry.path)):
            assert handle(log, 1).result(timeout=30) == 2
    assert runs(log) == 2
    assert cache.load(entry.path) == 2


def test_load_refuses_what_is_no_entry_with_damaged_entry(tmp_path):
    fifo, group = str(tmp_path / "fifo.h5"), str(tmp_path / "group.h5")
    os.mkfifo(fifo)
    with h5py.File(group, "w") as file:  # the layout of an entry, a group where data goes
        file.attrs["format"], file.attrs["checksum"] = store.FORMAT, "0" * 64
        file.create_group("pickle")
    for path in (fifo, group, str(tmp_path)):
        with pytest.raises(ValueError, match="not a regular file|HDF5 cannot read it"):
            cache.load(path)


STALLED_WRITER = """
    import sys, threading
    from remotefn.cache import store
    from helpers import write_pid

    class Stall:
        # An attribute whose conversion to an array never ends: the writer stops in the
        # middle of writing the entry (its result is written, its temporary file is open).
        def __array__(self, *args, **kwargs):
            write_pid(sys.argv[2])
            threading.Event().wait()

    store.write(store.entry_path(sys.argv[1], "record", "0" * 64), 42,
                {"function": "record", "stall": Stall()})
"""


def test_a_writer_killed_mid_write_leaves_no_entry(tmp_path):
    """A process SIGKILLed while it writes an entry leaves its temporary file (nothing runs
    after SIGKILL), never an entry: the key is a miss, listings ignore the leftover, and the
    next run stores the entry."""
    directory, pidfile = tmp_path / "cache", tmp_path / "pid"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(STALLED_WRITER),
                               str(directory), str(pidfile)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert read_pid(str(pidfile), process=writer) == writer.pid
    finally:
        writer.kill()
        writer.wait(timeout=60)
    [leftover] = os.listdir(directory)
    assert leftover.startswith(".") and leftover.endswith(".tmp")  # killed before the rename
    path = store.entry_path(str(directory), "record", "0" * 64)
    assert store.read_hit(path) == (False, None)
    assert cache.entries(str(directory)) == []
    listing = subprocess.run([sys.executable, "-m", "remotefn", "cache", "ls", str(directory)],
                             capture_output=True, text=True, timeout=60)
    assert "0 entries" in listing.stdout
    store.write(path, 43, {"function": "record"})
    assert cache.load(path) == 43 and len(cache.entries(str(directory))) == 1


def test_concurrent_writers_of_one_key_leave_one_valid_file(tmp_path):
    code = textwrap.dedent("""
        import sys
        from remotefn.cache import store
        path = store.entry_path(sys.argv[1], "f", "a" * 64)
        for i in range(30):
            store.write(path, list(range(1000)), {"function": "f", "key": "a" * 64})
    """)
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
               for _ in range(2)]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    assert os.listdir(tmp_path) == [os.path.basename(store.entry_path(str(tmp_path), "f",
                                                                      "a" * 64))]
    assert cache.load(store.entry_path(str(tmp_path), "f", "a" * 64)) == list(range(1000))


def test_unpicklable_results_give_a_clear_error(cached):
    with pytest.raises(SerializationError, match="locked"):
        remote(locked)().result(timeout=30)


def test_python_api_lists_loads_and_deletes(cached, tmp_path):
    log = str(tmp_path / "log")
    remote(record)(log, 1).result(timeout=30)
    remote(array_of)(3).result(timeout=30)
    cached.shutdown()
    listed = cache.entries(cached.cache_directory)
    assert {e.function.rsplit(".", 1)[-1] for e in listed} == {"record", "array_of"}
    assert all(e.size > 0 and e.created > 0 and len(e.key) == 64 for e in listed)
    assert cache.delete(cached.cache_directory, function="record") == 1
    assert cache.delete(cached.cache_directory, older_than=3600) == 0
    assert cache.delete(cached.cache_directory) == 1


def test_the_command_line(cached, tmp_path):
    remote(record)(str(tmp_path / "log"), 4).result(timeout=30)
    cached.shutdown()
    directory = cached.cache_directory

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "remotefn", "cache", *args],
                              capture_output=True, text=True, timeout=60).stdout

    assert "test_cache.record" in cli("ls", directory) and "1 entries" in cli("ls", directory)
    [entry] = cache.entries(directory)
    shown = cli("show", entry.path)
    assert "value: 8" in shown and "arguments:" in shown
    assert "removed 1 entries" in cli("clear", directory, "--function", "record")
    assert cache.entries(directory) == []


def zeros(n):
    return bytes(n)


def test_a_result_that_was_not_stored_is_computed_again_once_the_warning_is_out(small_disk):
    """Whoever sees "not stored" and calls again gets a fresh run, not the unsaved call's
    value labelled as from the cache."""
    seen = []
    with remotefn.session("local", cache_directory=small_disk, forward_output=False):
        handle = remote(zeros)

        def again_on_warning(message, *rest):
            if "was not stored" in str(message):
                seen.append(handle(1 << 20))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("warnings.showwarning", again_on_warning)
            first = handle(1 << 20)
            assert len(first.result(timeout=60)) == 1 << 20
            wait_until(lambda: seen, what="the warning that the 1 MiB result was not stored")
        assert len(seen[0].result(timeout=60)) == 1 << 20
        assert not seen[0].info.from_cache and seen[0].info.pid is not None
