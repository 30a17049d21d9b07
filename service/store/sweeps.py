"""Creating sweeps (with result reuse and Idempotency-Key replay), cancelling and deleting
them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from idemcore.config import TrialConfig
from service.exceptions import DuplicateIdempotencyKey, NotFound, SweepFinished, SweepInUse
from service.store.convert import RESULT_COLUMNS, canonical_hash, trial_row
from service.store.models import EpochMetric, IdempotencyKey, Sweep, Trial, utcnow
from service.store.records import SweepCreated, SweepDeleted
from service.store.status import SWEEP_FINAL, SweepStatus, TrialStatus, check_transition
from service.store.trials import end_unfinished_trials

_IN_CHUNK = 500  # bound parameters per IN (...) lookup


def locked_sweep(session: Session, sweep_id: int) -> Sweep:
    """The sweep row, locked for the rest of the transaction; NotFound if absent."""
    sweep = session.scalars(
        select(Sweep).where(Sweep.id == sweep_id).with_for_update()
    ).one_or_none()
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def _reusable(session: Session, hashes: Sequence[str]) -> dict[str, Trial]:
    """For each config hash, a succeeded trial that owns its epoch rows (lowest id)."""
    found: dict[str, Trial] = {}
    unique = sorted(set(hashes))
    for i in range(0, len(unique), _IN_CHUNK):
        chunk = unique[i : i + _IN_CHUNK]
        rows = session.scalars(
            select(Trial)
            .where(Trial.config_hash.in_(chunk), Trial.status == TrialStatus.succeeded)
            .order_by(Trial.id)
        )
        for t in rows:
            found.setdefault(t.config_hash, t)
    return found


def create_sweep(
    session: Session,
    *,
    name: str,
    spec: dict[str, Any],
    priority: int = 0,
    trials: Sequence[TrialConfig],
    reuse: bool = True,
    idempotency_key: str | None = None,
    response_for_key: Callable[[SweepCreated], dict[str, Any]] | None = None,
) -> SweepCreated:
    """Store a sweep and its trials in the caller's transaction.

    A trial whose ``config_hash`` already succeeded anywhere in the store is created
    succeeded, with the metrics copied and ``reused_from`` pointing at the trial that
    holds the epoch rows; if every trial is reused the sweep is created succeeded.
    ``reuse=False`` (a spec's ``reuse: false``) skips the lookup: every trial runs anew.
    With ``idempotency_key``, the key is stored in the same transaction with
    ``response_for_key(created)`` as its response; a key already stored raises
    DuplicateIdempotencyKey (look it up first with :func:`lookup_idempotency_key`).
    """
    now = utcnow()
    if idempotency_key is not None:
        try:
            with session.begin_nested():
                session.add(IdempotencyKey(key=idempotency_key, created_at=now))
        except IntegrityError as exc:
            raise DuplicateIdempotencyKey(
                f"Idempotency-Key {idempotency_key!r} was already used"
            ) from exc

    sweep = Sweep(
        name=name,
        spec=spec,
        spec_hash=canonical_hash(spec),
        status=SweepStatus.queued,
        priority=priority,
        created_at=now,
        cancel_requested=False,
    )
    session.add(sweep)
    session.flush()

    rows = [trial_row(sweep.id, config) for config in trials]
    reusable = _reusable(session, [r["config_hash"] for r in rows]) if reuse else {}
    reused = 0
    for row in rows:
        source = reusable.get(row["config_hash"])
        if source is None:
            continue
        reused += 1
        row.update({col: getattr(source, col) for col in RESULT_COLUMNS})
        row["status"] = TrialStatus.succeeded
        row["reused_from"] = source.reused_from or source.id
        row["started_at"] = now
        row["finished_at"] = now
    if rows:
        # Rows without reuse lack the reuse keys; give every row the same keys so the
        # whole list goes out as one executemany.
        keys = set().union(*(r.keys() for r in rows))
        session.execute(insert(Trial), [{k: r.get(k) for k in keys} for r in rows])

    status = SweepStatus.queued
    if reused == len(rows):
        status = SweepStatus.succeeded
        check_transition(SweepStatus.queued, status)
        sweep.status = status
        sweep.started_at = now
        sweep.finished_at = now
    created = SweepCreated(id=sweep.id, status=status, trial_count=len(rows), reused_trials=reused)
    if idempotency_key is not None:
        response = response_for_key(created) if response_for_key else _default_response(created)
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == idempotency_key)
            .values(sweep_id=sweep.id, response=response)
        )
    session.flush()
    return created


def _default_response(created: SweepCreated) -> dict[str, Any]:
    return {
        "id": created.id,
        "status": created.status.value,
        "trial_count": created.trial_count,
        "reused_trials": created.reused_trials,
    }


def lookup_idempotency_key(session: Session, key: str) -> dict[str, Any] | None:
    """The response stored under an Idempotency-Key, or None if the key is new."""
    row = session.get(IdempotencyKey, key)
    if row is None:
        return None
    return dict(row.response) if row.response is not None else {}


def request_cancel(session: Session, sweep_id: int) -> SweepStatus:
    """Ask for a sweep to stop; returns its status afterwards.

    A queued sweep is cancelled at once (its unfinished trials too). A running sweep
    gets ``cancel_requested``; its worker sees it at the next heartbeat and ends it.
    Cancelling a finished sweep raises SweepFinished; an unknown id raises NotFound.
    """
    sweep = locked_sweep(session, sweep_id)
    status = SweepStatus(sweep.status)
    if status in SWEEP_FINAL:
        raise SweepFinished(f"sweep {sweep_id} already finished ({status.value})")
    sweep.cancel_requested = True
    if status == SweepStatus.queued:
        check_transition(status, SweepStatus.cancelled)
        sweep.status = SweepStatus.cancelled
        sweep.finished_at = utcnow()
        end_unfinished_trials(session, sweep_id, TrialStatus.cancelled)
        return SweepStatus.cancelled
    return status


def delete_sweep(session: Session, sweep_id: int) -> SweepDeleted:
    """Delete a finished (succeeded, failed or cancelled) sweep with its trials, their
    epoch rows and its Idempotency-Keys, in the caller's one transaction.

    Refused with SweepInUse (nothing deleted) while the sweep is queued or running, and
    when trials of other sweeps reuse its trials: a reused trial has no rows of its own
    and reads its result and curve through ``reused_from``, so deleting the original
    would empty theirs. The message names those sweeps (delete them first).
    """
    sweep = locked_sweep(session, sweep_id)
    status = SweepStatus(sweep.status)
    if status not in SWEEP_FINAL:
        raise SweepInUse(f"sweep {sweep_id} is {status.value}; cancel it first")
    own = select(Trial.id).where(Trial.sweep_id == sweep_id)
    # Lock the sweep's trials (PostgreSQL): a concurrent submit reusing one of them
    # waits for this transaction instead of pointing at a deleted row.
    session.execute(own.with_for_update()).all()
    reuser = aliased(Trial)
    dependents = session.scalars(
        select(reuser.sweep_id)
        .where(reuser.reused_from.in_(own), reuser.sweep_id != sweep_id)
        .distinct()
        .order_by(reuser.sweep_id)
    ).all()
    if dependents:
        names = ", ".join(str(i) for i in dependents)
        raise SweepInUse(
            f"sweep {sweep_id} cannot be deleted: sweep(s) {names} reuse its trials; "
            "delete those first"
        )
    epochs = session.execute(
        delete(EpochMetric)
        .where(EpochMetric.trial_id.in_(own))
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    # Its own trials that reuse each other point at rows deleted in the same statement.
    trials = session.execute(
        delete(Trial).where(Trial.sweep_id == sweep_id).execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.sweep_id == sweep_id))
    session.execute(delete(Sweep).where(Sweep.id == sweep_id))
    return SweepDeleted(id=sweep_id, trials=int(trials), epochs=int(epochs))
