"""Stacked-weight networks: P independent members of one architecture as batched matmuls.

Every tensor carries the member index first and the samples LAST: a batch is
``(P, d, m)`` and a layer computes ``W @ a + b`` with ``W`` of shape ``(P, out, in)``.
On CPU this layout keeps ``bmm`` on BLAS's fast path (samples-first was measured ~8x
slower per product on the development machine). Members never mix: every reduction is
per member, so a member whose numbers overflow cannot disturb the others.

Gradients are written by hand (a chain of linear layers with optional tanh), which
avoids autograd's per-op bookkeeping; the update rules (idemcore.algorithms) use them.
Every run trains through this module: an unpacked run is a pack of one (P = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from idemcore.architectures import LayerSpec
from idemcore.metrics import IMAGE_DIM_POINTS
from idemcore.nets import linear_layers

if TYPE_CHECKING:
    from idemcore.algorithms import Algorithm

# Per layer, what the backward pass needs: the layer's input and its output.
Cache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StackedNet:
    """P members' parameters, stacked: weights (P, out, in), biases (P, out, 1) or None."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    tanh: list[bool]

    @classmethod
    def from_nets(cls, nets: Sequence[nn.Module], layers: tuple[LayerSpec, ...]) -> StackedNet:
        """Stack the Linear layers of ``nets`` (one per member, same architecture)."""
        per_member = [linear_layers(net) for net in nets]
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor | None] = []
        for k, spec in enumerate(layers):
            weights.append(torch.stack([m[k].weight.detach() for m in per_member]).contiguous())
            if spec.bias:
                stacked = torch.stack([m[k].bias.detach() for m in per_member])
                biases.append(stacked.unsqueeze(-1).contiguous())
            else:
                biases.append(None)
        return cls(weights, biases, [spec.activation == "tanh" for spec in layers])

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    def params(self) -> list[torch.Tensor]:
        """Parameters in ``nn.Module.parameters()`` order (weight, bias, weight, ...)."""
        out: list[torch.Tensor] = []
        for w, b in zip(self.weights, self.biases, strict=True):
            out.append(w)
            if b is not None:
                out.append(b)
        return out

    def member_net(self, i: int) -> nn.Sequential:
        """Member ``i`` as an ordinary ``nn.Sequential`` (for the final eigen-analysis)."""
        modules: list[nn.Module] = []
        for w, b, act in zip(self.weights, self.biases, self.tanh, strict=True):
            linear = nn.Linear(w.shape[2], w.shape[1], bias=b is not None)
            linear = linear.to(dtype=w.dtype, device=w.device)
            with torch.no_grad():
                linear.weight.copy_(w[i])
                if b is not None and linear.bias is not None:
                    linear.bias.copy_(b[i, :, 0])
            modules.append(linear)
            if act:
                modules.append(nn.Tanh())
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """n(x) for every member: x (P, d, m) -> (P, d, m)."""
        a = x
        for w, b, act in zip(self.weights, self.biases, self.tanh, strict=True):
            a = torch.bmm(w, a) if b is None else torch.baddbmm(b, w, a)
            if act:
                a = torch.tanh(a)
        return a

    def forward_cached(self, x: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        """n(x) and each layer's (input, output), for :meth:`backward`."""
        cache: Cache = []
        a = x
        for w, b, act in zip(self.weights, self.biases, self.tanh, strict=True):
            z = torch.bmm(w, a) if b is None else torch.baddbmm(b, w, a)
            out = torch.tanh(z) if act else z
            cache.append((a, out))
            a = out
        return a, cache

    def backward(
        self, cache: Cache, grad_out: torch.Tensor, need_input_grad: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Vector-Jacobian product of one cached pass: parameter grads in ``params()``
        order, and (optionally) the gradient with respect to the pass's input."""
        g = grad_out  # (P, out, m)
        grads_rev: list[torch.Tensor] = []
        last = len(self.weights) - 1
        for k in range(last, -1, -1):
            a_in, out = cache[k]
            if self.tanh[k]:
                # g * (1 - out^2) (tanh' = 1 - tanh^2) in one fused pass, as autograd's
                # Tanh backward does: 2.4x faster than the three elementwise ops.
                g = torch.ops.aten.tanh_backward(g, out)
            if self.biases[k] is not None:
                grads_rev.append(g.sum(dim=2, keepdim=True))  # (P, out, 1)
            grads_rev.append(torch.bmm(g, a_in.transpose(1, 2)))  # (P, out, in)
            if k > 0 or need_input_grad:
                g = torch.bmm(self.weights[k].transpose(1, 2), g)  # (P, in, m)
        grads_rev.reverse()
        return grads_rev, (g if need_input_grad else None)


def sum_square(diff: torch.Tensor) -> torch.Tensor:
    """Per-member sum(diff^2) over (d, k): shape (P,). Through the vector norm: no
    (P, d, k) temporary, and ~4x faster than (diff * diff).sum() on one CPU thread."""
    flat = diff.reshape(diff.shape[0], -1)  # (P, d*k)
    return torch.linalg.vector_norm(flat, dim=1).square()


def chunks(m: int, chunk: int | None) -> list[slice]:
    """The sample ranges of one batch of ``m`` samples, ``chunk`` at a time (None: one)."""
    if chunk is None or chunk >= m:
        return [slice(0, m)]
    return [slice(s, min(s + chunk, m)) for s in range(0, m, chunk)]


def gradients(
    net: StackedNet, algorithm: Algorithm, x: torch.Tensor, chunk: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Every member's loss and gradients on its batch x (P, d, m) under ``algorithm``.

    ``chunk`` splits the batch's samples into passes of at most that many, whose
    gradients are summed (every sample enters the loss and Δn independently): the same
    gradient, but each pass's activations stay in the CPU's cache (measured with 20
    members, full batch of 10000: N1 ordinary 1.6x and N3 ordinary 1.5x faster in
    chunks of 1000-2000 than in one pass; docs/benchmarks.md).

    Returns each member's loss E(y) = mean((n(y) - y)^2), y = n(x), shape (P,), and
    the gradients in ``net.params()`` order (None where the rule leaves a parameter).
    """
    m = x.shape[2]
    sum_sq: torch.Tensor | None = None
    grads: list[torch.Tensor | None] = []
    for part in chunks(m, chunk):
        part_sq, part_grads = algorithm.gradients(net, x[:, :, part], m)
        if sum_sq is None:
            sum_sq, grads = part_sq, part_grads
            continue
        sum_sq.add_(part_sq)
        for a, b in zip(grads, part_grads, strict=True):
            if a is not None and b is not None:
                a.add_(b)
    assert sum_sq is not None
    return sum_sq.div_(x.shape[1] * m), grads


@torch.no_grad()
def idempotent_error(net: StackedNet, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Per-member mean((n(n(x)) - n(x))^2) over x (P, d, m), ``chunk`` samples per
    pass: shape (P,)."""
    total: torch.Tensor | None = None
    for part in chunks(x.shape[2], chunk):
        y = net.forward(x[:, :, part])
        part_sq = sum_square(net.forward(y).sub_(y))
        total = part_sq if total is None else total.add_(part_sq)
    assert total is not None
    return total.div_(x.shape[1] * x.shape[2])


@torch.no_grad()
def identity_image(net: StackedNet, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member Frobenius norm and trace of n(I) (column i is n(e_i)): two (P,)."""
    w = net.weights[0]
    eye = torch.eye(dim, dtype=w.dtype, device=w.device).expand(net.members, dim, dim)
    out = net.forward(eye)  # (P, d, d)
    norm = (out * out).sum(dim=(1, 2)).sqrt()
    return norm, torch.diagonal(out, dim1=1, dim2=2).sum(dim=1)


@torch.no_grad()
def affine_trace(net: StackedNet) -> torch.Tensor:
    """Per-member trace(W_k ... W_1) (P,): the constant Jacobian trace of an
    activation-free network. trace(A B) = sum(A * Bᵀ) for the last factor, so B3
    (4096 -> 1024 -> 4096) needs no matrix product at all and B4 one."""
    right = net.weights[0]  # (P, h_1, d)
    for w in net.weights[1:-1]:
        right = torch.bmm(w, right)  # (P, h_j, d)
    if len(net.weights) == 1:
        return torch.diagonal(right, dim1=1, dim2=2).sum(dim=1)
    return (net.weights[-1] * right.transpose(1, 2)).sum(dim=(1, 2))


@torch.no_grad()
def jacobian_trace(
    net: StackedNet, points: torch.Tensor, probes: torch.Tensor | None = None
) -> torch.Tensor:
    """Per member, the trace of the Jacobian of n at each of ``points`` (P, d, p): (P, p).

    Exact (the Jacobian itself, layer by layer) when ``probes`` is None (for d up to
    EXACT_JACOBIAN_MAX_DIM), else Hutchinson's estimate mean_k v_kᵀ J v_k with the given
    (P, p, K, d) probes: forward mode, the p·K tangents riding along the p points.
    """
    n_pts = points.shape[2]
    if probes is None:
        _, cache = net.forward_cached(points)
        jac: torch.Tensor | None = None  # (P, p, out, d): the Jacobian at each point
        for w, (_, out), act in zip(net.weights, cache, net.tanh, strict=True):
            jac = w.unsqueeze(1) if jac is None else torch.matmul(w.unsqueeze(1), jac)
            if act:
                scale = (1 - out * out).transpose(1, 2).unsqueeze(-1)  # (P, p, out, 1)
                jac = jac * scale
        assert jac is not None
        traces = torch.diagonal(jac, dim1=2, dim2=3).sum(dim=2)  # (P, p) or (P, 1)
        return traces.expand(points.shape[0], n_pts)
    size, _, k, d = probes.shape
    tangents = probes.permute(0, 3, 1, 2).reshape(size, d, n_pts * k)  # (P, d, p*K)
    h, t = points, tangents
    for w, b, act in zip(net.weights, net.biases, net.tanh, strict=True):
        h = torch.bmm(w, h) if b is None else torch.baddbmm(b, w, h)  # (P, out, p)
        t = torch.bmm(w, t)  # (P, out, p*K): no bias in a tangent
        if act:  # d tanh(h) = (1 - tanh(h)^2) dh
            h = torch.tanh(h)
            t = (t.view(size, -1, n_pts, k) * (1 - h * h).unsqueeze(-1)).view(size, -1, n_pts * k)
    return (tangents * t).sum(dim=1).view(size, n_pts, k).mean(dim=2)


@torch.no_grad()
def image_dim(
    net: StackedNet, x_eval: torch.Tensor, probes: torch.Tensor | None, activation_free: bool
) -> torch.Tensor:
    """Per-member mean trace of the Jacobian of n at image points y = n(x), x the first
    IMAGE_DIM_POINTS eval samples (P, d, n_eval): shape (P,).

    For an idempotent map the Jacobian at an image point is a projection onto the
    tangent of the image, so its trace is the image's dimension: 0 for a constant (null)
    map, d for the identity. Activation-free networks have one Jacobian everywhere
    (:func:`affine_trace`); others use :func:`jacobian_trace`, exact for d <= 128, else
    Hutchinson's estimator with the fixed ``probes`` drawn from each member's seed.
    """
    if activation_free:
        return affine_trace(net)
    y = net.forward(x_eval[:, :, :IMAGE_DIM_POINTS])  # (P, d, p)
    return jacobian_trace(net, y, probes).mean(dim=1)
