"""The note's three update rules (ordinary backprop, modified backprop, M1), each once.

Each rule is a small class with one method, ``gradients(net, x, m)``: for P members'
stacked networks (:class:`idemcore.packed_engine.StackedNet`) and a chunk ``x`` of
shape ``(P, d, k)`` of a batch of ``m`` samples, the chunk's per-member sum of squared
residuals ``sum((n(y) - y)^2)`` (P,) with y = n(x), and its share of each parameter's
gradient (the batch's gradient is the sum over its chunks). An optimizer
(:mod:`idemcore.optim`) applies the gradients; with plain SGD, p <- p - lr * g.

Every training run goes through these classes (an unpacked run is a pack of one). The
note's −Δn/m is written once, in :func:`modified_cotangent`, which the drop-in
:func:`idemcore.losses.modified_loss` uses as well.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from idemcore.config import ALGORITHMS
from idemcore.errors import ConfigError
from idemcore.packed_engine import StackedNet, sum_square

Gradients = list[torch.Tensor | None]


def modified_cotangent(
    y: torch.Tensor, y3: torch.Tensor, residual: torch.Tensor, m: int, *, in_place: bool = False
) -> torch.Tensor:
    """Modified backprop's dE/dy := −Δn/m (the note's §1.3 and ``E.backward``).

    Δn = 3n(y) − 2n(n(y)) − y with y = n(x); written from the loss's residual
    r = n(y) − y (already at hand) and y3 = n(n(y)) as −Δn = 2(y3 − y − r) − r. Any
    layout (samples in rows or in the last axis); ``m`` is the batch's sample count.
    By default the first operation allocates the result and the rest work in place on
    it, so the inputs are untouched and the formula stays differentiable
    (``create_graph``); ``in_place`` writes into y3's buffer instead (the training step:
    a fresh buffer per chunk cost ~0.4 ms, 12% of a packed N1 epoch, measured).
    """
    start = y3.sub_(y) if in_place else y3 - y
    return start.sub_(residual).mul_(2).sub_(residual).div_(m)


class Algorithm(ABC):
    """One training rule."""

    name: str = ""

    @abstractmethod
    def gradients(self, net: StackedNet, x: torch.Tensor, m: int) -> tuple[torch.Tensor, Gradients]:
        """Chunk ``x`` (P, d, k) of a batch of ``m`` samples: per-member sum of squared
        residuals (P,), and gradients in ``net.params()`` order (None: not updated)."""


class Ordinary(Algorithm):
    """Ordinary backprop: the gradient of E(y) = mean((n(y) - y)^2), y = n(x), through
    both applications of n (a hand-written vector-Jacobian product; tests hold it equal
    to autograd's)."""

    name = "ordinary"

    def gradients(self, net: StackedNet, x: torch.Tensor, m: int) -> tuple[torch.Tensor, Gradients]:
        scale = x.shape[1] * m  # E is a mean over the batch's d*m elements
        y, cache1 = net.forward_cached(x)
        y2, cache2 = net.forward_cached(y)
        resid = y2 - y
        sum_sq = sum_square(resid)
        g2 = resid.mul_(2.0 / scale)  # dE/dn(y)
        grads2, gy = net.backward(cache2, g2, need_input_grad=True)
        assert gy is not None
        grads1, _ = net.backward(cache1, gy.sub_(g2))  # y feeds E directly and through n
        for a, b in zip(grads1, grads2, strict=True):
            a.add_(b)
        return sum_sq, list(grads1)


class Modified(Algorithm):
    """Modified backprop: dE/dy := −Δn/m (:func:`modified_cotangent`), chained through
    y = n(x) only; n(y) and n(n(y)) carry no graph. Network passes per step: three
    forwards and one backward, against ordinary's two forwards and two backwards."""

    name = "modified"

    def gradients(self, net: StackedNet, x: torch.Tensor, m: int) -> tuple[torch.Tensor, Gradients]:
        y, cache1 = net.forward_cached(x)
        y2 = net.forward(y)
        y3 = net.forward(y2)
        residual = y2.sub_(y)  # n(y) - y, in y2's buffer: the loss's residual and Δn's
        cotangent = modified_cotangent(y, y3, residual, m, in_place=True)
        grads, _ = net.backward(cache1, cotangent)
        return sum_square(residual), list(grads)


class M1(Algorithm):
    """The note's M1 (§1.2): W' = W + lr · mean_i Δn(x_i) x_iᵀ on a single square layer,
    written out (no backward pass): the gradient handed to the optimizer is
    −ΔW = (−Δn/m) xᵀ. A bias stays frozen (its gradient is None): M1 "does not modify
    biases". For a bias-free layer this equals modified backprop's step (Note 1;
    tests/idemcore/test_note1.py)."""

    name = "m1"

    def gradients(self, net: StackedNet, x: torch.Tensor, m: int) -> tuple[torch.Tensor, Gradients]:
        if len(net.weights) != 1 or net.tanh[0]:
            raise ConfigError("algorithm: m1 trains a single linear layer without activation")
        y = net.forward(x)  # (P, d, k)
        y2 = net.forward(y)
        y3 = net.forward(y2)
        residual = y2.sub_(y)
        cotangent = modified_cotangent(y, y3, residual, m, in_place=True)
        delta_w = torch.bmm(cotangent, x.transpose(1, 2))
        grads: Gradients = [delta_w] if net.biases[0] is None else [delta_w, None]
        return sum_square(residual), grads


ALGORITHM_CLASSES: dict[str, type[Algorithm]] = {cls.name: cls for cls in (Ordinary, Modified, M1)}


def get_algorithm(name: str) -> Algorithm:
    """The rule for a config's ``algorithm`` field (names: :data:`idemcore.config.ALGORITHMS`)."""
    try:
        return ALGORITHM_CLASSES[name]()
    except KeyError:
        raise ConfigError(
            f"algorithm: unknown {name!r}; expected one of {list(ALGORITHMS)}"
        ) from None
