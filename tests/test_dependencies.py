"""Futures in arguments are resolved before the call runs, without blocking the caller."""

from __future__ import annotations

import collections
import concurrent.futures
import threading

import pytest

import remotefn
from remotefn import DependencyError, remote

Pair = collections.namedtuple("Pair", "left right")


def identity(x):
    return x


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def test_chain_of_calls(local):
    step = remote(add, block=True, max_workers=2)
    future = step(0, 1)
    for i in range(20):
        future = step(future, 1)
    assert future.result(timeout=60) == 21


@pytest.mark.parametrize("build, expected", [
    (lambda f: [f, 1], [5, 1]),
    (lambda f: (f, (f, [f])), (5, (5, [5]))),
    (lambda f: {"a": f, "b": [1, {"c": f}]}, {"a": 5, "b": [1, {"c": 5}]}),
    (lambda f: {f}, {5}),
    (lambda f: frozenset([f, 7]), frozenset([5, 7])),
    (lambda f: Pair(f, 2), Pair(5, 2)),
    (lambda f: [[[[f]]]], [[[[5]]]]),
])
def test_futures_nested_at_any_depth_are_replaced(local, build, expected):
    handle = remote(identity, block=True)
    upstream = handle(5)
    assert handle(build(upstream)).result(timeout=30) == expected


def test_futures_in_keyword_arguments(local):
    handle = remote(add, block=True)
    assert handle(a=handle(1, 1), b=handle(2, 2)).result(timeout=30) == 6


def test_foreign_futures_are_accepted(local):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        foreign = pool.submit(lambda: 41)
        assert remote(add, block=True)(foreign, 1).result(timeout=30) == 42


def test_caller_does_not_block_on_pending_dependencies(local):
    gate: concurrent.futures.Future = concurrent.futures.Future()
    dependent = remote(add, block=True)(gate, 1)
    assert not dependent.done()
    gate.set_result(1)
    assert dependent.result(timeout=30) == 2


def test_failed_upstream_fails_dependents_with_dependency_error(local, tmp_path):
    marker = tmp_path / "ran"

    def touch(value):
        marker.touch()
        return value

    upstream = remote(fail, block=True)("boom")
    first = remote(touch, block=True)(upstream)
    second = remote(touch, block=True)([first])
    with pytest.raises(DependencyError) as raised:
        first.result(timeout=30)
    assert isinstance(raised.value.__cause__, ValueError)
    assert "boom" in str(raised.value.__cause__)
    with pytest.raises(DependencyError) as raised:
        second.result(timeout=30)
    assert isinstance(raised.value.__cause__, DependencyError)
    assert not marker.exists()


def test_cancelled_upstream_fails_dependents(local):
    gate: concurrent.futures.Future = concurrent.futures.Future()
    dependent = remote(identity, block=True)(gate)
    gate.cancel()
    with pytest.raises(DependencyError) as raised:
        dependent.result(timeout=30)
    assert isinstance(raised.value.__cause__, concurrent.futures.CancelledError)


def test_ten_thousand_waiting_calls_need_no_threads():
    gate: concurrent.futures.Future = concurrent.futures.Future()
    with remotefn.session("local", max_cores=2, forward_output=False):
        handle = remote(identity, block=True)
        threads = threading.active_count()
        futures = [handle(gate) for _ in range(10_000)]
        assert threading.active_count() == threads
        gate.set_result(3)
        assert all(f.result(timeout=120) == 3 for f in futures)
