"""Modified backprop as a drop-in for your own PyTorch loop, with any torch.optim optimizer.

The note's §2.1 in one call::

    y = net(x)
    loss = idemcore.modified_loss(net, y)   # value: E(y) = mean((n(y) - y)^2)
    loss.backward()                         # gradient: -Δn/m chained through y = n(x)
    opt.step()

:func:`idempotent_loss` is the same E with its ordinary gradient (ordinary backprop).
The cotangent is :func:`idemcore.algorithms.modified_cotangent`, the one the training
loop uses; docs/modified-backprop.md has a complete example (run by a test).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from idemcore.algorithms import modified_cotangent
from idemcore.errors import ConfigError


def idempotent_loss(net: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """E(y) = mean((n(y) - y)^2) for outputs y (m, d) of ``net``, with autograd's gradient."""
    return torch.mean((net(y) - y) ** 2)


class ModifiedBackprop(torch.autograd.Function):
    """E(y) in the forward pass; in the backward pass, dE/dy := −Δn/m (the note's ``E``).

    The backward recomputes n(y) and n(n(y)) from the saved y; under
    ``create_graph=True`` those passes are recorded, so the gradient itself has a graph
    (what ``idem graph`` renders, like the note's §2.2)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, net: nn.Module) -> torch.Tensor:
        ctx.save_for_backward(y)
        ctx.net = net
        return idempotent_loss(net, y)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        y2 = ctx.net(y)
        y3 = ctx.net(y2)
        cotangent = modified_cotangent(y, y3, y2 - y, y.shape[0])
        return cotangent * grad_output, None


def modified_loss(net: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """E(y) for y = net(x) (m, d), whose backward is modified backprop's −Δn/m."""
    out: torch.Tensor = ModifiedBackprop.apply(y, net)
    return out


def gradient_with_graph(
    net: nn.Module, x: torch.Tensor, algorithm: str
) -> tuple[torch.Tensor, ...]:
    """The parameter gradients of one step on ``x`` (m, d), built with ``create_graph``.

    For rendering the computation like the note's §2.2 (``idem graph``): ``ordinary``
    differentiates :func:`idempotent_loss`, ``modified`` :func:`modified_loss`. A test
    holds both equal to the training step's gradient.
    """
    losses = {"ordinary": idempotent_loss, "modified": modified_loss}
    if algorithm not in losses:
        raise ConfigError(
            f"algorithm: no gradient graph for {algorithm!r}; use ordinary or modified"
        )
    loss = losses[algorithm](net, net(x))
    return torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
