"""bench/gpu_check.sh: one line and exit 0 without CUDA; its steps' code, run on the CPU.

The GPU itself is exercised only where one exists (``bash bench/gpu_check.sh``); here the
comparison, timing and shared-sweep steps run with ``device="cpu"`` / ``gpu=0`` so the
code a GPU machine will run is not untested.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def gpu_check() -> ModuleType:
    """bench/gpu_check.py as a module (bench/ is scripts, not a package)."""
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine-without-CUDA path")
def test_without_cuda_one_line_and_exit_0() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and proc.stderr == ""
    assert lines[0].startswith("gpu_check: no CUDA GPU visible to torch")


@pytest.mark.slow
def test_float64_packed_comparison_step_on_cpu() -> None:
    ok, detail = gpu_check().float64_packed_vs_cpu("cpu", epochs=3)
    assert ok, detail
    assert detail.startswith("8 packs of 4, worst relative gap")


@pytest.mark.slow
def test_epoch_cost_step_on_cpu() -> None:
    ok, detail = gpu_check().epoch_cost_vs_peak(200, 1, "cpu", peak_n=256)
    assert ok and "fp32 matmul peak" in detail
    for arch in ("B3", "B4", "N4"):
        assert f"{arch} modified" in detail and f"{arch} ordinary" in detail


@pytest.mark.slow
@pytest.mark.ray
def test_shared_sweep_step_through_idem_up_on_cpus() -> None:
    ok, detail = gpu_check().shared_gpu_sweep(300, gpu=0)
    assert ok, detail
