"""Metric settings, the image-dimension probes, and the final eigen-analysis.

The per-epoch metrics (idempotent error, n(I) norm and trace, image dimension) are
computed for every member of a pack at once in :mod:`idemcore.packed_engine`; the
eigenvalues of an activation-free network are computed once, at the end of a run.
"""

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


def hutchinson_probes(
    seed: int, points: int, dim: int, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Fixed Rademacher probes (points, HUTCHINSON_PROBES, dim) for one seed."""
    g = generator(seed, STREAM_PROBE)
    signs = torch.randint(0, 2, (points, HUTCHINSON_PROBES, dim), generator=g)
    return (signs * 2 - 1).to(dtype=dtype, device=device)


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
