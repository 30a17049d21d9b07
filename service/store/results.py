"""Results of a sweep in SQL: per-group statistics of a metric, and paired comparisons.

Aggregates (count, mean, sample std, min, median, max) are computed by the database;
PostgreSQL has them all, SQLite gets the std and median from window functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from service.store.engine import is_sqlite
from service.store.models import EpochMetric, Trial
from service.store.query_fields import (
    COMPARE_GROUP,
    check_fields,
    check_metric,
    grouped_records,
    require_sweep,
)
from service.store.records import CompareRow, SummaryRow
from service.store.status import TrialStatus


def _value_source(
    query: Any, trial: Any, metric: str, epoch: int | None
) -> tuple[Any, ColumnElement[Any]]:
    """The metric column for ``trial`` (final, or at ``epoch`` via an outer join)."""
    if epoch is None:
        return query, getattr(trial, metric)
    em = aliased(EpochMetric)
    query = query.outerjoin(
        em,
        and_(em.trial_id == func.coalesce(trial.reused_from, trial.id), em.epoch == epoch),
    )
    return query, getattr(em, metric)


def summary(
    session: Session,
    sweep_id: int,
    *,
    by: Sequence[str],
    metric: str,
    epoch: int | None = None,
) -> list[SummaryRow]:
    """Per-group statistics of ``metric`` over the sweep's succeeded trials, in SQL.

    ``epoch=None`` uses the trial's final value; an epoch number reads epoch_metric at
    that epoch. ``diverged`` counts diverged trials of the group and ``never`` the
    succeeded or diverged trials that never reached the threshold.
    """
    fields = check_fields(by)
    check_metric(metric, epoch)
    require_sweep(session, sweep_id)
    groups = [getattr(Trial, f) for f in fields]
    base = select(*groups).where(Trial.sweep_id == sweep_id)
    base, raw = _value_source(base, Trial, metric, epoch)
    x = case((Trial.status == TrialStatus.succeeded, raw), else_=None)
    diverged = case((Trial.status == TrialStatus.diverged, 1), else_=0)
    never = case(
        (
            and_(
                Trial.status.in_([TrialStatus.succeeded, TrialStatus.diverged]),
                Trial.epochs_to_threshold.is_(None),
            ),
            1,
        ),
        else_=0,
    )
    if is_sqlite(session):
        rows = _summary_sqlite(session, base, fields, x, diverged, never)
    else:
        stmt = (
            base.add_columns(
                func.count(x),
                func.avg(x),
                func.stddev_samp(x),
                func.min(x),
                func.percentile_cont(0.5).within_group(x),
                func.max(x),
                func.sum(diverged),
                func.sum(never),
            )
            .group_by(*groups)
            .order_by(*groups)
        )
        rows = [tuple(r) for r in session.execute(stmt)]
    return grouped_records(SummaryRow, fields, rows)


def _summary_sqlite(
    session: Session,
    base: Select[Any],
    fields: list[str],
    x: ColumnElement[Any],
    diverged: ColumnElement[Any],
    never: ColumnElement[Any],
) -> list[tuple[Any, ...]]:
    """SQLite has no stddev or median: a window subquery gives each row its group's
    mean (two-pass, numerically stable variance) and its rank among non-null values."""
    groups = [getattr(Trial, f) for f in fields]
    part = groups or None
    inner = base.add_columns(
        x.label("x"),
        diverged.label("dv"),
        never.label("nv"),
        func.avg(x).over(partition_by=part).label("m"),
        func.count(x).over(partition_by=part).label("c"),
        func.row_number().over(partition_by=[*groups, x.is_(None)], order_by=x).label("rn"),
    ).subquery()
    g = [inner.c[f] for f in fields]
    xv, c, rn = inner.c.x, inner.c.c, inner.c.rn
    n = func.count(xv)
    variance = func.sum((xv - inner.c.m) * (xv - inner.c.m)) / (n - 1)
    is_mid = and_(xv.is_not(None), or_(rn == (c + 1) // 2, rn == (c + 2) // 2))
    stmt = (
        select(
            *g,
            n,
            func.avg(xv),
            case((n > 1, func.sqrt(variance)), else_=None),
            func.min(xv),
            func.avg(case((is_mid, xv), else_=None)),
            func.max(xv),
            func.sum(inner.c.dv),
            func.sum(inner.c.nv),
        )
        .group_by(*g)
        .order_by(*g)
    )
    return [tuple(r) for r in session.execute(stmt)]


def compare_rows(
    session: Session,
    sweep_id: int,
    *,
    a: str,
    b: str,
    metric: str,
    epoch: int | None = None,
) -> list[CompareRow]:
    """Paired values of ``metric`` for algorithms ``a`` and ``b``: a SQL self-join of the
    sweep's trials that agree on every config field but the algorithm (``pair_key``).

    Values are raw (any status, None where missing); the caller decides how diverged
    or unfinished trials count.
    """
    check_metric(metric, epoch)
    require_sweep(session, sweep_id)
    ta, tb = aliased(Trial), aliased(Trial)
    query = select(
        *[getattr(ta, f) for f in COMPARE_GROUP],
        ta.seed,
        ta.init,
        ta.id,
        tb.id,
        ta.status,
        tb.status,
    ).join(
        tb,
        and_(
            tb.sweep_id == ta.sweep_id,
            tb.pair_key == ta.pair_key,
            tb.algorithm == b,
        ),
    )
    query, va = _value_source(query, ta, metric, epoch)
    query, vb = _value_source(query, tb, metric, epoch)
    query = (
        query.add_columns(va, vb)
        .where(ta.sweep_id == sweep_id, ta.algorithm == a)
        .order_by(*[getattr(ta, f) for f in COMPARE_GROUP], ta.seed, ta.init, ta.id, tb.id)
    )
    return grouped_records(CompareRow, COMPARE_GROUP, session.execute(query))
