"""A claimed sweep's lease: heartbeats, requeue when it stalls, and how the holder ends it.

The worker that claimed a sweep (:func:`service.store.claim.claim_sweep`) extends its
lease with :func:`sweep_heartbeat`; a sweep whose lease ran out goes back to the queue
(:func:`requeue_stalled`). The holder ends it with :func:`finish_sweep`,
:func:`fail_sweep` or :func:`release_sweep`. Every status change is checked against
:mod:`service.store.status`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.exceptions import LeaseLost, NotFound
from service.store.models import Sweep, utcnow
from service.store.status import SweepStatus, TrialStatus, check_transition, sources
from service.store.sweeps import locked_sweep
from service.store.trials import (
    end_unfinished_trials,
    requeue_running_trials,
    unfinished_trials,
)


def held_sweep(session: Session, sweep_id: int, worker_id: str) -> Sweep:
    """The sweep row, locked, if ``worker_id`` still holds its lease; else LeaseLost."""
    sweep = locked_sweep(session, sweep_id)
    if sweep.status != SweepStatus.running or sweep.claimed_by != worker_id:
        raise LeaseLost(
            f"worker {worker_id} no longer holds sweep {sweep_id} "
            f"(status {SweepStatus(sweep.status).value}, claimed by {sweep.claimed_by})"
        )
    return sweep


def _set_status(sweep: Sweep, new: SweepStatus) -> None:
    check_transition(SweepStatus(sweep.status), new)
    sweep.status = new


def sweep_heartbeat(session: Session, sweep_id: int, worker_id: str) -> bool:
    """Extend the worker's lease on the sweep; returns ``cancel_requested``.

    Raises LeaseLost if the sweep was requeued or claimed by someone else meanwhile.
    """
    stmt = (
        update(Sweep)
        .where(
            Sweep.id == sweep_id,
            Sweep.claimed_by == worker_id,
            Sweep.status == SweepStatus.running,
        )
        .values(heartbeat_at=utcnow())
        .returning(Sweep.cancel_requested)
    )
    row = session.execute(stmt).first()
    if row is None:
        held_sweep(session, sweep_id, worker_id)  # raises the precise error
        raise LeaseLost(f"worker {worker_id} no longer holds sweep {sweep_id}")
    return bool(row[0])


def requeue_stalled(session: Session, lease_timeout_s: float) -> list[int]:
    """Sweeps running with a heartbeat older than the lease go back to queued.

    Their finished trials stay finished; their running trials become pending again.
    A stalled sweep whose cancel was requested ends cancelled instead. Two bulk
    statements, each taking its source states from the transition table.
    """
    cutoff = utcnow() - timedelta(seconds=lease_timeout_s)
    running = [SweepStatus.running]  # only a running sweep has a lease to run out
    stalled = Sweep.heartbeat_at < cutoff
    cancelled = session.execute(
        update(Sweep)
        .where(
            Sweep.status.in_(sources(SweepStatus.cancelled, among=running)),
            stalled,
            Sweep.cancel_requested.is_(True),
        )
        .values(status=SweepStatus.cancelled, claimed_by=None, finished_at=utcnow())
        .returning(Sweep.id)
    ).scalars()
    for sweep_id in list(cancelled):
        end_unfinished_trials(session, sweep_id, TrialStatus.cancelled)
    ids = list(
        session.execute(
            update(Sweep)
            .where(Sweep.status.in_(sources(SweepStatus.queued, among=running)), stalled)
            .values(status=SweepStatus.queued, claimed_by=None, heartbeat_at=None)
            .returning(Sweep.id)
        ).scalars()
    )
    requeue_running_trials(session, ids)
    return sorted(ids)


def finish_sweep(session: Session, sweep_id: int, worker_id: str) -> SweepStatus:
    """End the worker's sweep: cancelled if cancel was requested, else succeeded.

    On cancel the unfinished trials end cancelled. Without a cancel, trials that are
    still unfinished mean the sweep failed (its error says how many).
    """
    sweep = held_sweep(session, sweep_id, worker_id)
    if sweep.cancel_requested:
        new = SweepStatus.cancelled
        end_unfinished_trials(session, sweep_id, TrialStatus.cancelled)
    else:
        left = len(unfinished_trials(session, sweep_id))
        new = SweepStatus.succeeded
        if left:
            new = SweepStatus.failed
            sweep.error = f"{left} trials did not finish"
            end_unfinished_trials(session, sweep_id, TrialStatus.failed, sweep.error)
    _set_status(sweep, new)
    sweep.finished_at = utcnow()
    session.flush()
    return new


def fail_sweep(session: Session, sweep_id: int, error: str, worker_id: str | None = None) -> None:
    """Mark a sweep failed with ``error``; its unfinished trials end failed too.

    With ``worker_id`` (a Ray Job's driver failing on behalf of the worker that submitted
    it) only while that worker still holds the lease; else LeaseLost.
    """
    if worker_id is None:
        sweep = locked_sweep(session, sweep_id)
    else:
        sweep = held_sweep(session, sweep_id, worker_id)
    _set_status(sweep, SweepStatus.failed)
    sweep.error = error
    sweep.finished_at = utcnow()
    end_unfinished_trials(session, sweep_id, TrialStatus.failed, f"sweep failed: {error}")
    session.flush()


def release_sweep(session: Session, sweep_id: int, worker_id: str) -> None:
    """Give the sweep back to the queue (graceful shutdown); running trials → pending."""
    sweep = held_sweep(session, sweep_id, worker_id)
    _set_status(sweep, SweepStatus.queued)
    sweep.claimed_by = None
    sweep.heartbeat_at = None
    requeue_running_trials(session, [sweep_id])
    session.flush()


def lease_holder(session: Session, sweep_id: int) -> str | None:
    """The worker holding the sweep's lease (None unless it is running). Read only: a
    sweep's Ray Job driver checks it and stops when its worker is no longer the holder,
    without extending the lease itself (a dead worker's lease must run out)."""
    row = session.execute(
        select(Sweep.status, Sweep.claimed_by).where(Sweep.id == sweep_id)
    ).first()
    if row is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return row.claimed_by if SweepStatus(row.status) == SweepStatus.running else None


def set_ray_info(
    session: Session,
    sweep_id: int,
    experiment: str,
    dashboard_url: str | None,
    job_id: str | None = None,
) -> None:
    """Record the Ray Tune experiment name, dashboard URL (the sweep's Ray Job page when it
    runs as a job) and the job's submission id of a running sweep."""
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(ray_experiment=experiment, ray_dashboard_url=dashboard_url, ray_job_id=job_id)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"sweep {sweep_id} not found")
