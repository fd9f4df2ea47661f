"""Seeing what runs: per-call usage, the event record, the status of a live session."""

from __future__ import annotations

import os
import time

import pytest

import remotefn
from remotefn import WorkerDied, remote
from remotefn.hub.recorder import read


def burn(seconds):
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass
    return seconds


def allocate(megabytes):
    block = bytearray(megabytes << 20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    return len(block)


def boom():
    raise ValueError("boom")


def die():
    os._exit(3)


def test_a_calls_cpu_time_is_measured_in_the_worker(local):
    future = remote(burn)(0.5)
    assert future.result(timeout=60) == 0.5
    assert future.info.cpu_time == pytest.approx(0.5, rel=0.2)
    assert len(future.info.cpu_times) == 1


def test_an_mpi_calls_cpu_time_is_measured_per_rank():
    pytest.importorskip("mpi4py")
    with remotefn.session("local", max_cores=2, forward_output=False):
        future = remote(burn, cores=2)(0.3)
        assert future.result(timeout=120) == [0.3, 0.3]
    assert len(future.info.cpu_times) == 2
    assert all(seconds == pytest.approx(0.3, rel=0.2) for seconds in future.info.cpu_times)


def test_peak_memory_is_measured_when_asked():
    with remotefn.session("local", measure_memory=True, forward_output=False):
        future = remote(allocate, block=True)(200)
        assert future.result(timeout=60) == 200 << 20
    assert future.info.peak_memory == pytest.approx(200 << 20, rel=0.2)


def test_peak_memory_is_not_measured_by_default(local):
    future = remote(allocate)(1)
    future.result(timeout=60)
    assert future.info.peak_memory is None


def test_the_record_of_a_run_is_complete_and_ordered(tmp_path):
    record = tmp_path / "run.jsonl"
    with remotefn.session("local", record=str(record), cache_directory=str(tmp_path / "cache"),
                          forward_output=False) as session:
        ok = remote(burn, cache=True)(0.01)
        assert ok.result(timeout=60) == 0.01
        hit = remote(burn, cache=True)(0.01)
        assert hit.result(timeout=60) == 0.01 and hit.info.from_cache
        failed = remote(boom)()
        with pytest.raises(ValueError):
            failed.result(timeout=60)
        died = remote(die)()
        with pytest.raises(WorkerDied):
            died.result(timeout=60)
        in_memory = session.events()
    events = read(record)
    assert [e["event"] for e in events] == [e["event"] for e in in_memory][:len(events)]
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)

    def of(future):
        return [e["event"] for e in events if e.get("call") == future.info.call_id]

    assert of(ok) == ["queued", "started", "finished"]
    assert of(hit) == ["cached"]
    assert of(failed) == ["queued", "started", "failed"]
    assert of(died) == ["queued", "started", "failed"]
    kinds = [e["event"] for e in events]
    assert kinds.count("worker started") >= 3
    deaths = [e for e in events if e["event"] == "worker died"]
    assert [e["worker"] for e in deaths] == [died.info.worker_id]
    assert "exit code 3" in deaths[0]["detail"]
