"""Plots of a sweep: curves (mean ± std bands per group, also as JSON) and per-run
distributions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from service.deps import ReadSessionDep, SweepId
from service.plots import (
    MEDIA_TYPES,
    Curve,
    curves_figure,
    distribution_figure,
    group_curves,
    label_for,
)
from service.routes.report import ERROR_SCHEMA
from service.routes.results import By, check_metric, metric_query, parse_by
from service.schemas import CurvePublic, CurvesPublic, ErrorPublic
from service.store import queries
from service.store.curves import epoch_curves
from service.store.query_fields import EPOCH_METRICS, METRICS

router = APIRouter(prefix="/sweeps", tags=["plots"])

IMAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "image/svg+xml": {}}, "description": "the figure"},
    # JSON errors spelled out: with ``"model": ErrorPublic`` FastAPI would document the
    # error bodies of an image route as image/png.
    404: {
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
        "description": "no such sweep",
    },
    422: {
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
        "description": "unknown field or metric",
    },
}
Format = Annotated[Literal["png", "svg"], Query(description="png or svg")]
MAX_RUNS = 100_000


Metric = Annotated[str, metric_query(EPOCH_METRICS, "a per-epoch metric")]
FinalMetric = Annotated[str, metric_query(METRICS, "a final metric")]
Stride = Annotated[int, Query(ge=1, le=100000, description="every k-th epoch from 1")]


def _curves(
    session: ReadSessionDep, sweep_id: int, metric: str, by: str, stride: int
) -> tuple[str, list[str], list[Curve]]:
    """The sweep's name, the group fields and one curve per group (one home for the
    figure and the JSON)."""
    fields = parse_by(by)
    check_metric(metric, per_epoch=True, advertised=EPOCH_METRICS)
    sweep = queries.get_sweep(session, sweep_id)
    points = epoch_curves(session, sweep_id, by=fields, metric=metric, stride=stride)
    return sweep.name, fields, group_curves(points)


@router.get("/{sweep_id}/plots/curves.png", response_class=Response, responses=IMAGE)
def curves(
    sweep_id: SweepId,
    session: ReadSessionDep,
    metric: Metric = "idempotent_error",
    by: By = "architecture,algorithm",
    stride: Stride = 1,
    format: Format = "png",
) -> Response:
    """Mean ± std of ``metric`` against epoch for each group (aggregated in SQL)."""
    name, _, drawn = _curves(session, sweep_id, metric, by, stride)
    body = curves_figure(drawn, metric, f"sweep {sweep_id}: {name}", format)
    return Response(body, media_type=MEDIA_TYPES[format])


@router.get(
    "/{sweep_id}/curves",
    response_model=CurvesPublic,
    responses={404: {"model": ErrorPublic}, 422: {"model": ErrorPublic}},
)
def curves_data(
    sweep_id: SweepId,
    session: ReadSessionDep,
    metric: Metric = "idempotent_error",
    by: By = "architecture,algorithm",
    stride: Stride = 1,
) -> CurvesPublic:
    """The curves that ``plots/curves.png`` draws, as data: per group, at each epoch,
    the number of succeeded runs, the mean and the sample std of ``metric``."""
    _, fields, drawn = _curves(session, sweep_id, metric, by, stride)
    data = [
        CurvePublic(group=c.group, label=c.label, epoch=c.epochs, n=c.n, mean=c.mean, std=c.std)
        for c in drawn
    ]
    return CurvesPublic(
        sweep_id=sweep_id, metric=metric, by=fields, stride=stride, data=data, count=len(data)
    )


@router.get("/{sweep_id}/plots/distribution.png", response_class=Response, responses=IMAGE)
def distribution(
    sweep_id: SweepId,
    session: ReadSessionDep,
    metric: FinalMetric = "idempotent_error",
    by: By = "architecture,algorithm",
    format: Format = "png",
) -> Response:
    """Each run's final ``metric`` as a point per group, with a box per group."""
    fields = parse_by(by)
    check_metric(metric, advertised=METRICS)
    sweep = queries.get_sweep(session, sweep_id)
    trials, _ = queries.list_trials(session, sweep_id, offset=0, limit=MAX_RUNS)
    groups: dict[str, list[float | None]] = {}
    for t in trials:
        if str(t.status) not in ("succeeded", "diverged"):
            continue  # unfinished, failed or cancelled runs have no final value
        label = label_for({f: getattr(t, f) for f in fields})
        groups.setdefault(label, []).append(getattr(t, metric))
    body = distribution_figure(
        list(groups.items()), metric, f"sweep {sweep_id}: {sweep.name}", format
    )
    return Response(body, media_type=MEDIA_TYPES[format])
