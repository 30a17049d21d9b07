"""On a CUDA GPU: TF32 is off unless asked for, and the GPU agrees with the CPU.

Skipped without CUDA; ``bench/gpu_check.sh`` runs them (``pytest -m cuda``).
"""

from __future__ import annotations

import pytest
import torch

from idemcore.provenance import Provenance, apply_numerics
from idemcore.train import train
from tests.utils.factories import make_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _matmul_gap() -> float:
    """Relative gap of a float32 CUDA matmul from the float64 product of the same inputs."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 1024, generator=g, dtype=torch.float64)
    b = torch.randn(1024, 1024, generator=g, dtype=torch.float64)
    exact = a @ b
    got = (a.float().cuda() @ b.float().cuda()).double().cpu()
    return float((got - exact).norm() / exact.norm())


def test_tf32_off_keeps_float32_matmuls_ieee_and_on_changes_them() -> None:
    try:
        apply_numerics(False)
        ieee = _matmul_gap()
        assert ieee < 1e-5  # float32 rounding (~1e-7 per element, summed over 1024)
        assert Provenance.collect("cuda").tf32 is False
        apply_numerics(True)
        tf32 = _matmul_gap()
        assert Provenance.collect("cuda").tf32 is True
        if torch.cuda.get_device_capability()[0] >= 8:  # TF32 exists from Ampere on
            assert tf32 > 10 * ieee
    finally:
        apply_numerics(False)


def test_float64_run_on_the_gpu_matches_the_cpu() -> None:
    config = make_config(dtype="float64", epochs=20)
    cpu = train(config, device="cpu")
    gpu = train(config, device="cuda")
    for name in ("idempotent_error", "loss", "norm", "trace"):
        torch.testing.assert_close(getattr(gpu, name), getattr(cpu, name), rtol=1e-9, atol=0)
