"""Test helpers: one nn.Module as a pack of one, and the training step's gradient."""

from __future__ import annotations

import torch
from torch import nn

from idemcore.algorithms import get_algorithm
from idemcore.architectures import resolve_layers
from idemcore.packed_engine import StackedNet, gradients


def stack(net: nn.Module, arch: str) -> StackedNet:
    """``net`` as a StackedNet of one member (copies of its parameters)."""
    stacked = StackedNet.from_nets([net], resolve_layers(arch))
    stacked.weights = [w.clone() for w in stacked.weights]
    stacked.biases = [None if b is None else b.clone() for b in stacked.biases]
    return stacked


def columns(x: torch.Tensor) -> torch.Tensor:
    """A batch (m, d) in the engine's layout (1, d, m)."""
    return x.T.unsqueeze(0)


def step_gradient(
    algorithm: str, net: nn.Module, arch: str, x: torch.Tensor, chunk: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The loss and the gradients the training step hands to the optimizer for ``net``
    on ``x`` (m, d), in ``net.parameters()`` shapes (None: the rule leaves it)."""
    loss, grads = gradients(stack(net, arch), get_algorithm(algorithm), columns(x), chunk)
    shaped = [
        None if g is None else g[0].reshape(p.shape)
        for g, p in zip(grads, net.parameters(), strict=True)
    ]
    return loss[0], shaped
