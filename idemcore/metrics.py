"""Metrics of a network's idempotence: error, n(I) norm/trace, image dimension, eigenvalues."""

from __future__ import annotations

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


def image_dim(net: nn.Module, x_eval: torch.Tensor, seed: int) -> float:
    """Mean trace of the Jacobian of n at points y = n(x) of its image.

    For an idempotent map the Jacobian at an image point is a projection onto the
    tangent of the image, so its trace is the image's dimension: 0 for a constant
    (null) map, d for the identity. Exact (d JVPs) for d <= 128, else Hutchinson's
    estimator with fixed Rademacher probes.
    """
    points = x_eval[:IMAGE_DIM_POINTS]
    with torch.no_grad():
        y = net(points)  # (p, d)
    p, d = y.shape
    total = torch.zeros(p, dtype=y.dtype, device=y.device)
    if d <= EXACT_JACOBIAN_MAX_DIM:
        eye = torch.eye(d, dtype=y.dtype, device=y.device)
        for j in range(d):
            tangent = eye[j].expand(p, d)
            jv = torch.func.jvp(net, (y,), (tangent,))[1]
            total += jv.detach()[:, j]
        return float(total.mean())
    g = generator(seed, STREAM_PROBE)
    for _ in range(HUTCHINSON_PROBES):
        v = (torch.randint(0, 2, (p, d), generator=g) * 2 - 1).to(y.dtype).to(y.device)
        jv = torch.func.jvp(net, (y,), (v,))[1]
        total += (v * jv.detach()).sum(dim=1)
    return float(total.mean() / HUTCHINSON_PROBES)


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
