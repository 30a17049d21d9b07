"""Gradients of `ordinary` and `modified` against independent formulas.

Each step's gradient is what the training step hands to the optimizer
(tests/idemcore/stacked.py), in float64; the drop-in losses and ``gradient_with_graph``
are held equal to it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, vjp

from idemcore.losses import gradient_with_graph, idempotent_loss, modified_loss
from idemcore.nets import build_net
from tests.idemcore.stacked import step_gradient

F64 = torch.float64


def batch(m: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(m, d, generator=torch.Generator().manual_seed(1000 + seed), dtype=F64)


def applied_gradient(algo: str, net: nn.Module, x: torch.Tensor, arch: str) -> list[torch.Tensor]:
    """The gradient one training step applies (every parameter updated)."""
    _, grads = step_gradient(algo, net, arch, x)
    assert all(g is not None for g in grads)
    return [g for g in grads if g is not None]


def functional_loss(
    params: dict[str, torch.Tensor], net: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    """E = mean((n(y) - y)^2), y = n(x), as a pure function of the parameters."""
    y = functional_call(net, params, (x,))
    return torch.mean((functional_call(net, params, (y,)) - y) ** 2)


@pytest.mark.parametrize("arch", ["N1", "N3", "B1"])
def test_ordinary_loss_passes_gradcheck(arch: str) -> None:
    net = build_net(arch, seed=3, dtype=F64)
    x = batch(6, 5, 3)
    names = [n for n, _ in net.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in net.parameters())

    def loss(*ps: torch.Tensor) -> torch.Tensor:
        return functional_loss(dict(zip(names, ps, strict=True)), net, x)

    assert torch.autograd.gradcheck(loss, values, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [3, 50])
def test_ordinary_n1_equals_closed_form(seed: int, m: int) -> None:
    """§2.2: with y = x Wᵀ, z = y Wᵀ and R = 2(z - y)/(m d), dE/dW = Rᵀ y + (R W - R)ᵀ x.

    (The note writes the same quantity with 2(xWᵀWᵀ - xWᵀ) in place of R; the mean over
    the m·d entries gives the 1/(m d) factor.)
    """
    net = build_net("N1", seed=seed, dtype=F64)
    w = net[0].weight.detach().clone()
    x = batch(m, 5, seed)
    y = x @ w.T
    z = y @ w.T
    r = 2 * (z - y) / (m * 5)
    expected = r.T @ y + (r @ w - r).T @ x
    (grad,) = applied_gradient("ordinary", net, x, "N1")
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def bumped(value: torch.Tensor, index: int, h: float) -> torch.Tensor:
    """A copy of ``value`` with its flat entry ``index`` moved by ``h``."""
    out = value.clone()
    out.view(-1)[index] += h
    return out


def test_ordinary_n3_matches_finite_differences() -> None:
    """A nonlinear net: the applied gradient equals central differences of E."""
    net = build_net("N3", seed=4, dtype=F64)
    x = batch(8, 5, 4)
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    grads = applied_gradient("ordinary", net, x, "N3")
    h = 1e-6
    for (name, value), grad in zip(params.items(), grads, strict=True):
        numeric = torch.zeros_like(value)
        for i in range(value.numel()):
            plus = functional_loss({**params, name: bumped(value, i, h)}, net, x)
            minus = functional_loss({**params, name: bumped(value, i, -h)}, net, x)
            numeric.view(-1)[i] = (plus - minus) / (2 * h)
        torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("arch", ["N1", "N2", "N3", "B1"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("m", [1, 16])
def test_modified_gradient_is_vjp_with_note_cotangent(arch: str, seed: int, m: int) -> None:
    """modified's gradient = VJP of x -> n(x) w.r.t. the parameters, cotangent
    -(3n(y) - 2n(n(y)) - y)/m with y = n(x): computed here with torch.func, by value."""
    net = build_net(arch, seed=seed, dtype=F64)
    x = batch(m, 5, seed)
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        y = net(x)
        y2 = net(y)
        y3 = net(y2)
    cotangent = -(3 * y2 - 2 * y3 - y) / m
    _, pullback = vjp(lambda p: functional_call(net, p, (x,)), params)
    (expected,) = pullback(cotangent)
    grads = applied_gradient("modified", net, x, arch)
    for name, grad in zip(params, grads, strict=True):
        torch.testing.assert_close(grad, expected[name], rtol=1e-10, atol=1e-12)


def test_modified_loss_value_is_e() -> None:
    """Both algorithms report the same E for the same parameters and batch."""
    x = batch(32, 5, 9)
    net = build_net("N3", seed=9, dtype=F64)
    with torch.no_grad():
        y = net(x)
        expected = torch.mean((net(y) - y) ** 2)
    for algo in ("modified", "ordinary"):
        loss, _ = step_gradient(algo, net, "N3", x)
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("algo", ["ordinary", "modified"])
@pytest.mark.parametrize("arch", ["N1", "N2", "N3", "B1"])
def test_gradient_with_graph_equals_the_training_step(algo: str, arch: str) -> None:
    """``idem graph``'s gradients (built with create_graph) are the training step's."""
    net = build_net(arch, seed=5, dtype=F64)
    x = batch(9, 5, 5)
    graphed = gradient_with_graph(net, x, algo)
    assert all(g.requires_grad for g in graphed)  # a graph to render
    for got, want in zip(graphed, applied_gradient(algo, net, x, arch), strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ["N1", "N2", "N3", "B1"])
def test_drop_in_losses_give_the_training_step(arch: str) -> None:
    """loss.backward() through modified_loss / idempotent_loss leaves the training
    step's gradients in .grad, and the loss value is E."""
    x = batch(11, 5, 6)
    for algo, loss_fn in (("modified", modified_loss), ("ordinary", idempotent_loss)):
        net = build_net(arch, seed=6, dtype=F64)
        loss = loss_fn(net, net(x))
        loss.backward()
        step_loss, want = step_gradient(algo, net, arch, x)
        torch.testing.assert_close(loss.detach(), step_loss, rtol=1e-12, atol=0)
        for p, g in zip(net.parameters(), want, strict=True):
            assert p.grad is not None and g is not None
            torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
