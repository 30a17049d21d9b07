"""The report as one self-contained HTML page, rendered from Jinja2 templates.

The templates (``service/report/templates``, shipped as package data) are rendered with
autoescape on, so every value from a spec or the store is escaped by Jinja2, not by hand.
No scripts and no external resources: figures are embedded as PNG data URIs, and the empty
data-URI icon stops a favicon request, so the page renders offline, from a file or the API.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from idemcore.calibrate import MATCH_FACTOR
from service import comparison
from service.report import claims
from service.report.analysis import SettingAnalysis
from service.report.kinds import DIM_TOLERANCE, KIND_ORDER, Kind, count_kinds
from service.report.model import ReportData
from service.report.provenance import SHOWN_SOURCES, provenance_rows
from service.report.text import comparison_label, glance, row_setting, tally
from service.schemas import ClaimRowPublic

NULL_MAP_WARNING = (
    "A tiny idempotent error from the null map is not a success. The null (or constant) "
    "map n(x) = 0 is trivially idempotent, and the note itself observes that the recurrence "
    "3A² − 2A³ sends every eigenvalue below 1/2 to 0; with PyTorch's default initialization "
    "most eigenvalues start there. A run counts as a real success only when it reaches the "
    "threshold at a real projection (0 < image dimension < d)."
)

# CSS class of a verdict's cell.
VERDICT_CLASS = {
    comparison.Verdict.holds: "holds",
    comparison.Verdict.holds_via_null_maps: "nullmaps",
    comparison.Verdict.fails: "fails",
}


def num(value: float | None, fmt: str = ".3g") -> str:
    """A number for the page; an en dash for a missing one."""
    return "–" if value is None else format(value, fmt)


def seeds(values: Sequence[int] | None) -> str:
    """'0–9' for a run of consecutive seeds, else the list."""
    if not values:
        return "–"
    ordered = sorted(values)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{ordered[0]}–{ordered[-1]}"
    return ", ".join(str(s) for s in ordered)


@cache
def environment() -> Environment:
    """The templates' environment: autoescape on, undefined names are errors."""
    env = Environment(
        loader=PackageLoader("service.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["seeds"] = seeds
    env.filters["verdict_class"] = lambda v: VERDICT_CLASS.get(v, "na")
    return env


def _kind_summary(data: ReportData) -> list[dict[str, Any]]:
    out = []
    for alg in sorted({t.algorithm for t in data.trials}):
        kc = count_kinds([t for t in data.trials if t.algorithm == alg], data.threshold)
        out.append({"algorithm": alg, "n": kc.n, **{k.name: kc.counts.get(k, 0) for k in Kind}})
    return out


def _memorization(settings: Sequence[SettingAnalysis]) -> list[dict[str, Any]]:
    """Train vs held-out idempotent error (fixed data): a large gap means memorizing."""
    rows = []
    for sa in settings:
        for alg in sa.algorithms:
            for lr in sa.learning_rates:
                runs = [t for t in sa.runs(alg, lr) if t.train_idempotent_error is not None]
                if not runs:
                    continue
                train = sorted(t.train_idempotent_error or 0.0 for t in runs)
                held = sorted(t.idempotent_error or 0.0 for t in runs)
                mt, mh = train[len(train) // 2], held[len(held) // 2]
                rows.append(
                    {
                        "setting": sa.setting.title(),
                        "algorithm": alg,
                        "lr": lr,
                        "runs": len(runs),
                        "train": mt,
                        "held": mh,
                        "ratio": mh / mt if mt > 0 else None,
                    }
                )
    return rows


def method() -> dict[str, Any]:
    """The numbers the method section quotes (each from where it is defined)."""
    return {
        "alpha": comparison.ALPHA,
        "confidence": comparison.CONFIDENCE,
        "resamples": comparison.BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": comparison.BOOTSTRAP_SEED,
        "exact_max": comparison.EXACT_MAX,
        "floor": comparison.ERROR_FLOOR,
        "tie_percent": round((10**comparison.ERROR_TIE - 1) * 100),
        "null_map_share": claims.NULL_MAP_SHARE,
        "min_split_seeds": claims.MIN_SPLIT_SEEDS,
        "match_factor": MATCH_FACTOR,
        "dim_tolerance": DIM_TOLERANCE,
    }


def render_page(
    data: ReportData,
    settings: Sequence[SettingAnalysis],
    images: Mapping[str, bytes],
    rows: Sequence[ClaimRowPublic],
) -> str:
    """The whole report page; ``rows`` are the claims (``GET /sweeps/{id}/claims``)."""
    if not settings:
        return environment().get_template("empty.html.j2").render(sweep=data.sweep)
    sweep = data.sweep
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            sweep=sweep,
            by_status=", ".join(f"{k} {v}" for k, v in sorted(sweep.trials_by_status.items())),
            warning=NULL_MAP_WARNING,
            kind_summary=_kind_summary(data),
            glance=glance(rows),
            tally=tally,
            claims=claims.CLAIMS,
            ways=list(claims.Way),
            rows=[(r, row_setting(r).title(), comparison_label(r)) for r in rows],
            dimension_rows=any(r.dimension != "algorithm" for r in rows),
            settings=settings,
            kind_order=KIND_ORDER,
            null_kind=Kind.null,
            images={name: base64.b64encode(png).decode() for name, png in images.items()},
            memorization=_memorization(settings),
            provenance=provenance_rows(data.trials),
            shown_sources=SHOWN_SOURCES,
            threshold=data.threshold,
            m=method(),
            spec_json=json.dumps(sweep.spec, indent=2, sort_keys=True),
        )
    )
