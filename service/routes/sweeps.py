"""Sweeps: submit a spec, list and read sweeps, cancel, delete, list a sweep's trials."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from service.deps import ReadSessionDep, SessionDep, SettingsDep, SweepId, WriteAccess
from service.exceptions import DuplicateIdempotencyKey
from service.faultpoints import pause_point
from service.routes.errors import errors
from service.routes.exports import (
    EngineDep,
    Format,
    TrialFilters,
    table_response,
    table_responses,
)
from service.schemas import (
    CancelAccepted,
    SkippedPair,
    SweepCreated,
    SweepDeletedPublic,
    SweepPublic,
    SweepsPublic,
    TrialPublic,
    TrialsPublic,
)
from service.spec import INT32_MAX, SweepSpec, expand_grid
from service.store import export, queries
from service.store import sweeps as store_sweeps
from service.store.query_fields import require_sweep
from service.store.status import SweepStatus

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post(
    "",
    status_code=201,
    response_model=SweepCreated,
    dependencies=[WriteAccess],
    responses=errors(401, 413, 422),
)
def submit_sweep(
    spec: SweepSpec,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="a retried POST with the same key returns the first response",
        ),
    ] = None,
) -> Any:
    """Validate the spec, expand its grid and store the sweep with its trials (queued).

    Everything is checked before anything is stored. With an ``Idempotency-Key``, the
    response is stored under the key in the same transaction as the sweep, and a retry
    gets that first response back instead of a second sweep.
    """
    # Validate first: on SQLite the first statement takes the write lock, and checking a
    # data file can take a moment that the workers' writes should not wait for.
    configs, skipped = expand_grid(spec, settings)
    if idempotency_key is not None:
        first = store_sweeps.lookup_idempotency_key(session, idempotency_key)
        if first is not None:
            return JSONResponse(first, status_code=201, headers={"Idempotent-Replayed": "true"})
    skipped_pairs = [SkippedPair(**s) for s in skipped]

    def response_for(created: Any) -> dict[str, Any]:
        return _created(created, skipped_pairs).model_dump(mode="json")

    try:
        created = store_sweeps.create_sweep(
            session,
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            priority=spec.priority,
            trials=configs,
            reuse=spec.reuse,
            idempotency_key=idempotency_key,
            response_for_key=response_for,
        )
    except DuplicateIdempotencyKey:
        # A concurrent request with the same key committed first: answer with its response.
        assert idempotency_key is not None
        first = store_sweeps.lookup_idempotency_key(session, idempotency_key)
        if first is None:
            raise
        return JSONResponse(first, status_code=201, headers={"Idempotent-Replayed": "true"})
    pause_point("submit-before-commit")  # tests only (service/faultpoints.py)
    return _created(created, skipped_pairs)


def _created(created: Any, skipped: list[SkippedPair]) -> SweepCreated:
    return SweepCreated(
        id=created.id,
        status=str(created.status),
        trial_count=created.trial_count,
        reused_trials=created.reused_trials,
        skipped=skipped,
    )


@router.get("")
def list_sweeps(
    session: ReadSessionDep,
    status: SweepStatus | None = None,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SweepsPublic:
    """Sweeps, newest first, optionally only those with ``status``."""
    records, count = queries.list_sweeps(session, status=status, offset=offset, limit=limit)
    return SweepsPublic(data=[SweepPublic.from_record(r) for r in records], count=count)


@router.get("/{sweep_id}", responses=errors(404))
def get_sweep(sweep_id: SweepId, session: ReadSessionDep) -> SweepPublic:
    """One sweep: status, trial counts by status, progress (0–1), times, Ray dashboard."""
    return SweepPublic.from_record(queries.get_sweep(session, sweep_id))


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    dependencies=[WriteAccess],
    responses=errors(401, 404, 409),
)
def cancel_sweep(sweep_id: SweepId, session: SessionDep) -> CancelAccepted:
    """Ask for the sweep to stop: a queued sweep is cancelled at once, a running one by
    its worker within a heartbeat. 409 when it has already finished."""
    status = store_sweeps.request_cancel(session, sweep_id)
    return CancelAccepted(id=sweep_id, status=str(status))


@router.delete(
    "/{sweep_id}",
    dependencies=[WriteAccess],
    responses=errors(401, 404, own={409: "not finished, or its trials are reused"}),
)
def delete_sweep(sweep_id: SweepId, session: SessionDep) -> SweepDeletedPublic:
    """Delete a finished or cancelled sweep with its trials and their epoch rows, in one
    transaction. 409 while it is queued or running (cancel it first) and when other
    sweeps reuse its trials (the message names them: delete those first)."""
    deleted = store_sweeps.delete_sweep(session, sweep_id)
    return SweepDeletedPublic(id=deleted.id, trials=deleted.trials, epochs=deleted.epochs)


@router.get(
    "/{sweep_id}/trials", response_model=TrialsPublic, responses=table_responses(TrialsPublic)
)
def list_trials(
    sweep_id: SweepId,
    session: ReadSessionDep,
    engine: EngineDep,
    filters: TrialFilters,
    after_id: Annotated[
        int | None,
        Query(
            ge=0,
            le=INT32_MAX,
            description="JSON only: trials with a larger id (the last page's next_after_id)",
        ),
    ] = None,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=INT32_MAX,
            deprecated=True,
            description="JSON only; deprecated: its cost grows with the offset (use after_id)",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10000, description="JSON only")] = 100,
    format: Format = "json",
) -> Any:
    """The sweep's runs with their final metrics (the per-run distribution), filtered by
    any config field, in id order. JSON is paged by ``after_id``/``limit``: pass each
    page's ``next_after_id`` until it is null, and the last page costs what the first
    does (``offset`` still works, deprecated). CSV and Parquet stream every matching
    trial (the config spread over its columns)."""
    require_sweep(session, sweep_id)  # 404 for an unknown sweep, not an empty page
    if format != "json":
        return table_response(engine, format, export.TRIALS, sweep_id, filters)
    records, count = queries.list_trials(
        session, sweep_id, filters=filters, offset=offset, limit=limit, after_id=after_id
    )
    return TrialsPublic(
        data=[TrialPublic.from_record(r) for r in records],
        count=count,
        next_after_id=records[-1].id if len(records) == limit else None,
    )
