"""Trial state: which trials are left, running, requeued or ended, and final results.

Every change takes its source states from :mod:`service.store.status` (one row:
``check_transition``; many rows: ``sources`` as the ``WHERE status IN (...)``), so a
finished trial is never reopened, not even by a late duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from idemcore.config import TrialConfig
from idemcore.provenance import Provenance
from service.exceptions import InvalidTransition, NotFound
from service.store.epochs import append_epochs
from service.store.models import FINAL_METRIC_COLUMNS, EpochMetric, Trial, utcnow
from service.store.records import TrialTodo
from service.store.status import TRIAL_FINAL, TrialStatus, check_transition, sources

if TYPE_CHECKING:  # idemcore.train imports torch; the claim path must not.
    from idemcore.train import EpochRecord, TrialResult


def unfinished_trials(session: Session, sweep_id: int) -> list[TrialTodo]:
    """The sweep's pending or running trials, oldest first; finished ones never appear."""
    rows = session.execute(
        select(Trial.id, Trial.config, Trial.attempts)
        .where(Trial.sweep_id == sweep_id, Trial.status.not_in(list(TRIAL_FINAL)))
        .order_by(Trial.id)
    )
    return [
        TrialTodo(id=r.id, config=TrialConfig.from_dict(r.config), attempts=r.attempts)
        for r in rows
    ]


def mark_trials_running(
    session: Session, trial_ids: Iterable[int], node_ip: str | None = None
) -> int:
    """Pending/running trials become running with ``attempts + 1``; returns how many.

    Finished trials among ``trial_ids`` are left alone (a late duplicate never reopens
    them).
    """
    ids = list(trial_ids)
    if not ids:
        return 0
    result = session.execute(
        update(Trial)
        .where(Trial.id.in_(ids), Trial.status.in_(sources(TrialStatus.running)))
        .values(
            status=TrialStatus.running,
            attempts=Trial.attempts + 1,
            started_at=utcnow(),
            node_ip=node_ip,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def requeue_running_trials(session: Session, sweep_ids: Sequence[int]) -> None:
    """The running trials of these sweeps go back to pending (their sweep was requeued)."""
    if not sweep_ids:
        return
    from_ = sources(TrialStatus.pending, among=[TrialStatus.running])
    session.execute(
        update(Trial)
        .where(Trial.sweep_id.in_(list(sweep_ids)), Trial.status.in_(from_))
        .values(status=TrialStatus.pending)
        .execution_options(synchronize_session=False)
    )


def end_unfinished_trials(
    session: Session, sweep_id: int, status: TrialStatus, error: str | None = None
) -> int:
    """Every pending or running trial of the sweep ends in ``status`` (final), with
    ``error`` if given; returns how many."""
    status = TrialStatus(status)
    if status not in TRIAL_FINAL:
        raise InvalidTransition(f"unfinished trials can only end; got {status.value}")
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if error is not None:
        values["error"] = error
    result = session.execute(
        update(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.status.in_(sources(status)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def finish_trial(
    session: Session,
    trial_id: int,
    status: TrialStatus,
    result: TrialResult | None,
    error: str | None,
    records: Sequence[EpochRecord] = (),
    *,
    repeat_ok: bool = False,
    provenance: Mapping[str, Any] | None = None,
    reuse_key: str | None = None,
) -> bool:
    """Write the trial's last epoch rows and its final state in the caller's transaction.

    ``provenance`` (``idemcore.provenance.Provenance.to_dict()``, collected in the trial)
    goes to the trial's provenance columns with the final state, and ``reuse_key`` (the
    config's ``config_hash`` computed in the trial) replaces the one computed at submission,
    so the result is found only under the key of the code that computed it.

    ``status`` must be final; a trial that is already final raises InvalidTransition,
    except that with ``repeat_ok`` a trial already in exactly ``status`` is left as it is
    and False is returned: the retry of a transaction whose commit went through but whose
    reply was lost (the worker retries store writes on connection errors). Returns True
    when it wrote.
    """
    status = TrialStatus(status)
    if status not in TRIAL_FINAL:
        raise InvalidTransition(f"finish_trial needs a final status, got {status.value}")
    current = session.scalars(
        select(Trial.status).where(Trial.id == trial_id).with_for_update()
    ).one_or_none()
    if current is None:
        raise NotFound(f"trial {trial_id} not found")
    if repeat_ok and TrialStatus(current) == status:
        return False
    check_transition(TrialStatus(current), status)
    append_epochs(session, trial_id, records)
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if result is not None:
        # A rerun that stopped earlier than an earlier attempt (a GPU run that diverged
        # sooner: only deterministic CPU runs are guaranteed to repeat) leaves that
        # attempt's later rows behind; the final state keeps exactly 1..epochs_run.
        session.execute(
            delete(EpochMetric).where(
                EpochMetric.trial_id == trial_id, EpochMetric.epoch > result.epochs_run
            )
        )
        values.update({c: getattr(result, c) for c in FINAL_METRIC_COLUMNS})
        values["result"] = result.to_dict()
    if provenance is not None:
        values.update(Provenance(**provenance).to_dict())
    if reuse_key is not None:
        values["config_hash"] = reuse_key
    session.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.status.in_(sources(status)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return True
