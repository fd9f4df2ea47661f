"""What a call prints is captured on its future and forwarded live to the caller."""

from __future__ import annotations

import sys

import remotefn
from remotefn import remote
from helpers import wait_for_file, wait_until


def chatty(n):
    for i in range(n):
        print("line", i)
    print("warning!", file=sys.stderr)
    print("no newline", end="")
    return n


def test_output_is_captured_per_call(local):
    future = remote(chatty, block=True)(3)
    assert future.result(timeout=30) == 3
    assert future.stdout == "line 0\nline 1\nline 2\nno newline"
    assert future.stderr == "warning!\n"


def chatty_then_wait(gate):
    print("before the gate")
    wait_for_file(gate)
    return "done"


def test_output_is_forwarded_to_the_caller(capsys):
    with remotefn.session("local") as session:
        future = session.submit(chatty, 2)
        future.result(timeout=30)
    captured = capsys.readouterr()
    assert "line 0\nline 1\n" in captured.out
    assert "warning!" in captured.err


def test_output_is_forwarded_live_while_the_call_runs(capsys, tmp_path):
    gate = str(tmp_path / "gate")
    seen = []
    with remotefn.session("local") as session:
        future = session.submit(chatty_then_wait, gate)
        wait_until(lambda: seen.append(capsys.readouterr().out) or "before the gate" in
                   "".join(seen), what="the line printed before the call returns")
        assert not future.done()
        open(gate, "w").close()
        assert future.result(timeout=30) == "done"


def test_forwarding_can_be_turned_off(capsys):
    with remotefn.session("local", forward_output=False) as session:
        assert session.submit(chatty, 1).result(timeout=30) == 1
    assert "line 0" not in capsys.readouterr().out


def test_calls_in_one_worker_do_not_mix_output(local):
    handle = remote(chatty, block=True, max_workers=1)
    futures = handle.map([1, 2, 3])
    for n, future in zip([1, 2, 3], futures):
        future.result(timeout=30)
        assert future.stdout.count("line ") == n
