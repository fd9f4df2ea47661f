"""The examples say what they show: run as a user would, with their output checked."""

from __future__ import annotations

import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name: str) -> str:
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_block_pool_shows_both_workers_loading_once_and_serving_calls():
    output = run_example("block_pool.py")
    assert output.count("loading the table in worker") == 2
    assert "served by 2 workers" in output
