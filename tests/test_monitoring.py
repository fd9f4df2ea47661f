"""Seeing what runs: per-call usage, the event record, the status of a live session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import remotefn
from remotefn import WorkerDied, remote
from remotefn.hub.recorder import read
from helpers import wait_until


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


def where_am_i():
    return socket.gethostname(), os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_calls_info_says_its_pool_ranks_and_each_ranks_gpus():
    """What the ranks saw in the call is what the info says, rank by rank."""
    pytest.importorskip("mpi4py")
    with remotefn.session("local", max_cores=4, gpu_ids=[0, 1, 2, 3], forward_output=False):
        mpi = remote(where_am_i, cores=2, gpus=1, block=True)()
        plain = remote(where_am_i)()
        ranks = mpi.result(timeout=120)
        host, pid, visible = plain.result(timeout=60)
    assert mpi.info.ranks == 2 and mpi.info.pool.startswith("block pool (2 ranks")
    assert mpi.info.gpus == tuple(tuple(seen.split(",")) for _, _, seen in ranks)
    assert len({ids for ids in mpi.info.gpus}) == 2  # one GPU each, not the same one
    assert (mpi.info.host, mpi.info.pid) == ranks[0][:2]
    assert plain.info.ranks == 1 and plain.info.pool.startswith("one-shot workers (1 ranks")
    assert plain.info.gpus == ((None if visible is None else tuple(visible.split(","))),)
    assert (plain.info.host, plain.info.pid) == (host, pid)


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


def noop(i):
    return i


def test_a_record_of_many_batches_is_whole_after_ctrl_c_and_readable_meanwhile(tmp_path):
    record = tmp_path / "run.jsonl"
    calls = 3000  # 9,000 call events: two full batches and a rest
    with pytest.raises(KeyboardInterrupt):
        with remotefn.session("local", max_cores=2, record=str(record),
                              forward_output=False) as session:
            handle = remote(noop, block=True, max_workers=2)
            futures = [handle(i) for i in range(calls)]
            assert [f.result(timeout=120) for f in futures] == list(range(calls))
            session.report(tmp_path / "meanwhile.html")  # reads the file: all events so far
            assert len(read(record)) >= 3 * calls
            raise KeyboardInterrupt
    events = read(record)
    by_call = {}
    for event in events:
        if "call" in event:
            by_call.setdefault(event["call"], []).append(event["event"])
    ids = {f.info.call_id for f in futures}
    assert all(by_call[i] == ["queued", "started", "finished"] for i in ids)
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    started = {e["worker"] for e in events if e["event"] == "worker started"}
    assert started and started == {e["worker"] for e in events
                                   if e["event"] in ("worker stopped", "worker died")}


def test_a_killed_session_leaves_its_record_written_and_no_writer_behind(tmp_path):
    record = tmp_path / "run.jsonl"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, remotefn
        from remotefn import remote

        def noop(i):
            return i

        with remotefn.session("local", max_cores=2, record={str(record)!r},
                              forward_output=False) as session:
            handle = remote(noop, block=True, max_workers=2)
            assert [f.result() for f in [handle(i) for i in range(2000)]] == list(range(2000))
            session.report({str(tmp_path / "run.html")!r})  # everything so far is written
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert len([e for e in read(record) if e["event"] == "finished"]) == 2000
    wait_until(lambda: not [p for p in psutil.process_iter(["cmdline"])
                            if "remotefn.hub.recordfile" in " ".join(p.info["cmdline"] or [])],
               what="the record's writer to exit once its session is gone")


def running_until(gate):
    from helpers import wait_for_file

    wait_for_file(gate)
    return 1


def _status(*args, user=None):
    """``python -m remotefn status ARGS``, as ``user`` if given (with the system's Python,
    which another user can run: the status command needs nothing but the standard library)."""
    import subprocess
    import sys

    if user is None:
        command = [sys.executable, "-m", "remotefn", "status", *args]
        path = os.pathsep.join(sys.path)
    else:
        command = ["runuser", "-u", user, "--", "/usr/bin/python3", "-m", "remotefn", "status",
                   *args]
        path = os.path.dirname(os.path.dirname(remotefn.__file__))
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": path}, cwd="/")


def test_status_from_another_process_shows_a_running_sessions_calls(tmp_path):
    from helpers import wait_until

    gate = tmp_path / "gate"
    with remotefn.session("local", forward_output=False):
        running = remote(running_until, block=True, max_workers=1)(str(gate))
        queued = remote(running_until, block=True, max_workers=1)(str(gate))
        wait_until(running.running, timeout=60, what="the call to run")
        out = _status(str(os.getpid()))
        gate.touch()
        assert running.result(timeout=60) == 1 and queued.result(timeout=60) == 1
    assert out.returncode == 0, out.stderr
    assert f"session pid {os.getpid()}" in out.stdout
    assert f"running_until (call {running.info.call_id}) on " in out.stdout
    assert f"queued test_monitoring.running_until (call {queued.info.call_id})" in out.stdout
    assert "1 running, 1 queued" in out.stdout


def load_table():
    return {"table": 1}


def use_table(table):
    return table


def test_status_tells_pools_apart_by_the_options_that_make_them(tmp_path):
    import json

    with remotefn.session("local", forward_output=False):
        plain = remote(identity_of, block=True, max_workers=1)(1)
        loaded = remote(use_table, block=True, max_workers=1, init=load_table)()
        tuned = remote(identity_of, block=True, max_workers=1, env={"MODE": "fast"},
                       timeout=30)(2)
        assert (plain.result(60), loaded.result(60), tuned.result(60)) == (1, 1, 2)
        out = _status("--json", str(os.getpid()))
    assert out.returncode == 0, out.stderr
    [snapshot] = json.loads(out.stdout)
    pools = sorted(pool["pool"] for pool in snapshot["pools"])
    assert pools == [
        "block pool (1 ranks x 1 threads per rank, max_workers=1)",
        "block pool (1 ranks x 1 threads per rank, max_workers=1, env=MODE, timeout=30s)",
        "block pool (1 ranks x 1 threads per rank, max_workers=1, init=load_table)",
    ], pools


def identity_of(x):
    return x


def test_status_refuses_another_users_process(tmp_path):
    import shutil
    import stat

    from remotefn.testing import probe

    if os.getuid() != 0 or shutil.which("runuser") is None or not os.path.exists(
            "/usr/bin/python3"):
        pytest.skip("needs root (to run a client as another user), runuser and /usr/bin/python3")
    with remotefn.session("local", forward_output=False) as session:
        out = _status("--json", user="nobody")
        assert out.returncode == 0 and out.stdout.strip() == "[]"  # the run directory is 0700
        # Even with the directory and the socket opened up, the session answers only its user.
        runtime = probe(session).runtime_dir
        os.chmod(runtime, 0o711)
        os.chmod(os.path.join(runtime, "status"), 0o777)
        import subprocess

        socket_path = os.path.join(runtime, "status")
        client = subprocess.run(
            ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
             f"from remotefn.hub.status import query; print(query({socket_path!r}))"],
            capture_output=True, text=True, timeout=60, cwd="/",
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(remotefn.__file__))})
        os.chmod(runtime, stat.S_IRWXU)
        assert client.returncode == 0 and client.stdout.strip() == "None", client
        assert _status(str(os.getpid())).returncode == 0  # its own user still gets an answer


def fail_if_odd(x):
    if x % 2:
        raise ValueError(x)
    return x


def test_a_progress_bar_counts_done_failed_and_cached_calls(tmp_path):
    import io

    with remotefn.session("local", cache_directory=str(tmp_path / "cache"),
                          forward_output=False):
        handle = remote(fail_if_odd, block=True, cache=True)
        assert handle(0).result(timeout=60) == 0  # stored: the next call with 0 is cached
        shown = io.StringIO()
        futures = remotefn.progress([handle(x) for x in range(6)], file=shown, mininterval=0)
    assert all(future.done() for future in futures)
    final = shown.getvalue().strip().split("\r")[-1]
    assert "6/6" in final and "failed=3" in final and "cached=1" in final


def test_map_with_progress_shows_a_bar_that_counts_every_call(tmp_path):
    import io

    with remotefn.session("local", cache_directory=str(tmp_path / "cache"),
                          forward_output=False):
        handle = remote(fail_if_odd, block=True, cache=True)
        assert handle(2).result(timeout=60) == 2
        shown = io.StringIO()
        futures = handle.map(range(5), progress={"file": shown, "mininterval": 0})
        assert [f.done() for f in futures] == [True] * 5  # it waited for every call
        assert [f.result() for f in futures[::2]] == [0, 2, 4]
    final = shown.getvalue().strip().split("\r")[-1]
    assert final.startswith("fail_if_odd") and "5/5" in final, final
    assert "failed=2" in final and "cached=1" in final, final


def test_map_progress_must_be_a_flag_or_bar_settings():
    handle = remote(fail_if_odd)
    with pytest.raises(TypeError, match=r"progress must be .*\[1, 2\].*positionally"):
        handle.map(progress=[1, 2])


def test_the_log_has_a_line_per_worker_start_and_stop(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="remotefn"):
        with remotefn.session("local", forward_output=False):
            future = remote(burn, block=True, max_workers=1)(0.01)
            assert future.result(timeout=60) == 0.01
    worker = future.info.worker_id
    lines = [r.getMessage() for r in caplog.records if worker in r.getMessage()]
    assert any(line.startswith(f"started {worker} for block pool") and "remotefn.worker" in line
               and f"pid={future.info.pid}" in line for line in lines), lines
    assert f"stopping {worker}" in lines


def test_the_library_is_silent_unless_logging_is_configured(capfd):
    with remotefn.session("local", forward_output=False):
        assert remote(burn)(0.01).result(timeout=60) == 0.01
    assert capfd.readouterr().err == ""
