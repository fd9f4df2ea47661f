"""Real GPUs, where this machine has them: the inventory comes from nvidia-smi. Skipped with
the reason elsewhere; a failure where REQUIRE_GPU=1."""

from __future__ import annotations

import os
import shutil

import pytest

import remotefn
from remotefn import remote
from remotefn.backends.local import detect_gpus
from helpers import needs

pytestmark = needs("gpu", "nvidia-smi is not installed here" if shutil.which("nvidia-smi") is None
                   else None if detect_gpus() else "nvidia-smi lists no GPU here")


def cuda_view():
    import torch

    x = torch.ones(1024, device="cuda")
    return os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count(), float(x.sum())


def test_session_inventory_comes_from_nvidia_smi():
    with remotefn.session("local", forward_output=False) as session:
        assert session.resources()["gpus"]["total"] == len(detect_gpus()) > 0


def test_a_gpu_call_sees_exactly_its_gpu():
    pytest.importorskip("torch")
    with remotefn.session("local", forward_output=False):
        futures = [remote(cuda_view, gpus=1)() for _ in detect_gpus()]
        seen = [f.result(timeout=120) for f in futures]
    assert {ids for ids, _, _ in seen} == {str(i) for i in detect_gpus()}
    assert all(count == 1 and total == 1024.0 for _, count, total in seen)
