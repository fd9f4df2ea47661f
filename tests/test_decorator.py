"""The ``@remote`` handle: what it keeps of the function, and how it is called."""

from __future__ import annotations

import concurrent.futures
import inspect
import pickle

import cloudpickle
import pytest

from remotefn import RemoteFuture, remote
from sample_module import add, plain_double, pooled_square
from helpers import wait_for_file


def test_handle_keeps_name_doc_signature_and_module():
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert add.__module__ == "sample_module"
    assert str(inspect.signature(add)) == "(a: int, b: int = 1) -> int"


def test_module_level_handle_pickles_by_reference():
    data = pickle.dumps(add)
    assert b"sample_module" in data and len(data) < 200
    assert pickle.loads(data) is add


def test_local_handle_pickles_by_value_with_its_options():
    def triple(x):
        return 3 * x

    handle = remote(triple, threads_per_core=2)
    copy = cloudpickle.loads(cloudpickle.dumps(handle))
    assert copy.local(2) == 6
    assert copy.remote_options.threads_per_core == 2


def test_bare_decorator_options_decorator_and_function_form():
    @remote
    def a(x):
        return x

    @remote(threads_per_core=2)
    def b(x):
        return x

    c = remote(plain_double, retries=2)
    assert a.remote_options.threads_per_core == 1
    assert b.remote_options.threads_per_core == 2
    assert c.remote_options.retries == 2 and c.local(4) == 8


def test_options_returns_a_new_handle_and_leaves_the_original():
    changed = add.options(retries=3)
    assert changed.remote_options.retries == 3
    assert add.remote_options.retries == 0
    assert changed is not add


def test_call_returns_a_future_at_once(local, tmp_path):
    """A concurrent.futures.Future, returned before the call has run."""
    gate = str(tmp_path / "gate")
    future = remote(wait_for_file)(gate)
    assert isinstance(future, RemoteFuture) and isinstance(future, concurrent.futures.Future)
    assert not future.done()
    open(gate, "w").close()
    assert future.result(timeout=30) is None
    assert add(1, 2).result(timeout=30) == 3


def test_call_uses_keyword_defaults(local):
    assert add(5).result(timeout=30) == 6
    assert add(5, b=10).result(timeout=30) == 15


def test_map_returns_futures_in_order(local):
    futures = pooled_square.map(range(20))
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(20)]


def test_map_over_several_iterables(local):
    assert [f.result(timeout=30) for f in add.map([1, 2, 3], [10, 20, 30])] == [11, 22, 33]


def test_local_runs_in_this_process():
    import os

    assert remote(os.getpid).local() == os.getpid()


def test_remote_of_a_handle_applies_new_options():
    assert remote(add, retries=1).remote_options.retries == 1


def test_remote_needs_a_callable():
    with pytest.raises(TypeError, match="42"):
        remote(42)
