"""Figures for the API: curves with mean ± std bands, and per-run distributions.

Built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global state), so
concurrent requests in the server's thread pool never share a figure. The y axis is
logarithmic when every value is positive and they span more than a decade (idempotent
errors span many), linear otherwise (image_dim can be 0).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from service.store.records import CurvePoint

Format = Literal["png", "svg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}


@dataclass(frozen=True)
class Curve:
    """One group's mean and std of a metric at each epoch (over ``n`` runs)."""

    label: str
    epochs: list[int]
    mean: list[float | None]
    std: list[float | None]
    group: dict[str, Any] = field(default_factory=dict)
    n: list[int] = field(default_factory=list)


def group_curves(points: Iterable[CurvePoint]) -> list[Curve]:
    """The store's per-(group, epoch) points as one curve per group, in the store's order
    (what the curves figure draws and ``GET /sweeps/{id}/curves`` returns)."""
    curves: dict[str, Curve] = {}
    for p in points:
        label = label_for(p.group)
        curve = curves.setdefault(label, Curve(label, [], [], [], dict(p.group), []))
        curve.epochs.append(p.epoch)
        curve.mean.append(p.mean)
        curve.std.append(p.std)
        curve.n.append(p.n)
    return list(curves.values())


def label_for(group: dict[str, Any]) -> str:
    """A short legend label: ``N1 modified lr=0.1 bs=2000``."""
    short = {"learning_rate": "lr", "batch_size": "bs", "samples": "m", "seed": "seed"}
    parts = []
    for key, value in group.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{short[key]}={text}" if key in short else text)
    return " ".join(parts) or "all"


def _use_log(values: Sequence[float]) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 10


def _render(fig: Any, fmt: Format) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100, bbox_inches="tight")
    return buf.getvalue()


def curves_figure(curves: Sequence[Curve], metric: str, title: str, fmt: Format = "png") -> bytes:
    """Mean ± std of ``metric`` against epoch, one line and band per group."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    means = [m for c in curves for m in c.mean if m is not None]
    log = _use_log(means)
    for curve in curves:
        x = np.asarray(curve.epochs, dtype=float)
        mean = np.asarray([np.nan if m is None else m for m in curve.mean], dtype=float)
        std = np.asarray([0.0 if s is None else s for s in curve.std], dtype=float)
        (line,) = ax.plot(x, mean, label=curve.label, linewidth=1.4)
        lower = mean - std
        if log:  # a band reaching zero would vanish off a log axis: clip it
            lower = np.maximum(lower, mean * 1e-3)
        ax.fill_between(x, lower, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize="small", loc="best", ncol=2 if len(curves) > 12 else 1)
    else:
        ax.text(0.5, 0.5, "no epochs stored yet", ha="center", va="center", transform=ax.transAxes)
    return _render(fig, fmt)


def distribution_figure(
    groups: Sequence[tuple[str, list[float | None]]],
    metric: str,
    title: str,
    fmt: Format = "png",
) -> bytes:
    """Each run's value as a point per group (jittered), with a box per group; runs
    without a value (diverged) are counted in the group's label."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.7 * len(groups) + 3), 5.5))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: the same data gives the same picture
    present = [[v for v in values if v is not None and math.isfinite(v)] for _, values in groups]
    labels = []
    for (label, raw), finite in zip(groups, present, strict=True):
        missing = len(raw) - len(finite)
        labels.append(f"{label}\n({missing} missing)" if missing else label)
    positions = list(range(1, len(groups) + 1))
    boxed = [(p, v) for p, v in zip(positions, present, strict=True) if v]
    if boxed:
        ax.boxplot(
            [v for _, v in boxed],
            positions=[p for p, _ in boxed],
            widths=0.5,
            showfliers=False,
            medianprops={"color": "black"},
        )
    for pos, values in zip(positions, present, strict=True):
        jitter = rng.uniform(-0.15, 0.15, size=len(values))
        ax.scatter(np.full(len(values), pos) + jitter, values, s=14, alpha=0.7, zorder=3)
    if _use_log([v for vs in present for v in vs]):
        ax.set_yscale("log")
    ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return _render(fig, fmt)
