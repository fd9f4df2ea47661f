"""The capacity ledger, GPU assignment and pools per resource shape."""

from __future__ import annotations

import os

import pytest

import remotefn
from remotefn import remote
from remotefn.testing import probe
from helpers import alive, wait_for_file, wait_until


def visible_gpus(gate=None):
    if gate:
        wait_for_file(gate)
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def visible_gpus_per_rank():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def wait_for(gate, value=None):
    wait_for_file(gate)
    return value if value is not None else os.getpid()


def getpid():
    return os.getpid()


def log_start(log, value, gate=None):
    """Appends ``value`` to ``log`` as the call starts, then waits for ``gate`` (if any)."""
    with open(log, "a") as file:
        file.write(f"{value}\n")
    if gate:
        wait_for_file(gate)
    return value


def started(log):
    """The values of the calls in the order they started."""
    return [int(value) for value in open(log).read().split()]


def test_concurrent_calls_get_disjoint_gpus(tmp_path):
    gate = str(tmp_path / "gate")
    with remotefn.session("local", max_cores=4, gpu_ids=[0, 1, 2, 3],
                          forward_output=False) as session:
        handle = remote(visible_gpus, gpus=2)
        first, second = handle(gate), handle(gate)
        wait_until(lambda: first.running() and second.running(), what="both calls to run")
        assert session.resources()["gpus"] == {"total": 4, "in_use": 4, "free": 0}
        open(gate, "w").close()
        seen = [set(f.result(timeout=30).split(",")) for f in (first, second)]
    assert all(len(ids) == 2 for ids in seen)
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {"0", "1", "2", "3"}


def test_each_mpi_rank_gets_its_own_gpus():
    pytest.importorskip("mpi4py")
    with remotefn.session("local", max_cores=2, max_gpus=4, forward_output=False):
        per_rank = remote(visible_gpus_per_rank, cores=2, gpus=2)().result(timeout=60)
    assert per_rank == ["0,1", "2,3"]


def test_calls_waiting_for_a_gpu_start_in_submission_order(tmp_path):
    """Calls that do not fit wait in submission order, across pools: with one GPU they start
    one at a time, in the order they were made."""
    log, gate = str(tmp_path / "log"), str(tmp_path / "gate")
    with remotefn.session("local", max_cores=4, max_gpus=1, forward_output=False) as session:
        narrow = remote(log_start, gpus=1)
        wide = remote(log_start, gpus=1, threads_per_core=2)  # another pool
        first = narrow(log, 0, gate)
        later = [(wide if i % 2 else narrow)(log, i) for i in range(1, 7)]
        assert not any(f.done() for f in later)  # the caller was not blocked
        wait_until(lambda: probe(session).queued == 6, what="every later call to wait")
        open(gate, "w").close()
        assert [f.result(timeout=60) for f in [first, *later]] == list(range(7))
    assert started(log) == list(range(7))


def test_a_large_call_is_not_starved_by_small_ones(tmp_path):
    """A small call that would fit waits behind an earlier large one that does not."""
    log, gate = str(tmp_path / "log"), str(tmp_path / "gate")
    with remotefn.session("local", max_cores=2, forward_output=False) as session:
        small = remote(log_start)
        first = small(log, 1, gate)
        wait_until(first.running, what="the first small call")
        big = remote(log_start, threads_per_core=2)(log, 2)
        later = small(log, 3)
        wait_until(lambda: probe(session).queued == 2,
                   what="the scheduler to keep the big and the later call waiting")
        assert not later.running()
        open(gate, "w").close()
        assert [f.result(timeout=60) for f in (first, big, later)] == [1, 2, 3]
    assert started(log) == [1, 2, 3]
    assert big.info.started >= first.info.finished


def test_threads_count_against_the_ledger(tmp_path):
    gate = str(tmp_path / "gate")
    with remotefn.session("local", max_cores=4, forward_output=False) as session:
        future = remote(wait_for, threads_per_core=3)(gate)
        wait_until(future.running, what="the call to run")
        assert session.resources()["cores"] == {"total": 4, "in_use": 3, "free": 1}
        open(gate, "w").close()
        future.result(timeout=30)


def test_several_shapes_in_one_session_get_their_own_pools():
    with remotefn.session("local", max_cores=4, forward_output=False) as session:
        one = remote(getpid, block=True, max_workers=1)
        two = one.options(threads_per_core=2)
        pids_one = {f.result(timeout=30) for f in [one() for _ in range(5)]}
        pids_two = {f.result(timeout=30) for f in [two() for _ in range(5)]}
        assert len(pids_one) == 1 and len(pids_two) == 1 and pids_one != pids_two
        pools = {w["pool"] for w in session.resources()["workers"]}
        assert len(pools) == 2
        assert session.resources()["cores"]["in_use"] == 3


def test_release_gives_a_pools_resources_back():
    with remotefn.session("local", max_cores=4, forward_output=False) as session:
        pooled = remote(getpid, block=True, max_workers=2, threads_per_core=2)
        [f.result(timeout=30) for f in [pooled() for _ in range(6)]]
        wait_until(lambda: session.resources()["cores"]["in_use"] >= 2, what="pool workers")
        session.release(pooled)
        wait_until(lambda: session.resources()["cores"]["in_use"] == 0, what="the release")
        assert pooled().result(timeout=30)  # the pool starts again on demand


def test_idle_pools_give_way_instead_of_blocking_other_calls():
    """A call that needs the cores idle block workers of another pool hold gets them: those
    workers stop, and the call runs."""
    with remotefn.session("local", max_cores=2, forward_output=False) as session:
        first = remote(getpid, block=True, max_workers=2)
        [f.result(timeout=30) for f in [first() for _ in range(4)]]
        pooled = {w["pid"] for w in session.resources()["workers"]}
        assert pooled
        other = remote(getpid, threads_per_core=2)
        assert other().result(timeout=30) not in pooled
        wait_until(lambda: not any(alive(pid) for pid in pooled),
                   what="the idle pool's workers to stop")


def test_resources_lists_running_calls(tmp_path):
    gate = str(tmp_path / "gate")
    with remotefn.session("local", max_cores=2, forward_output=False) as session:
        future = remote(wait_for, block=True)(gate)
        wait_until(future.running, what="the call to run")
        running = session.resources()["running"]
        assert len(running) == 1 and "wait_for" in running[0]["call"]
        assert running[0]["worker"] == future.info.worker_id
        open(gate, "w").close()
        future.result(timeout=30)


def who(tag=None):
    return os.getpid(), os.environ.get("MODE"), tag


def tag_a():
    return {"tag": "a"}


def tag_b():
    return {"tag": "b"}


def test_each_init_and_environment_gets_its_own_pool():
    """Handles that differ only in init or env never share a worker: each gets its own
    pool, whose worker ran that init and has that environment."""
    with remotefn.session("local", max_cores=5, forward_output=False) as session:
        plain = remote(who, block=True, max_workers=1)
        handles = [plain, plain.options(env={"MODE": "a"}), plain.options(env={"MODE": "b"}),
                   plain.options(init=tag_a), plain.options(init=tag_b)]
        seen = [{f.result(timeout=60) for f in [handle() for _ in range(3)]}
                for handle in handles]
        assert all(len(results) == 1 for results in seen)  # one worker per pool
        results = [results.pop() for results in seen]
        assert [(mode, tag) for _, mode, tag in results] == [
            (None, None), ("a", None), ("b", None), (None, "a"), (None, "b")]
        assert len({pid for pid, _, _ in results}) == 5
        assert probe(session).pools == 5
