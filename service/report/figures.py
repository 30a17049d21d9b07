"""The report's figures: solution kinds, per-run strip plots and curves with bands.

Built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global state),
so the API can render reports in its thread pool. Each function returns PNG bytes.

Curves are aggregated here rather than in SQL because the bands are taken in log space
(geometric mean × 10^±std of log10 error): a mean ± std band of raw errors that span
decades goes below zero on a log axis and hides the spread.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.report.analysis import SettingAnalysis
from service.report.kinds import KIND_ORDER, Kind, classify, input_dim
from service.report.model import ReportData
from service.store.records import TrialRecord

COLORS = {"modified": "#d62728", "ordinary": "#1f77b4", "m1": "#2ca02c"}
KIND_COLORS = {
    Kind.projection: "#2ca02c",
    Kind.null: "#7f7f7f",
    Kind.identity: "#9467bd",
    Kind.unconverged: "#ffbb78",
    Kind.diverged: "#d62728",
    Kind.unfinished: "#e0e0e0",
}
MARKERS = {
    Kind.projection: "o",
    Kind.null: "v",
    Kind.identity: "s",
    Kind.unconverged: "d",
    Kind.diverged: "X",
    Kind.unfinished: ".",
}
DPI = 90
CURVE_FLOOR = 1e-16  # below float32 round-off of an O(1) error
CURVE_CEILING = 1e4
CELL_POINTS = 200  # runs drawn as points per (algorithm, lr) in a strip; more get a box


def color(algorithm: str) -> str:
    return COLORS.get(algorithm, "#ff7f0e")


def png(fig: Any) -> bytes:
    """Render a Figure to PNG bytes with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _grid(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels, four to a row, fixed margins (no constrained layout:
    its repeated text measuring costs more than the drawing)."""
    from matplotlib.figure import Figure

    cols = min(4, max(1, n))
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(width * cols, height * rows + 1.0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    top = 1 - 0.55 / (height * rows + 1.0)
    bottom = 0.75 / (height * rows + 1.0)
    fig.subplots_adjust(left=0.06, right=0.99, top=top, bottom=bottom, wspace=0.3, hspace=0.55)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def log_y(ax: Any) -> None:
    """Log y axis with plain '1e-05' labels (mathtext labels are slow to lay out)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(numticks=6))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def kinds_figure(settings: Sequence[SettingAnalysis]) -> bytes:
    """Stacked bars: how many runs of each (algorithm, lr) ended at each kind of solution."""
    fig, axes = _grid(len(settings))
    for ax, sa in zip(axes, settings, strict=True):
        keys = [(alg, lr) for alg in sa.algorithms for lr in sa.learning_rates]
        bottom = [0] * len(keys)
        for kind in KIND_ORDER:
            heights = [sa.kinds[k].counts.get(kind, 0) for k in keys]
            if any(heights):
                ax.bar(
                    range(len(keys)),
                    heights,
                    bottom=bottom,
                    color=KIND_COLORS[kind],
                    label=kind.value,
                    edgecolor="white",
                    linewidth=0.5,
                )
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_xticks(range(len(keys)), [f"{a[:3]}\n{lr:g}" for a, lr in keys], fontsize=7)
        ax.set_title(_short_title(sa), fontsize=9)
        ax.set_ylabel("runs")
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("What kind of solution each run found (per algorithm and learning rate)")
    return png(fig)


def _short_title(sa: SettingAnalysis) -> str:
    s = sa.setting
    batch = "full" if s.batch_size == s.samples else f"m={s.batch_size}"
    extra = "" if s.init == "default" else f" · {s.init}"
    data = "" if s.data == "gaussian-fresh" else f" · {s.data}"
    return f"{s.architecture} · {batch}{data}{extra}"


def strip_figure(settings: Sequence[SettingAnalysis], strip: Strip, threshold: float) -> bytes:
    """One point per run: x = learning rate (algorithms side by side), y = its value,
    marker = its kind of solution; runs without a value are drawn at a labelled ceiling."""
    fig, axes = _grid(len(settings))
    value, log = strip.value, strip.log
    ceiling_label = "diverged" if strip.succeeded_only else "never"
    for ax, sa in zip(axes, settings, strict=True):
        finite = [v for t in sa.trials if (v := value(t)) is not None and math.isfinite(v)]
        positive = [v for v in finite if v > 0]
        top = (max(positive) * 10 if log else max(finite) * 1.15 + 1) if finite else 1.0
        if log and not positive:
            log = False
        width = 0.8 / max(1, len(sa.algorithms))
        points: dict[tuple[str, Kind], tuple[list[float], list[float]]] = {}
        drawn = total = 0
        for i, alg in enumerate(sa.algorithms):
            for j, lr in enumerate(sa.learning_rates):
                everyone = sa.runs(alg, lr)
                runs = sorted(sample_runs(everyone), key=lambda t: t.seed)
                drawn, total = drawn + len(runs), total + len(everyone)
                if len(runs) < len(everyone):  # a box of every run under the sampled points
                    values = [v for t in everyone if (v := value(t)) is not None]
                    values = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
                    if values:
                        _box(ax, j - 0.4 + width * (i + 0.5), width * 0.8, values, color(alg))
                for k, trial in enumerate(runs):
                    v = value(trial)
                    x = j - 0.4 + width * (i + 0.5) + (k - len(runs) / 2) * width / (len(runs) + 2)
                    y = v if v is not None and math.isfinite(v) else top
                    if log and y <= 0:
                        y = min(positive)
                    xs, ys = points.setdefault((alg, classify(trial, threshold)), ([], []))
                    xs.append(x)
                    ys.append(y)
        for (alg, kind), (xs, ys) in points.items():  # one scatter call per marker style
            ax.scatter(xs, ys, marker=MARKERS[kind], color=color(alg), s=22, alpha=0.85)
        for y in strip.hlines(sa, threshold):
            ax.axhline(y, color="black", linewidth=0.6, linestyle=":")
        ax.axhline(top, color="#bbbbbb", linewidth=0.5)
        ax.text(-0.45, top, ceiling_label, fontsize=6, va="bottom", color="#666666")
        if log:
            log_y(ax)
        ax.set_xticks(range(len(sa.learning_rates)), [f"{lr:g}" for lr in sa.learning_rates])
        ax.set_xlabel("learning rate")
        ax.set_ylabel(strip.metric.replace("_", " "))
        shown = "" if drawn == total else f"\n{drawn:,} of {total:,} runs drawn; boxes: all"
        ax.set_title(_short_title(sa) + shown, fontsize=9)
    _legend(fig, settings)
    fig.suptitle(strip.title)
    return png(fig)


def sample_runs(runs: Sequence[TrialRecord], limit: int = CELL_POINTS) -> list[TrialRecord]:
    """At most ``limit`` of ``runs``, a seeded random choice (the same runs on every
    build), so a strip with thousands of runs per group stays readable."""
    if len(runs) <= limit:
        return list(runs)
    return random.Random(len(runs)).sample(list(runs), limit)


def _box(ax: Any, x: float, width: float, values: list[float], colour: str) -> None:
    """A box (quartiles, whiskers at 1.5 IQR, no outlier marks) of every run's value."""
    ax.boxplot(
        [values],
        positions=[x],
        widths=[width],
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": colour, "alpha": 0.25, "edgecolor": colour},
        medianprops={"color": colour},
        whiskerprops={"color": colour},
        capprops={"color": colour},
        manage_ticks=False,
    )


def _legend(fig: Any, settings: Sequence[SettingAnalysis]) -> None:
    from matplotlib.lines import Line2D

    algs = sorted({a for sa in settings for a in sa.algorithms})
    handles = [Line2D([], [], color=color(a), marker="o", linestyle="", label=a) for a in algs]
    handles += [
        Line2D([], [], color="black", marker=MARKERS[k], linestyle="", label=k.value)
        for k in (Kind.projection, Kind.null, Kind.identity, Kind.unconverged, Kind.diverged)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)


@dataclass(frozen=True)
class Strip:
    """One strip figure: each run's final ``metric`` as a point (the axis label is the
    metric's name). With ``succeeded_only`` a run that did not succeed is drawn at the
    ceiling labelled "diverged"; otherwise a run without a value is, labelled "never"."""

    metric: str
    title: str
    log: bool = False
    succeeded_only: bool = True
    hlines: Callable[[SettingAnalysis, float], Sequence[float]] = lambda sa, threshold: ()

    def value(self, t: TrialRecord) -> float | None:
        value = getattr(t, self.metric)
        if value is None or (self.succeeded_only and t.status != "succeeded"):
            return None
        return float(value)


# The report's strip figures by file name, in the page's order.
STRIPS = {
    "image_dim.png": Strip(
        "image_dim",
        "Image dimension of every run's final map (dotted: 0 = null map, d = identity)",
        hlines=lambda sa, threshold: (0.0, float(input_dim(sa.trials[0].config))),
    ),
    "error_strip.png": Strip(
        "idempotent_error",
        "Final idempotent error of every run (dotted: the threshold)",
        log=True,
        hlines=lambda sa, threshold: (threshold,),
    ),
    "epochs_strip.png": Strip(
        "epochs_to_threshold",
        "Epochs to reach the threshold, every run (top line: never reached)",
        succeeded_only=False,
    ),
}


def log_band(
    data: ReportData, runs: Sequence[TrialRecord], metric: str = "idempotent_error"
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch: geometric mean of ``metric`` over runs and its 10^±std(log10) band."""
    values: dict[int, list[float]] = {}
    for trial in runs:
        for row in data.epochs.get(trial.id, ()):
            v = getattr(row, metric)
            if v is not None and v > 0 and math.isfinite(v):
                values.setdefault(row.epoch, []).append(math.log10(v))
    epochs = sorted(values)
    mid, lo, hi = [], [], []
    for e in epochs:
        logs = values[e]
        m = sum(logs) / len(logs)
        sd = math.sqrt(sum((x - m) ** 2 for x in logs) / (len(logs) - 1)) if len(logs) > 1 else 0
        mid.append(10**m)
        lo.append(10 ** (m - sd))
        hi.append(10 ** (m + sd))
    return epochs, mid, lo, hi


def curves_figure(data: ReportData, sa: SettingAnalysis) -> bytes:
    """Idempotent error against epoch, one panel per learning rate, one band per algorithm."""
    fig, axes = _grid(len(sa.learning_rates), width=3.6, height=2.9)
    for ax, lr in zip(axes, sa.learning_rates, strict=True):
        low, high = math.inf, 0.0
        for alg in sa.algorithms:
            epochs, mid, lo, hi = log_band(data, sa.runs(alg, lr))
            if not epochs:
                continue
            n = len(sa.runs(alg, lr))
            style = "--" if alg == "m1" else "-"  # m1 equals modified on N1: keep both visible
            ax.plot(epochs, mid, style, color=color(alg), linewidth=1.4, label=f"{alg} (n={n})")
            ax.fill_between(epochs, lo, hi, color=color(alg), alpha=0.2, linewidth=0)
            low, high = min(low, *lo), max(high, *hi)
        ax.axhline(data.threshold, color="black", linewidth=0.6, linestyle=":")
        log_y(ax)
        if high > 0:  # keep float32 round-off (1e-40) and blow-ups (1e20) from flattening
            ax.set_ylim(max(low, CURVE_FLOOR) / 2, min(high, CURVE_CEILING) * 2)
        ax.set_title(f"lr {lr:g}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("idempotent error")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{sa.setting.title()}: geometric mean over seeds, band ×10^±1 std (log10)",
        fontsize=10,
    )
    return png(fig)
