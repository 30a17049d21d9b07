"""Trials: one run with its final analysis, and its per-epoch curve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import ReadSessionDep, TrialId
from service.routes.errors import errors
from service.schemas import EpochPublic, EpochsPublic, TrialDetail
from service.store import queries

router = APIRouter(prefix="/trials", tags=["trials"])

NOT_FOUND = errors(own={404: "no such trial"})


@router.get("/{trial_id}", response_model=TrialDetail, responses=NOT_FOUND)
def get_trial(trial_id: TrialId, session: ReadSessionDep) -> TrialDetail:
    """One run: config, status, final metrics and the full result (eigenvalues, ...)."""
    return TrialDetail.from_record(queries.get_trial(session, trial_id))


@router.get("/{trial_id}/epochs", response_model=EpochsPublic, responses=NOT_FOUND)
def get_epochs(
    trial_id: TrialId,
    session: ReadSessionDep,
    stride: Annotated[int, Query(ge=1, le=100000, description="every k-th epoch")] = 1,
) -> EpochsPublic:
    """The run's curve (a reused trial shows the curve of the run it took over)."""
    trial = queries.get_trial(session, trial_id)  # 404 for an unknown trial
    spec = queries.get_sweep(session, trial.sweep_id).spec
    rows = queries.trial_epochs(session, trial_id, stride=stride)
    return EpochsPublic(
        trial_id=trial_id,
        stride=stride,
        record_every=int(spec.get("record_every") or 1),
        data=[EpochPublic.from_record(r) for r in rows],
        count=len(rows),
    )
