"""Metrics of a network's idempotence: error, n(I) norm/trace, image dimension, eigenvalues.

The per-epoch metrics run after every epoch of every trial, so they are written to cost
a small fraction of an epoch: one forward pass over [I; x_eval] serves the identity image,
the held-out error and the image points, and the Jacobian trace behind ``image_dim`` is
one batched forward-mode pass (all d tangents at once) instead of d separate JVPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from idemcore.data import STREAM_PROBE, generator
from idemcore.nets import linear_layers

IMAGE_DIM_POINTS = 64
EXACT_JACOBIAN_MAX_DIM = 128
HUTCHINSON_PROBES = 16
EIG_TOL = 1e-2


@torch.no_grad()
def idempotent_error(net: nn.Module, x: torch.Tensor) -> float:
    """E(n(x)) = mean((n(n(x)) - n(x))^2) over a batch x (m, d)."""
    y = net(x)
    return float(torch.mean((net(y) - y) ** 2))


@torch.no_grad()
def identity_image(net: nn.Module, dim: int) -> tuple[float, float]:
    """Frobenius norm and trace of n(I): the d x d identity fed as a batch of d inputs."""
    param = next(net.parameters())
    eye = torch.eye(dim, dtype=param.dtype, device=param.device)
    out = net(eye)  # (d, d); row i is n(e_i)
    return float(torch.linalg.matrix_norm(out)), float(torch.trace(out))


def _is_plain_mlp(net: nn.Module) -> bool:
    """True when ``net`` is a Sequential of Linear and Tanh only (every idemcore net)."""
    return isinstance(net, nn.Sequential) and all(isinstance(m, nn.Linear | nn.Tanh) for m in net)


@torch.no_grad()
def jacobian_vector_products(
    net: nn.Module, points: torch.Tensor, tangents: torch.Tensor
) -> torch.Tensor:
    """J_n(points[i]) @ tangents[i, k] for every point i and tangent k, in one pass.

    ``points`` is (p, d), ``tangents`` (p, k, d); returns (p, k, d). Forward mode by
    hand for Linear/Tanh stacks (a (p, k, width) tangent rides along the (p, width)
    primal); any other module falls back to one batched ``torch.func.jvp``.
    """
    p, k, d = tangents.shape
    if not (isinstance(net, nn.Sequential) and _is_plain_mlp(net)):
        primal = points.unsqueeze(1).expand(p, k, d).reshape(p * k, d)
        out = torch.func.jvp(net, (primal,), (tangents.reshape(p * k, d),))[1]
        return out.reshape(p, k, -1)
    h, t = points, tangents
    for module in net:
        if isinstance(module, nn.Linear):
            h = module(h)  # (p, out)
            t = torch.matmul(t, module.weight.T)  # (p, k, out): no bias in a tangent
        else:  # Tanh: d tanh(h) = (1 - tanh(h)^2) dh
            h = torch.tanh(h)
            t = t * (1 - h * h).unsqueeze(1)
    return t


@torch.no_grad()
def affine_trace(net: nn.Module) -> float:
    """trace(W_k ... W_1): the Jacobian trace of an activation-free network (constant).

    Uses trace(A B) = sum(A * B^T) for the last factor, so B3 (4096 -> 1024 -> 4096)
    needs no matrix product at all and B4 one.
    """
    weights = [layer.weight for layer in linear_layers(net)]
    right = weights[0]  # (h_1, d)
    for w in weights[1:-1]:
        right = w @ right  # (h_j, d)
    if len(weights) == 1:
        return float(torch.trace(right))
    return float(torch.sum(weights[-1] * right.T))


def hutchinson_probes(
    seed: int, points: int, dim: int, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Fixed Rademacher probes (points, HUTCHINSON_PROBES, dim) for one seed."""
    g = generator(seed, STREAM_PROBE)
    signs = torch.randint(0, 2, (points, HUTCHINSON_PROBES, dim), generator=g)
    return (signs * 2 - 1).to(dtype=dtype, device=device)


@torch.no_grad()
def jacobian_trace(
    net: nn.Module, points: torch.Tensor, probes: torch.Tensor | None = None
) -> torch.Tensor:
    """Trace of the Jacobian of n at each of ``points`` (p, d); returns (p,).

    Exact (all d unit tangents in one batched pass) when ``probes`` is None, else
    Hutchinson's estimate mean_k v_k^T J v_k with the given (p, K, d) probes.
    """
    p, d = points.shape
    if probes is None:
        eye = torch.eye(d, dtype=points.dtype, device=points.device)
        jv = jacobian_vector_products(net, points, eye.expand(p, d, d))  # (p, d, d)
        return torch.diagonal(jv, dim1=1, dim2=2).sum(dim=1)
    jv = jacobian_vector_products(net, points, probes)  # (p, K, d)
    return (probes * jv).sum(dim=2).mean(dim=1)


def image_dim(net: nn.Module, x_eval: torch.Tensor, seed: int) -> float:
    """Mean trace of the Jacobian of n at points y = n(x) of its image.

    For an idempotent map the Jacobian at an image point is a projection onto the
    tangent of the image, so its trace is the image's dimension: 0 for a constant
    (null) map, d for the identity. Exact for d <= 128, else Hutchinson's estimator
    with fixed Rademacher probes drawn from ``seed``. (For activation-free networks
    the Jacobian is the same everywhere; :class:`EpochMetrics` then uses
    :func:`affine_trace`, the same number without the probes.)
    """
    points = x_eval[:IMAGE_DIM_POINTS]
    with torch.no_grad():
        y = net(points)  # (p, d)
    p, d = y.shape
    probes = None
    if d > EXACT_JACOBIAN_MAX_DIM:
        probes = hutchinson_probes(seed, p, d, y.dtype, y.device)
    return float(jacobian_trace(net, y, probes).mean())


class EpochMetrics:
    """The per-epoch metrics of one trial, with everything that does not change cached.

    ``measure(net)`` returns ``(norm, trace, idempotent_error, train_idempotent_error,
    image_dim)``; train error is None without a fixed training set, image_dim None when
    the held-out error is not finite.
    """

    def __init__(
        self,
        x_eval: torch.Tensor,
        x_train: torch.Tensor | None,
        seed: int,
        *,
        activation_free: bool,
    ) -> None:
        self.dim = x_eval.shape[1]
        self.x_train = x_train
        self.n_eval = x_eval.shape[0]
        self.activation_free = activation_free
        eye = torch.eye(self.dim, dtype=x_eval.dtype, device=x_eval.device)
        self.inputs = torch.cat([eye, x_eval])  # (d + n_eval, d): one pass for both
        self.points = min(IMAGE_DIM_POINTS, self.n_eval)
        self.probes: torch.Tensor | None = None
        if not activation_free and self.dim > EXACT_JACOBIAN_MAX_DIM:
            self.probes = hutchinson_probes(
                seed, self.points, self.dim, x_eval.dtype, x_eval.device
            )

    @torch.no_grad()
    def measure(self, net: nn.Module) -> tuple[float, float, float, float | None, float | None]:
        d = self.dim
        out = net(self.inputs)  # (d + n_eval, d)
        image = out[:d]  # n(I), row i = n(e_i)
        y = out[d:]  # n(x_eval)
        stats = torch.stack(
            [
                torch.linalg.matrix_norm(image),
                torch.trace(image),
                torch.mean((net(y) - y) ** 2),
            ]
        ).tolist()  # one device sync for the three numbers
        norm, trace, err = stats
        train_err = None if self.x_train is None else idempotent_error(net, self.x_train)
        idim: float | None = None
        if math.isfinite(err):
            if self.activation_free:
                idim = affine_trace(net)
            else:
                idim = float(jacobian_trace(net, y[: self.points], self.probes).mean())
        return norm, trace, err, train_err, idim


@dataclass(frozen=True)
class EigenAnalysis:
    """Eigenvalues of the effective matrix of an activation-free network."""

    eigenvalues: list[tuple[float, float]]  # (real, imag), sorted by real part
    near_zero: int
    near_one: int
    wb_norm: float | None  # ||W b|| for a single affine layer: 0 when idempotent


@torch.no_grad()
def eigen_analysis(net: nn.Module) -> EigenAnalysis:
    """Eigenvalues of W_k ... W_1, computed on the narrowest cyclic rotation.

    eig(AB) equals eig(BA) plus zeros, so a chain with a narrow layer (B3: 4096 -> 1024
    -> 4096) needs only a 1024 x 1024 eigenproblem.
    """
    weights = [layer.weight.double().cpu() for layer in linear_layers(net)]
    d = weights[0].shape[1]
    widths = [w.shape[0] for w in weights[:-1]]  # inner dimensions d_1 .. d_{k-1}
    split = min(range(len(widths)), key=lambda i: widths[i]) + 1 if widths else 0
    if split and widths[split - 1] < d:
        first = weights[:split]  # W_1 .. W_j: product B (d_j x d)
        last = weights[split:]  # W_{j+1} .. W_k: product A (d x d_j)
        b = first[0]
        for w in first[1:]:
            b = w @ b
        a = last[0]
        for w in last[1:]:
            a = w @ a
        small = b @ a  # (d_j, d_j)
        values = torch.linalg.eigvals(small)
        zeros = torch.zeros(d - small.shape[0], dtype=values.dtype)
        values = torch.cat([values, zeros])
    else:
        m = weights[0]
        for w in weights[1:]:
            m = w @ m
        values = torch.linalg.eigvals(m)
    order = torch.argsort(values.real)
    values = values[order]
    near_zero = int((values.abs() < EIG_TOL).sum())
    near_one = int(((values - 1).abs() < EIG_TOL).sum())
    wb_norm = None
    layers = linear_layers(net)
    if len(layers) == 1 and layers[0].bias is not None:
        wb = layers[0].weight.double() @ layers[0].bias.double()
        wb_norm = float(torch.linalg.vector_norm(wb))
    pairs = [(float(v.real), float(v.imag)) for v in values]
    return EigenAnalysis(pairs, near_zero, near_one, wb_norm)
