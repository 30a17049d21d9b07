"""The one training loop against the plain torch loop, for every rule and optimizer.

The reference is the note's §2.1 written out with nn.Module, autograd and torch.optim:
ordinary backprop differentiates E, modified backprop backpropagates the cotangent
-(3n(y) - 2n(n(y)) - y)/m through y = n(x), M1 sets the weight's gradient to
-mean_i Δn(x_i) x_iᵀ and leaves the bias alone. A run (a pack of one) must match it
epoch by epoch, and packs match runs alone (tests/idemcore/test_packed.py).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from idemcore.config import OPTIMIZERS, TrialConfig
from idemcore.data import make_data
from idemcore.nets import build_net
from idemcore.optim import OPTIMIZER_KINDS
from idemcore.train import Training
from tests.utils.factories import make_small_config

F64 = torch.float64
TORCH_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
}


tiny = partial(make_small_config, learning_rate=0.01, eval_samples=50)  # float64, 64 samples


def test_every_declared_optimizer_has_a_torch_class() -> None:
    assert tuple(OPTIMIZER_KINDS) == OPTIMIZERS == tuple(TORCH_OPTIMIZERS)


def reference_run(config: TrialConfig) -> tuple[list[float], list[torch.Tensor]]:
    """Per-epoch loss (of the epoch's last step) and the final parameters."""
    net = build_net(config.architecture, seed=config.seed, dtype=F64)
    factory, kw = TORCH_OPTIMIZERS[config.optimizer]
    opt = factory(net.parameters(), lr=config.learning_rate, **kw)
    data = make_data(
        config.data,
        dim=5,
        samples=config.samples,
        seed=config.seed,
        dtype=F64,
        eval_samples=config.eval_samples,
    )
    m = config.batch_size
    losses = []
    for epoch in range(1, config.epochs + 1):
        x_all = data.epoch_data(epoch)
        for i in range(config.samples // m):
            x = x_all[i * m : (i + 1) * m]
            opt.zero_grad()
            y = net(x)
            with torch.no_grad():
                y2 = net(y)
                y3 = net(y2)
                loss = torch.mean((y2 - y) ** 2)
                delta = 3 * y2 - 2 * y3 - y  # Δn, (m, d)
            if config.algorithm == "ordinary":
                torch.mean((net(y) - y) ** 2).backward()
            elif config.algorithm == "modified":
                y.backward(-delta / m)
            else:  # m1: W += lr mean Δn xᵀ, bias untouched
                weight = net[0].weight
                assert isinstance(weight, torch.Tensor)
                weight.grad = -(delta.T @ x) / m
            opt.step()
        losses.append(float(loss))
    return losses, [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(
    "arch,algorithm",
    [
        ("N1", "ordinary"),
        ("N1", "modified"),
        ("N1", "m1"),
        ("N2", "modified"),
        ("N3", "ordinary"),
        ("N3", "modified"),
        ("B1", "ordinary"),
        ("B1", "m1"),
    ],
)
def test_training_equals_the_plain_torch_loop(arch: str, algorithm: str, optimizer: str) -> None:
    config = tiny(architecture=arch, algorithm=algorithm, epochs=6, seed=3, optimizer=optimizer)
    run = Training(config)
    records = list(run.epochs())
    losses, params = reference_run(config)
    torch.testing.assert_close(
        torch.tensor([r.loss for r in records], dtype=F64),
        torch.tensor(losses, dtype=F64),
        rtol=1e-9,
        atol=0,
    )
    for got, want in zip(run.net.parameters(), params, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-9, atol=1e-12)


def test_optimizers_differ() -> None:
    """The three names give three different trajectories (none silently ignored)."""
    finals = []
    for name in OPTIMIZERS:
        config = tiny(epochs=3, optimizer=name)
        run = Training(config)
        list(run.epochs())
        finals.append(next(run.net.parameters()).detach().clone())
    for i in range(len(finals)):
        for j in range(i):
            assert not torch.allclose(finals[i], finals[j])
