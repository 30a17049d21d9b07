"""Per-epoch curves in SQL: mean and sample std of a metric per group and epoch (plots).

One grouped aggregate over up to millions of epoch rows; each backend gets the plan
that measured fastest on it (bench/store.py, docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.exceptions import InvalidQuery
from service.store.engine import is_sqlite
from service.store.models import EpochMetric, Trial
from service.store.query_fields import (
    check_fields,
    check_metric,
    grouped_records,
    require_sweep,
)
from service.store.records import CurvePoint
from service.store.status import TrialStatus

Column = InstrumentedAttribute[Any]  # a mapped column of Trial or EpochMetric


def epoch_curves(
    session: Session,
    sweep_id: int,
    *,
    by: Sequence[str],
    metric: str,
    stride: int = 1,
    statuses: Sequence[TrialStatus | str] = (TrialStatus.succeeded,),
) -> list[CurvePoint]:
    """Mean and sample std of a per-epoch metric per group and epoch, in SQL (for plots).

    Only trials in ``statuses`` count (succeeded by default); every ``stride``-th epoch
    from 1 is returned. Reused trials contribute the rows of the trial they reuse.
    Points come ordered by the group fields, then epoch.
    """
    fields = check_fields(by)
    check_metric(metric, 0)
    if stride < 1:
        raise InvalidQuery("stride must be a positive integer")
    require_sweep(session, sweep_id)
    trials = [
        Trial.sweep_id == sweep_id,
        Trial.status.in_([TrialStatus(s) for s in statuses]),
    ]
    epochs = [(EpochMetric.epoch - 1) % stride == 0] if stride > 1 else []
    groups = [getattr(Trial, f) for f in fields]
    v = getattr(EpochMetric, metric)
    if is_sqlite(session):
        rows = _curves_sqlite(session, groups, v, trials, epochs)
    else:
        rows = _curves_postgresql(session, groups, v, [*trials, *epochs])
    return grouped_records(CurvePoint, fields, rows)


def _curves_postgresql(
    session: Session, groups: list[Column], v: Column, where: list[ColumnElement[bool]]
) -> list[tuple[Any, ...]]:
    """One grouped aggregate over the sweep's trials joined to their epoch rows.

    Measured alternative, not taken: joining epoch_metric on a real column (a second
    ``trial`` reached through ``coalesce(reused_from, id)``) was about 30% faster with
    fresh statistics but 3-4× slower while the trial statuses' statistics were stale
    (just after a sweep ends, before autovacuum analyzes): the planner then sorted the
    1M rows on disk instead of hashing them. This plan held up in both cases.
    """
    stmt = (
        select(*groups, EpochMetric.epoch, func.count(v), func.avg(v), func.stddev_samp(v))
        .select_from(Trial)
        .join(EpochMetric, EpochMetric.trial_id == func.coalesce(Trial.reused_from, Trial.id))
        .where(*where)
        .group_by(*groups, EpochMetric.epoch)
        .order_by(*groups, EpochMetric.epoch)
    )
    return [tuple(r) for r in session.execute(stmt)]


def _curves_sqlite(
    session: Session,
    groups: list[Column],
    v: Column,
    trials: list[ColumnElement[bool]],
    epochs: list[ColumnElement[bool]],
) -> list[tuple[Any, ...]]:
    """SQLite groups by sorting every joined row, so the sort key is kept small: each
    trial gets its group's number (``dense_rank`` over the group fields, in their
    order) and the epoch rows are grouped by (number, epoch); the labels are joined
    back onto the 20,000-odd result rows. Variance from sums is fine for plotting;
    rounding below zero is clamped."""
    fields = [g.key for g in groups]
    numbered = (
        select(
            Trial.id,
            Trial.reused_from,
            func.dense_rank().over(order_by=groups or None).label("gid"),
            *groups,
        )
        .where(*trials)
        .cte("numbered")
    )
    n = func.count(v)
    var = (func.sum(v * v) - func.sum(v) * func.avg(v)) / (n - 1)
    std = case((n > 1, func.sqrt(func.max(var, 0.0))), else_=None)
    source = func.coalesce(numbered.c.reused_from, numbered.c.id)
    agg = (
        select(
            numbered.c.gid,
            EpochMetric.epoch,
            n.label("n"),
            func.avg(v).label("mean"),
            std.label("std"),
        )
        .join(EpochMetric, EpochMetric.trial_id == source)
        .where(*epochs)
        .group_by(numbered.c.gid, EpochMetric.epoch)
        .subquery("agg")
    )
    labels = select(numbered.c.gid, *[numbered.c[f] for f in fields]).distinct().subquery()
    stmt = (
        select(*[labels.c[f] for f in fields], agg.c.epoch, agg.c.n, agg.c.mean, agg.c.std)
        .join(labels, labels.c.gid == agg.c.gid)
        .order_by(agg.c.gid, agg.c.epoch)
    )
    return [tuple(r) for r in session.execute(stmt)]
