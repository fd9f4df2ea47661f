"""The ``@remote`` handle: what it keeps of the function, and how it is called."""

from __future__ import annotations

import concurrent.futures
import inspect
import pickle

import cloudpickle
import pytest

from remotefn import RemoteFuture, remote
from sample_module import Model, add, plain_double, pooled_square, shifted
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


# -- methods --------------------------------------------------------------------------------


def test_instance_class_and_static_methods_run_remotely(local):
    model = Model(3)
    assert model.energy(2).result(timeout=30) == 6
    assert Model.energy(model, 4).result(timeout=30) == 12
    assert Model.make(5).result(timeout=30).k == 5
    assert model.make(6).result(timeout=30).k == 6
    assert Model.twice(4).result(timeout=30) == 8
    assert model.twice(5).result(timeout=30) == 10
    assert [f.result(timeout=30) for f in model.energy.map([1, 2, 3])] == [3, 6, 9]
    assert local.submit(model.energy, 7).result(timeout=30) == 21


def test_a_method_changes_only_the_workers_copy_of_self(local):
    model = Model(3)
    assert model.bump().result(timeout=30) == 4
    assert model.bump().result(timeout=30) == 4
    assert model.k == 3


def test_a_bound_method_keeps_the_signature_without_self_and_its_options():
    model = Model(3)
    assert str(inspect.signature(model.energy)) == "(x: int) -> int"
    assert str(inspect.signature(Model.energy)) == "(self, x: int) -> int"
    assert model.energy.__doc__ == "The energy at x."
    changed = model.energy.options(retries=2)
    assert changed.remote_options.retries == 2 and changed.local(5) == 15
    assert Model.energy.remote_options.retries == 0


@pytest.mark.parametrize("pickler", [pickle, cloudpickle])
def test_methods_pickle_by_reference_with_their_instance(pickler):
    assert pickler.loads(pickler.dumps(Model.energy)) is Model.energy
    assert pickler.loads(pickler.dumps(Model.twice)) is Model.twice
    bound = pickler.loads(pickler.dumps(Model(4).energy))
    assert bound.local(2) == 8
    assert pickler.loads(pickler.dumps(Model.make)).local(7).k == 7


def test_help_lists_handles_as_functions_with_their_signature():
    import pydoc

    import sample_module

    text = pydoc.render_doc(sample_module, renderer=pydoc.plaintext)
    functions = text[text.index("FUNCTIONS"):]
    assert "add(a: int, b: int = 1) -> int" in functions
    methods = pydoc.render_doc(Model, renderer=pydoc.plaintext)
    assert "energy(self, x: int) -> int" in methods


# -- local ----------------------------------------------------------------------------------


def test_local_runs_init_once_per_process_and_fills_its_arguments(local):
    import sample_module

    runs = sample_module.INIT_RUNS
    assert shifted.local(1) == 101
    assert shifted.local(2, scale=3) == 106
    assert shifted.local(1, offset=0) == 1
    assert sample_module.INIT_RUNS == runs + (runs == 0)  # at most once in this process
    assert shifted(1).result(timeout=30) == shifted.local(1)


def test_local_of_a_call_with_several_ranks_returns_a_list_of_one():
    assert remote(plain_double, cores=2).local(4) == [8]


# -- pickling -------------------------------------------------------------------------------


def test_a_handle_with_changed_options_pickles_with_them():
    for pickler in (pickle, cloudpickle):
        copy = pickler.loads(pickler.dumps(add.options(retries=3)))
        assert copy.remote_options.retries == 3 and copy.local(1, 2) == 3


def test_register_pickle_by_value_is_honoured():
    import sample_module
    from remotefn.protocol.shipping import function_ref

    assert b"import_function" in function_ref(plain_double).payload
    cloudpickle.register_pickle_by_value(sample_module)
    try:
        data = cloudpickle.dumps(add)
        copy = cloudpickle.loads(data)
        assert copy is not add and copy.local(1, 2) == 3
        assert b"import_function" not in function_ref(plain_double).payload
    finally:
        cloudpickle.unregister_pickle_by_value(sample_module)
    assert cloudpickle.loads(cloudpickle.dumps(add)) is add


def test_a_handle_in_main_pickles_with_the_standard_pickler():
    import subprocess
    import sys

    script = ("import pickle, cloudpickle, remotefn\n"
              "@remotefn.remote(retries=1)\n"
              "def f(x):\n"
              "    return x + 1\n"
              "assert pickle.loads(pickle.dumps(f)) is f\n"
              "copy = cloudpickle.loads(cloudpickle.dumps(f))\n"  # by value, as for functions
              "assert copy is not f and copy.local(1) == 2 and copy.remote_options.retries == 1\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "ok\n", done.stderr


# -- map ------------------------------------------------------------------------------------


def test_map_takes_keyword_iterables_and_constants_through_repeat(local):
    import itertools

    futures = add.map([1, 2, 3], b=[10, 20, 30])
    assert [f.result(timeout=30) for f in futures] == [11, 22, 33]
    futures = add.map([1, 2, 3], b=itertools.repeat(100))
    assert [f.result(timeout=30) for f in futures] == [101, 102, 103]
    futures = add.map(a=[1, 2], b=[5, 6])
    assert [f.result(timeout=30) for f in futures] == [6, 8]


def test_map_refuses_a_keyword_that_is_not_iterable():
    with pytest.raises(TypeError, match=r"keyword 'b' must be an iterable.*itertools.repeat"):
        add.map([1, 2], b=5)


# -- async ----------------------------------------------------------------------------------


def test_an_async_function_runs_in_the_workers_event_loop(local):
    from sample_module import fetch, loop_of_worker

    assert fetch(1).result(timeout=30) == 2
    assert fetch(fetch(1)).result(timeout=30) == 3
    first, second = loop_of_worker().result(timeout=30), loop_of_worker().result(timeout=30)
    assert first == second  # one worker, one loop kept between calls
    assert fetch.local(4) == 5


def test_remote_futures_are_awaitable_from_asyncio_code(local):
    import asyncio

    from sample_module import fail_async, fetch

    async def main():
        one = await fetch(1)
        both = await asyncio.gather(fetch(2), add(3, 4))
        with pytest.raises(KeyError, match="async"):
            await fail_async()
        return one, both

    assert asyncio.run(main()) == (2, [3, 7])
