"""The three update rules of the note: ordinary backprop, modified backprop, and M1.

Each is a small class with one method, ``gradients(net, x) -> (loss, grads)``: the
direction one update of ``net`` on the batch ``x`` (shape ``(m, d)``) follows, as one
gradient per parameter (None for a parameter the rule leaves alone), and the loss E the
step saw, E(y) = mean((n(y) - y)^2) with y = n(x), as a detached scalar tensor. An
optimizer (idemcore.optim) applies the gradients; ``step`` is the plain-SGD shortcut.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from idemcore.errors import ConfigError
from idemcore.nets import M1_RESTRICTION, linear_layers

Gradients = tuple[torch.Tensor | None, ...]


class Algorithm(ABC):
    """One training rule."""

    name: str = ""

    @abstractmethod
    def gradients(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Gradients]:
        """E on batch ``x`` (m, d) as a 0-d tensor, and one gradient per parameter of
        ``net`` (in ``net.parameters()`` order; None: leave the parameter alone)."""

    def step(self, net: nn.Module, x: torch.Tensor, lr: float) -> torch.Tensor:
        """One plain SGD update (p <- p - lr * g) of ``net`` on ``x``; returns E."""
        loss, grads = self.gradients(net, x)
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads, strict=True):
                if g is not None:
                    p.sub_(g, alpha=lr)
        return loss


class Ordinary(Algorithm):
    """Ordinary backprop: autograd of E(y) = mean((n(y) - y)^2), y = n(x), through both n."""

    name = "ordinary"

    def gradients(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Gradients]:
        params: list[torch.Tensor] = list(net.parameters())
        y = net(x)  # (m, d)
        loss = torch.mean((net(y) - y) ** 2)
        grads = torch.autograd.grad(loss, params)
        return loss.detach(), grads


class Modified(Algorithm):
    """Modified backprop: dE/dy := -(3n(y) - 2n(n(y)) - y) / m, chained through y = n(x) only.

    n(y) is computed once and used both for the loss value and for Δn; the second and
    third applications of n carry no graph (the note's ``E.forward`` runs without grad).
    Network passes per step: forward n(x) with graph, n(y) and n(n(y)) without, one
    backward: 5 units against ordinary's 6.
    """

    name = "modified"

    def gradients(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Gradients]:
        params: list[torch.Tensor] = list(net.parameters())
        y = net(x)  # (m, d), with graph to the parameters
        with torch.no_grad():
            y2 = net(y)  # n(y) = n(n(x)), shape (m, d)
            y3 = net(y2)  # n(n(y))
            diff = y2 - y  # n(y) - y: the loss's residual, reused for Δn
            # -Δn = -(3 y2 - 2 y3 - y) = 2 (y3 - y2) - (y2 - y); in place on fresh buffers.
            cotangent = y3.sub_(y2).mul_(2).sub_(diff).div_(x.shape[0])  # dE/dy := -Δn / m
            loss = diff.square_().mean()
        grads = torch.autograd.grad(y, params, grad_outputs=cotangent)
        return loss, grads


class M1(Algorithm):
    """The note's naive approach: W' = W + lr * mean_i[Δn(x_i) x_i^T], no autograd at all.

    Valid only for a single bias-free square linear layer (N1).
    """

    name = "m1"

    def gradients(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Gradients]:
        layers = linear_layers(net)
        if len(layers) != 1 or layers[0].bias is not None:
            raise ConfigError(f"algorithm: {M1_RESTRICTION}")
        weight = layers[0].weight  # (d, d); PyTorch's n(x) = x W^T for row inputs
        with torch.no_grad():
            y = x @ weight.T
            y2 = y @ weight.T
            y3 = y2 @ weight.T
            loss = torch.mean((y2 - y) ** 2)
            delta = 3 * y2 - 2 * y3 - y  # (m, d)
            # W' = W + lr ΔW with ΔW = mean_i Δn(x_i) x_i^T: the "gradient" is -ΔW.
            grad = (delta.T @ x).div_(-x.shape[0])
        return loss, (grad,)


def gradient_with_graph(
    net: nn.Module, x: torch.Tensor, algorithm: str
) -> tuple[torch.Tensor, ...]:
    """The parameter gradients of one step, built with ``create_graph=True``.

    For rendering the computation like the note's §2.2 sanity check (``idem graph``):
    ``ordinary`` differentiates E through both applications of n; ``modified`` computes
    Δn with graph (as the note's ``E.backward`` does under ``create_graph``) and chains
    -Δn/m through y = n(x) only. Not used for training: the steps above keep no graph.
    """
    params = list(net.parameters())
    y = net(x)  # (m, d)
    if algorithm == "ordinary":
        loss = torch.mean((net(y) - y) ** 2)
        return torch.autograd.grad(loss, params, create_graph=True)
    if algorithm == "modified":
        y2 = net(y)
        y3 = net(y2)
        cotangent = -(3 * y2 - 2 * y3 - y) / x.shape[0]
        return torch.autograd.grad(y, params, grad_outputs=cotangent, create_graph=True)
    raise ConfigError(f"algorithm: no gradient graph for {algorithm!r}; use ordinary or modified")


ALGORITHM_CLASSES: dict[str, type[Algorithm]] = {cls.name: cls for cls in (Ordinary, Modified, M1)}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm instance for a config's ``algorithm`` field."""
    try:
        return ALGORITHM_CLASSES[name]()
    except KeyError:
        raise ConfigError(
            f"algorithm: unknown {name!r}; expected one of {sorted(ALGORITHM_CLASSES)}"
        ) from None
