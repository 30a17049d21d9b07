"""Note 1: for n(x) = Wx, one step of modified backprop equals the explicit M1 update."""

from __future__ import annotations

import pytest
import torch

from idemcore.algorithms import M1, Modified
from idemcore.nets import build_net


def m1_formula(w: torch.Tensor, x: torch.Tensor, lr: float) -> torch.Tensor:
    """Independent formula: W' = W + lr * mean_i[(3 W²x_i - 2 W³x_i - W x_i) x_iᵀ]."""
    w2 = w @ w
    w3 = w2 @ w
    delta = (3 * w2 - 2 * w3 - w) @ x.T  # (d, m), column i is Δn(x_i)
    return w + lr * (delta @ x) / x.shape[0]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [1, 7, 64])
@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_modified_step_equals_m1(
    dtype: torch.dtype, tol: float, seed: int, m: int, lr: float
) -> None:
    x = torch.randn(m, 5, generator=torch.Generator().manual_seed(100 + seed), dtype=dtype)
    expected = m1_formula(build_net("N1", seed=seed, dtype=dtype)[0].weight.detach(), x, lr)
    for algo in (Modified(), M1()):
        net = build_net("N1", seed=seed, dtype=dtype)
        algo.step(net, x, lr)
        torch.testing.assert_close(net[0].weight.detach(), expected, rtol=tol, atol=tol)
