"""Read side of the store for the API and the report: sweeps, trials and epoch rows.

Listings and single objects, returned as the frozen records of
:mod:`service.store.records`; whole-sweep reads for the report and the exports. The
aggregates live in :mod:`service.store.results` (summary, paired comparison) and
:mod:`service.store.curves` (per-epoch curves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from service.exceptions import InvalidQuery, NotFound
from service.store.convert import sweep_record, trial_record
from service.store.models import EPOCH_COLUMNS, EpochMetric, Sweep, Trial
from service.store.query_fields import check_fields, require_sweep
from service.store.records import EpochRow, SweepRecord, TrialRecord
from service.store.status import SweepStatus, TrialStatus

# Rows fetched at a time by the whole-sweep reads (sweep_trials, sweep_epochs).
READ_BATCH = 5000

# Trials that may have epoch rows (a pending trial has none; a cancelled one is not shown).
CURVE_STATUSES: tuple[TrialStatus, ...] = (
    TrialStatus.running,
    TrialStatus.succeeded,
    TrialStatus.diverged,
    TrialStatus.failed,
)


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
            check_fields([name])
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
    after_id: int | None = None,
) -> tuple[list[TrialRecord], int]:
    """A page of a sweep's trials (by id) and the total matching ``filters``.

    ``filters`` maps a TRIAL_FIELDS name or ``status`` to a value or a list of values.
    ``after_id`` pages by keyset (trials with a larger id): every page costs what the
    first does, where an ``offset`` makes the database walk past every skipped row.
    """
    require_sweep(session, sweep_id)
    conditions = trial_conditions(sweep_id, filters)
    total = int(session.scalar(select(func.count()).select_from(Trial).where(*conditions)) or 0)
    page = [Trial.id > after_id] if after_id is not None else []
    rows = session.scalars(
        select(Trial).where(*conditions, *page).order_by(Trial.id).offset(offset).limit(limit)
    )
    return [trial_record(t) for t in rows], total


def sweep_trials(session: Session, sweep_id: int, *, with_result: bool = True) -> list[TrialRecord]:
    """Every trial of a sweep in id order: one query, whatever the sweep's size.

    Read as plain rows of the trial table's columns, not ORM objects: at 100,000 trials
    the ORM's per-object state doubled the time and the memory of this read (most of the
    report's peak). ``with_result=False`` leaves the ``result`` JSON out (eigenvalues and
    the like, which the report does not show; parsing it was another half of the read):
    the records then carry ``result=None``. The rows stream in batches of
    :data:`READ_BATCH` (a server-side cursor on PostgreSQL), so only the records are
    held, not every row as well (100,000 trials on PostgreSQL: 818 -> 556 MB).
    """
    require_sweep(session, sweep_id)
    columns = [c for c in Trial.__table__.columns if with_result or c.name != "result"]
    stmt = select(*columns).where(Trial.sweep_id == sweep_id).order_by(Trial.id)
    rows = session.execute(stmt, execution_options={"yield_per": READ_BATCH})
    names = tuple(rows.keys())  # once: Row._asdict asks for them per row (a third of the time)
    return [trial_record(dict(zip(names, r, strict=True))) for r in rows]


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
    through ``reused_from`` and filed under the reusing trial's id. The rows stream in
    batches of :data:`READ_BATCH` (up to a report's CURVE_ROW_BUDGET of them).
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
    ordered = query.order_by(Trial.id, EpochMetric.epoch)
    for r in session.execute(ordered, execution_options={"yield_per": READ_BATCH}):
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
