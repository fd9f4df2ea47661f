"""A cache hit is never a wrong answer: what the key covers, damaged and unreadable entries,
and writes that never hold up the session."""

from __future__ import annotations

import errno
import functools
import operator
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import h5py
import pytest

import remotefn
from remotefn import cache, remote
from remotefn.cache import store
from remotefn.options import resolve


def echo(x):
    return x


def twice(x):
    return 2 * x


def thrice(x):
    return 3 * x


def text(n):
    return "x" * n


def mode():
    return os.environ.get("MODE", "")


def setup_one():
    return {"scale": 1}


def setup_two():
    return {"scale": 2}


def make_adder(step):
    def add(x):
        return x + step

    return add


# -- what the key covers: options, closures, partials ------------------------------------------

@pytest.mark.parametrize("option, first, second", [
    ("cores", 1, 2),
    ("threads_per_core", 1, 2),
    ("gpus", 0, 1),
    ("env", {"MODE": "fast"}, {"MODE": "accurate"}),
    ("cwd", "/tmp/a", "/tmp/b"),
    ("init", setup_one, setup_two),
])
def test_each_option_that_shapes_the_result_changes_the_key(option, first, second):
    def key(value):
        block = {"block": True} if option == "init" else {}
        return cache.call_key(echo, "echo", (1,), {},
                              options=resolve({**block, option: value}))

    assert key(first) == key(first)
    assert key(first) != key(second)


def test_the_code_of_init_changes_the_key():
    def setup():
        return {"scale": 1}

    first = setup
    exec_namespace: dict = {}
    exec("def setup():\n    return {'scale': 2}\n", exec_namespace)
    second = exec_namespace["setup"]
    second.__qualname__ = first.__qualname__
    keys = {cache.call_key(echo, "echo", (1,), {}, options=resolve({"block": True, "init": init}))
            for init in (first, second)}
    assert len(keys) == 2


def test_an_env_option_is_not_answered_with_another_envs_result(tmp_path):
    with remotefn.session("local", cache_directory=str(tmp_path), forward_output=False):
        handle = remote(mode, cache=True)
        assert handle.options(env={"MODE": "fast"})().result(timeout=60) == "fast"
        accurate = handle.options(env={"MODE": "accurate"})()
        assert accurate.result(timeout=60) == "accurate" and not accurate.info.from_cache
        again = handle.options(env={"MODE": "fast"})()
        assert again.result(timeout=60) == "fast" and again.info.from_cache


def test_closures_with_different_captured_values_do_not_collide():
    one, two = make_adder(1), make_adder(2)
    assert cache.code_digest(one) != cache.code_digest(two)
    assert cache.code_digest(one) == cache.code_digest(make_adder(1))
    assert cache.call_key(one, "add", (1,), {}) != cache.call_key(two, "add", (1,), {})


def test_partials_of_different_functions_do_not_collide():
    add, mul = functools.partial(operator.add, 1), functools.partial(operator.mul, 5)
    name = "functools.partial"
    assert cache.call_key(add, name, (1,), {}) != cache.call_key(mul, name, (1,), {})
    assert cache.call_key(add, name, (1,), {}) != \
        cache.call_key(functools.partial(operator.add, 2), name, (1,), {})
    assert cache.call_key(add, name, (1,), {}) == \
        cache.call_key(functools.partial(operator.add, 1), name, (1,), {})


def test_chunked_maps_of_different_functions_do_not_collide(tmp_path):
    with remotefn.session("local", cache_directory=str(tmp_path),
                          forward_output=False) as session:
        assert list(session.map(twice, range(4), chunksize=2)) == [0, 2, 4, 6]
        assert list(session.map(thrice, range(4), chunksize=2)) == [0, 3, 6, 9]
        assert list(session.map(twice, range(4), chunksize=2)) == [0, 2, 4, 6]


# -- what the key covers: code reached, across runs ---------------------------------------------

SCRIPT = """
    import sys
    import remotefn
    from remotefn import remote
    import userlib

    handle = remote(userlib.compute, **userlib.OPTIONS)
    with remotefn.session("local", cache_directory=sys.argv[1], forward_output=False):
        future = handle(3)
        print(future.result(), future.info.from_cache)
"""

MODULE = """
    import fakelib

    SCALE = 10

    def helper(x):
        return x + 1

    class Model:
        def __init__(self, x):
            self.x = x

        def value(self):
            return self.x * 2

    def setup():
        return {"offset": 100}

    def compute(x, offset=0):
        squares = [i * i for i in range(x)]
        scale = (lambda: SCALE)()

        def inner(y):
            return y + sum(squares)

        return [helper(x), scale, Model(x).value(), offset, inner(0), fakelib.version_of()]

    OPTIONS = {}
"""

FAKELIB = """
    __version__ = "{version}"

    def version_of():
        return {answer}
"""


def run(directory, module, cache_directory, fakelib=("1.0", 1)):
    """Write ``userlib`` (and a stand-in installed library) under ``directory``, run the script
    in a fresh process and return what it printed: the value and whether it was a hit."""
    installed = os.path.join(os.path.dirname(directory), "lib", "site-packages")
    os.makedirs(os.path.join(installed, "fakelib"), exist_ok=True)
    with open(os.path.join(installed, "fakelib", "__init__.py"), "w") as file:
        file.write(textwrap.dedent(FAKELIB.format(version=fakelib[0], answer=fakelib[1])))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "userlib.py"), "w") as file:
        file.write(textwrap.dedent(module))
    path = os.pathsep.join([directory, installed, *sys.path])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(cache_directory)],
                         capture_output=True, text=True, timeout=120, cwd=directory,
                         env={**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    value, hit = out.stdout.strip().rsplit(" ", 1)
    return value, hit == "True"


EDITS = {
    "a helper": ("return x + 1", "return x + 2"),
    "a module constant": ("SCALE = 10", "SCALE = 20"),
    "a class method": ("return self.x * 2", "return self.x * 4"),
    "init": ('return {"offset": 100}', 'return {"offset": 200}'),
}


@pytest.mark.parametrize("what", list(EDITS))
def test_editing_code_the_function_reaches_misses_in_the_next_run(tmp_path, what):
    module = MODULE.replace("OPTIONS = {}", 'OPTIONS = {"block": True, "init": setup}') \
        if what == "init" else MODULE
    before, after = EDITS[what]
    assert before in module
    first, hit = run(str(tmp_path / "src"), module, tmp_path / "cache")
    assert not hit
    assert run(str(tmp_path / "src"), module, tmp_path / "cache") == (first, True)
    edited, hit = run(str(tmp_path / "src"), module.replace(before, after), tmp_path / "cache")
    assert not hit and edited != first


def test_an_unchanged_rerun_hits_after_a_line_is_added_above_or_the_file_moves(tmp_path):
    first, hit = run(str(tmp_path / "src"), MODULE, tmp_path / "cache")
    assert not hit
    shifted = MODULE.replace("import fakelib", "import fakelib\n\n    # a comment\n")
    assert run(str(tmp_path / "src"), shifted, tmp_path / "cache") == (first, True)
    assert run(str(tmp_path / "moved"), MODULE, tmp_path / "cache") == (first, True)


def test_installed_libraries_enter_by_version_not_by_code(tmp_path):
    first, hit = run(str(tmp_path / "src"), MODULE, tmp_path / "cache", fakelib=("1.0", 1))
    assert not hit
    # The library's code changed under the same version: documented as not followed.
    assert run(str(tmp_path / "src"), MODULE, tmp_path / "cache", fakelib=("1.0", 2)) == \
        (first, True)
    upgraded, hit = run(str(tmp_path / "src"), MODULE, tmp_path / "cache", fakelib=("1.1", 2))
    assert not hit and upgraded != first


# -- damaged and unreadable entries -----------------------------------------------------------

def test_a_flipped_bit_in_the_payload_is_a_miss_with_a_warning(tmp_path):
    directory = str(tmp_path)
    with remotefn.session("local", cache_directory=directory, forward_output=False):
        assert remote(text)(200).result(timeout=60) == "x" * 200
    [entry] = cache.entries(directory)
    with h5py.File(entry.path, "r") as file:
        dataset = file["pickle"]
        offset = dataset.id.get_offset() + dataset.shape[0] // 2
    with open(entry.path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x01]))
    with remotefn.session("local", cache_directory=directory, forward_output=False):
        with pytest.warns(RuntimeWarning, match=os.path.basename(entry.path)):
            future = remote(text)(200)
        assert future.result(timeout=60) == "x" * 200 and not future.info.from_cache
    assert cache.load(entry.path) == "x" * 200  # replaced by the recomputed result


@pytest.mark.parametrize("error", [
    OSError(errno.EMFILE, "Too many open files"),
    OSError(errno.EACCES, "Permission denied"),
    OSError("Unable to synchronously open file (unable to lock file, errno = 11, "
            "error message = 'Resource temporarily unavailable')"),
])
def test_an_unreadable_entry_is_a_miss_with_a_warning_and_is_not_deleted(tmp_path,
                                                                         monkeypatch, error):
    path = store.entry_path(str(tmp_path), "f", "b" * 64)
    store.write(path, 42, {"function": "f", "key": "b" * 64})

    def unreadable(*args, **kwargs):
        raise error

    monkeypatch.setattr(h5py, "File", unreadable)
    with pytest.warns(RuntimeWarning, match="left in place"):
        assert store.read_hit(path) == (False, None)
    monkeypatch.undo()
    assert os.path.exists(path) and cache.load(path) == 42


# -- writes never hold up the session ---------------------------------------------------------

def test_writes_run_off_the_hub_thread_and_a_pending_write_still_answers(tmp_path,
                                                                        monkeypatch):
    release, threads = threading.Event(), []
    write = store.write

    def slow_write(*args, **kwargs):
        threads.append(threading.current_thread().name)
        assert release.wait(60)
        return write(*args, **kwargs)

    monkeypatch.setattr(store, "write", slow_write)
    try:
        with remotefn.session("local", cache_directory=str(tmp_path),
                              forward_output=False) as session:
            first = session.submit(twice, 4)
            assert first.result(timeout=60) == 8  # resolved while its write waits
            second = session.submit(twice, 4)
            assert second.result(timeout=60) == 8 and second.info.from_cache
            release.set()
    finally:
        release.set()
    assert threads and not any(name.startswith("remotefn-hub") for name in threads)
    [entry] = cache.entries(str(tmp_path))  # the session's shutdown flushed the write
    assert cache.load(entry.path) == 8


MUTABLE = {"scale": 1}


def reads_a_mutable_global(x):
    return x * MUTABLE["scale"]


def test_a_mutable_module_value_enters_by_name_with_a_warning_once():
    with pytest.warns(RuntimeWarning, match="MUTABLE"):
        first = cache.code_digest(reads_a_mutable_global)
    MUTABLE["scale"] = 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert cache.code_digest(reads_a_mutable_global) == first
    finally:
        MUTABLE["scale"] = 1


EXIT_SCRIPT = """
    import sys
    import threading
    import remotefn
    from remotefn.cache import store

    write = store.write

    def exiting():  # whether the main thread runs the interpreter's exit (threading._shutdown)
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None and frame.f_code.co_name != "_shutdown":
            frame = frame.f_back
        return frame is not None

    def write_at_exit(*args, **kwargs):
        while not exiting():  # the write is still pending when the script ends
            threading.Event().wait(0.01)
        write(*args, **kwargs)

    store.write = write_at_exit

    def triple(x):
        return 3 * x

    session = remotefn.session("local", cache_directory=sys.argv[1], forward_output=False)
    print(session.submit(triple, 5).result())
"""


def test_interpreter_exit_flushes_pending_writes(tmp_path):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), str(tmp_path)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0 and out.stdout.split() == ["15"], out.stderr
    [entry] = cache.entries(str(tmp_path))
    assert cache.load(entry.path) == 15


def test_a_functions_code_key_is_computed_once_per_session(tmp_path, monkeypatch):
    from remotefn.cache import keys

    computed = []
    digest = keys.code_digest

    def counting(function):
        computed.append(function)
        return digest(function)

    monkeypatch.setattr(keys, "code_digest", counting)
    with remotefn.session("local", cache_directory=str(tmp_path),
                          forward_output=False) as session:
        assert [session.submit(twice, i).result(timeout=60) for i in range(5)] == \
            [0, 2, 4, 6, 8]
    assert computed.count(twice) == 1
