"""Read side of the store for the API and the report: listings and SQL aggregates.

Grouping fields and metrics are checked against the whitelists ``TRIAL_FIELDS``,
``METRICS`` and ``EPOCH_METRICS`` and then used as column objects, never interpolated.
Aggregates (count, mean, sample std, min, median, max) are computed by the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from service.exceptions import InvalidQuery, NotFound
from service.store.convert import sweep_record, trial_record
from service.store.engine import is_sqlite
from service.store.models import EPOCH_COLUMNS, FINAL_METRIC_COLUMNS, EpochMetric, Sweep, Trial
from service.store.records import (
    CompareRow,
    CurvePoint,
    EpochRow,
    SummaryRow,
    SweepRecord,
    TrialRecord,
)
from service.store.status import SweepStatus, TrialStatus

# Config columns of a trial that can group, filter and pair results.
TRIAL_FIELDS: tuple[str, ...] = (
    "architecture",
    "algorithm",
    "learning_rate",
    "samples",
    "batch_size",
    "seed",
    "data",
    "init",
    "optimizer",
)
# Final metrics stored on the trial row.
METRICS: tuple[str, ...] = FINAL_METRIC_COLUMNS
# Per-epoch metrics stored in epoch_metric (usable with ``epoch=`` and in curves).
EPOCH_METRICS: tuple[str, ...] = EPOCH_COLUMNS
# The fields a comparison groups by (seed and init identify the pair inside a group).
COMPARE_GROUP: tuple[str, ...] = (
    "architecture",
    "learning_rate",
    "samples",
    "batch_size",
    "data",
    "optimizer",
)
# Trials that may have epoch rows (a pending trial has none; a cancelled one is not shown).
CURVE_STATUSES: tuple[TrialStatus, ...] = (
    TrialStatus.running,
    TrialStatus.succeeded,
    TrialStatus.diverged,
    TrialStatus.failed,
)


def _check_fields(by: Sequence[str]) -> list[str]:
    fields = list(by)
    unknown = [f for f in fields if f not in TRIAL_FIELDS]
    if unknown:
        raise InvalidQuery(f"unknown field(s) {unknown}; expected some of {list(TRIAL_FIELDS)}")
    if len(set(fields)) != len(fields):
        raise InvalidQuery(f"field repeated in {fields}")
    return fields


def _check_metric(metric: str, epoch: int | None) -> None:
    allowed = EPOCH_METRICS if epoch is not None else METRICS
    if metric not in allowed:
        where = "per-epoch" if epoch is not None else "final"
        raise InvalidQuery(f"unknown {where} metric {metric!r}; expected one of {list(allowed)}")


def require_sweep(session: Session, sweep_id: int) -> None:
    """Raise NotFound unless sweep ``sweep_id`` exists."""
    if session.get(Sweep, sweep_id) is None:
        raise NotFound(f"sweep {sweep_id} not found")


def _counts(session: Session, sweep_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Trials per status for each sweep, one grouped query."""
    out: dict[int, dict[str, int]] = {i: {} for i in sweep_ids}
    if not sweep_ids:
        return out
    rows = session.execute(
        select(Trial.sweep_id, Trial.status, func.count())
        .where(Trial.sweep_id.in_(list(sweep_ids)))
        .group_by(Trial.sweep_id, Trial.status)
    )
    for sweep_id, status, n in rows:
        out[sweep_id][TrialStatus(status).value] = int(n)
    return out


def list_sweeps(
    session: Session,
    *,
    status: SweepStatus | str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[SweepRecord], int]:
    """A page of sweeps, newest first, and the total count (optionally by status)."""
    query = select(Sweep)
    count = select(func.count()).select_from(Sweep)
    if status is not None:
        query = query.where(Sweep.status == SweepStatus(status))
        count = count.where(Sweep.status == SweepStatus(status))
    total = int(session.scalar(count) or 0)
    sweeps = list(session.scalars(query.order_by(Sweep.id.desc()).offset(offset).limit(limit)))
    counts = _counts(session, [s.id for s in sweeps])
    return [sweep_record(s, counts[s.id]) for s in sweeps], total


def get_sweep(session: Session, sweep_id: int) -> SweepRecord:
    """One sweep with its trial counts; raises NotFound."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep_record(sweep, _counts(session, [sweep_id])[sweep_id])


def trial_conditions(
    sweep_id: int, filters: Mapping[str, Any] | None = None
) -> list[ColumnElement[bool]]:
    """WHERE conditions for the sweep's trials matching ``filters``: a TRIAL_FIELDS name
    or ``status`` mapped to a value or a list of values (listings and exports share them)."""
    conditions: list[ColumnElement[bool]] = [Trial.sweep_id == sweep_id]
    for name, value in (filters or {}).items():
        if name != "status":
            _check_fields([name])
        column = getattr(Trial, name)
        values = list(value) if isinstance(value, list | tuple | set) else [value]
        if name == "status":
            try:
                values = [TrialStatus(v) for v in values]
            except ValueError as exc:
                raise InvalidQuery(f"unknown trial status in {values}") from exc
        conditions.append(column.in_(values))
    return conditions


def list_trials(
    session: Session,
    sweep_id: int,
    *,
    filters: Mapping[str, Any] | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[TrialRecord], int]:
    """A page of a sweep's trials (by id) and the total matching ``filters``.

    ``filters`` maps a TRIAL_FIELDS name or ``status`` to a value or a list of values.
    """
    require_sweep(session, sweep_id)
    conditions = trial_conditions(sweep_id, filters)
    total = int(session.scalar(select(func.count()).select_from(Trial).where(*conditions)) or 0)
    rows = session.scalars(
        select(Trial).where(*conditions).order_by(Trial.id).offset(offset).limit(limit)
    )
    return [trial_record(t) for t in rows], total


def sweep_trials(session: Session, sweep_id: int) -> list[TrialRecord]:
    """Every trial of a sweep in id order: one query, whatever the sweep's size."""
    require_sweep(session, sweep_id)
    rows = session.scalars(select(Trial).where(Trial.sweep_id == sweep_id).order_by(Trial.id))
    return [trial_record(t) for t in rows]


def sweep_epochs(
    session: Session,
    sweep_id: int,
    *,
    stride: int = 1,
    statuses: Sequence[TrialStatus | str] = CURVE_STATUSES,
) -> dict[int, list[EpochRow]]:
    """The epoch curves of a whole sweep in ONE query: trial id -> its rows by epoch.

    Every ``stride``-th epoch from 1 is read, plus each trial's last epoch
    (``epochs_run``); only trials in ``statuses`` count. A reused trial's curve is read
    through ``reused_from`` and filed under the reusing trial's id.
    """
    if stride < 1:
        raise InvalidQuery("stride must be a positive integer")
    require_sweep(session, sweep_id)
    source = func.coalesce(Trial.reused_from, Trial.id)
    query = (
        select(Trial.id, EpochMetric.epoch, *[getattr(EpochMetric, c) for c in EPOCH_COLUMNS])
        .select_from(Trial)
        .join(EpochMetric, EpochMetric.trial_id == source)
        .where(
            Trial.sweep_id == sweep_id,
            Trial.status.in_([TrialStatus(s) for s in statuses]),
        )
    )
    if stride > 1:
        query = query.where(
            or_((EpochMetric.epoch - 1) % stride == 0, EpochMetric.epoch == Trial.epochs_run)
        )
    out: dict[int, list[EpochRow]] = {}
    for r in session.execute(query.order_by(Trial.id, EpochMetric.epoch)):
        values = dict(zip(EPOCH_COLUMNS, r[2:], strict=True))
        out.setdefault(r[0], []).append(EpochRow(epoch=r[1], **values))
    return out


def get_trial(session: Session, trial_id: int) -> TrialRecord:
    """One trial; raises NotFound."""
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"trial {trial_id} not found")
    return trial_record(trial)


def trial_epochs(session: Session, trial_id: int, *, stride: int = 1) -> list[EpochRow]:
    """A trial's epoch curve (every ``stride``-th epoch from 1, plus the last one).

    A reused trial has no rows of its own: its curve is read through ``reused_from``.
    """
    if stride < 1:
        raise InvalidQuery("stride must be a positive integer")
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"trial {trial_id} not found")
    source = trial.reused_from or trial.id
    last = select(func.max(EpochMetric.epoch)).where(EpochMetric.trial_id == source)
    query = select(EpochMetric).where(EpochMetric.trial_id == source)
    if stride > 1:
        query = query.where(
            or_((EpochMetric.epoch - 1) % stride == 0, EpochMetric.epoch == last.scalar_subquery())
        )
    rows = session.scalars(query.order_by(EpochMetric.epoch))
    return [EpochRow(epoch=r.epoch, **{c: getattr(r, c) for c in EPOCH_COLUMNS}) for r in rows]


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
    fields = _check_fields(by)
    _check_metric(metric, epoch)
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
    k = len(fields)
    return [
        SummaryRow(
            group=dict(zip(fields, r[:k], strict=True)),
            n=int(r[k]),
            mean=_f(r[k + 1]),
            std=_f(r[k + 2]),
            min=_f(r[k + 3]),
            median=_f(r[k + 4]),
            max=_f(r[k + 5]),
            diverged=int(r[k + 6] or 0),
            never=int(r[k + 7] or 0),
        )
        for r in rows
    ]


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


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


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
    _check_metric(metric, epoch)
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
    k = len(COMPARE_GROUP)
    return [
        CompareRow(
            group=dict(zip(COMPARE_GROUP, r[:k], strict=True)),
            seed=r[k],
            init=r[k + 1],
            a_trial_id=r[k + 2],
            b_trial_id=r[k + 3],
            a_status=TrialStatus(r[k + 4]),
            b_status=TrialStatus(r[k + 5]),
            a_value=_f(r[k + 6]),
            b_value=_f(r[k + 7]),
        )
        for r in session.execute(query)
    ]


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
    fields = _check_fields(by)
    _check_metric(metric, 0)
    if stride < 1:
        raise InvalidQuery("stride must be a positive integer")
    require_sweep(session, sweep_id)
    trials = [
        Trial.sweep_id == sweep_id,
        Trial.status.in_([TrialStatus(s) for s in statuses]),
    ]
    epochs = [(EpochMetric.epoch - 1) % stride == 0] if stride > 1 else []
    if is_sqlite(session):
        rows = _curves_sqlite(session, fields, metric, trials, epochs)
    else:
        rows = _curves_postgresql(session, fields, metric, trials, epochs)
    k = len(fields)
    return [
        CurvePoint(
            group=dict(zip(fields, r[:k], strict=True)),
            epoch=int(r[k]),
            n=int(r[k + 1]),
            mean=_f(r[k + 2]),
            std=_f(r[k + 3]),
        )
        for r in rows
    ]


def _curves_postgresql(
    session: Session,
    fields: list[str],
    metric: str,
    trials: list[ColumnElement[bool]],
    epochs: list[ColumnElement[bool]],
) -> list[tuple[Any, ...]]:
    """One grouped aggregate over the sweep's trials joined to their epoch rows.

    Measured alternative, not taken: joining epoch_metric on a real column (a second
    ``trial`` reached through ``coalesce(reused_from, id)``) was about 30% faster with
    fresh statistics but 3-4× slower while the trial statuses' statistics were stale
    (just after a sweep ends, before autovacuum analyzes): the planner then sorted the
    1M rows on disk instead of hashing them. This plan held up in both cases.
    """
    groups = [getattr(Trial, f) for f in fields]
    v = getattr(EpochMetric, metric)
    stmt = (
        select(*groups, EpochMetric.epoch, func.count(v), func.avg(v), func.stddev_samp(v))
        .select_from(Trial)
        .join(EpochMetric, EpochMetric.trial_id == func.coalesce(Trial.reused_from, Trial.id))
        .where(*trials, *epochs)
        .group_by(*groups, EpochMetric.epoch)
        .order_by(*groups, EpochMetric.epoch)
    )
    return [tuple(r) for r in session.execute(stmt)]


def _curves_sqlite(
    session: Session,
    fields: list[str],
    metric: str,
    trials: list[ColumnElement[bool]],
    epochs: list[ColumnElement[bool]],
) -> list[tuple[Any, ...]]:
    """SQLite groups by sorting every joined row, so the sort key is kept small: each
    trial gets its group's number (``dense_rank`` over the group fields, in their
    order) and the epoch rows are grouped by (number, epoch); the labels are joined
    back onto the 20,000-odd result rows. Variance from sums is fine for plotting;
    rounding below zero is clamped."""
    groups = [getattr(Trial, f) for f in fields]
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
    v = getattr(EpochMetric, metric)
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
