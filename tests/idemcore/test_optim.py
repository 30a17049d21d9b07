"""Optimizers: a run with ``optimizer`` equals a hand-written loop with that torch.optim."""

from __future__ import annotations

import pytest
import torch

from idemcore.config import OPTIMIZERS, TrialConfig
from idemcore.data import make_data
from idemcore.nets import build_net
from idemcore.optim import OPTIMIZER_CLASSES
from idemcore.train import Training

F64 = torch.float64


def test_every_declared_optimizer_has_a_torch_class() -> None:
    assert tuple(OPTIMIZER_CLASSES) == OPTIMIZERS


def reference_weights(config: TrialConfig, opt_factory: type, **kw: float) -> list[torch.Tensor]:
    """The note's loop (§2.1) written out: autograd of E (ordinary) or the cotangent
    -(3n(y) - 2n(n(y)) - y)/m through y = n(x) (modified), applied by ``opt_factory``."""
    net = build_net(config.architecture, seed=config.seed, dtype=F64)
    opt = opt_factory(net.parameters(), lr=config.learning_rate, **kw)
    data = make_data(
        config.data,
        dim=5,
        samples=config.samples,
        seed=config.seed,
        dtype=F64,
        eval_samples=config.eval_samples,
    )
    m = config.batch_size
    for epoch in range(1, config.epochs + 1):
        x_all = data.epoch_data(epoch)
        for i in range(config.samples // m):
            x = x_all[i * m : (i + 1) * m]
            opt.zero_grad()
            y = net(x)
            if config.algorithm == "ordinary":
                torch.mean((net(y) - y) ** 2).backward()
            else:
                with torch.no_grad():
                    y2 = net(y)
                    y3 = net(y2)
                y.backward(-(3 * y2 - 2 * y3 - y) / m)
            opt.step()
    return [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("algorithm", ["ordinary", "modified"])
@pytest.mark.parametrize(
    "name,factory,kw",
    [
        ("sgd", torch.optim.SGD, {}),
        ("momentum", torch.optim.SGD, {"momentum": 0.9}),
        ("adam", torch.optim.Adam, {}),
    ],
)
def test_training_applies_the_named_optimizer(
    algorithm: str, name: str, factory: type, kw: dict[str, float]
) -> None:
    config = TrialConfig(
        architecture="N3",
        algorithm=algorithm,
        learning_rate=0.01,
        samples=64,
        batch_size=16,
        epochs=4,
        seed=3,
        dtype="float64",
        eval_samples=50,
        optimizer=name,
    )
    run = Training(config)
    list(run.epochs())
    expected = reference_weights(config, factory, **kw)
    for got, want in zip(run.net.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-14)


def test_optimizers_differ() -> None:
    """The three names give three different trajectories (none silently ignored)."""
    finals = []
    for name in OPTIMIZERS:
        config = TrialConfig(
            architecture="N1",
            algorithm="modified",
            learning_rate=0.01,
            samples=64,
            batch_size=16,
            epochs=3,
            seed=0,
            dtype="float64",
            optimizer=name,
        )
        run = Training(config)
        list(run.epochs())
        finals.append(next(run.net.parameters()).detach().clone())
    for i in range(len(finals)):
        for j in range(i):
            assert not torch.allclose(finals[i], finals[j])
