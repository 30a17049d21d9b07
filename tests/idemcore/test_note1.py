"""Note 1: for n(x) = Wx, one step of modified backprop equals the explicit M1 update;
M1 on a layer with a bias (B1) updates the weight by the same formula and leaves the
bias frozen (the note: M1 "does not modify biases")."""

from __future__ import annotations

import pytest
import torch

from idemcore.nets import build_net
from idemcore.train import Training
from tests.idemcore.stacked import step_gradient
from tests.utils.factories import make_small_config


def m1_formula(w: torch.Tensor, b: torch.Tensor | None, x: torch.Tensor, lr: float) -> torch.Tensor:
    """Independent formula: W' = W + lr * mean_i[Δn(x_i) x_iᵀ], Δn = 3n(n(x)) − 2n(n(n(x)))
    − n(x), with n(x) = Wx (+ b), samples as columns."""
    bias = torch.zeros(w.shape[0], 1, dtype=w.dtype) if b is None else b.view(-1, 1)
    cols = x.T  # (d, m)
    n1 = w @ cols + bias
    n2 = w @ n1 + bias
    n3 = w @ n2 + bias
    delta = 3 * n2 - 2 * n3 - n1  # (d, m), column i is Δn(x_i)
    return w + lr * (delta @ cols.T) / x.shape[0]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [1, 7, 64])
@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_modified_step_equals_m1(
    dtype: torch.dtype, tol: float, seed: int, m: int, lr: float
) -> None:
    x = torch.randn(m, 5, generator=torch.Generator().manual_seed(100 + seed), dtype=dtype)
    net = build_net("N1", seed=seed, dtype=dtype)
    w = net[0].weight.detach()
    expected = m1_formula(w, None, x, lr)
    for algo in ("modified", "m1"):
        (grad,) = step_gradient(algo, net, "N1", x)[1]
        assert grad is not None
        torch.testing.assert_close(w - lr * grad, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", [0, 3])
def test_m1_with_bias_updates_the_weight_and_freezes_the_bias(seed: int) -> None:
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    net = build_net("B1", seed=seed, dtype=torch.float64)
    w, b = (p.detach() for p in net.parameters())
    wgrad, bgrad = step_gradient("m1", net, "B1", x)[1]
    assert bgrad is None  # the optimizer never touches the bias
    assert wgrad is not None
    torch.testing.assert_close(w - 0.1 * wgrad, m1_formula(w, b, x, 0.1), rtol=1e-12, atol=1e-12)
    # Note 1 with a bias: modified backprop's weight gradient is the same; it also moves b.
    mw, mb = step_gradient("modified", net, "B1", x)[1]
    assert mw is not None and mb is not None
    torch.testing.assert_close(mw, wgrad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_m1_training_on_b1_keeps_the_initial_bias(optimizer: str) -> None:
    config = make_small_config(
        architecture="B1", algorithm="m1", learning_rate=0.02, seed=2, optimizer=optimizer
    )
    run = Training(config)
    records = list(run.epochs())
    assert len(records) == 5 and not run.result().diverged
    start = build_net("B1", seed=2, dtype=torch.float64)[0]
    end = run.net[0]
    assert isinstance(end, torch.nn.Linear) and end.bias is not None
    assert torch.equal(end.bias.detach(), start.bias.detach())
    assert not torch.equal(end.weight.detach(), start.weight.detach())
