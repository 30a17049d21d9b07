"""Result tables as data: a sweep's epoch rows (and, through ``table_response``, its
trials) as JSON, CSV or Parquet, streamed.

The request is checked first (404 for an unknown sweep, 422 for a bad filter) on the
request's session; the rows are then read on a session of their own inside the
response's iterator, through a server-side cursor, so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from service.deps import ReadSessionDep, SweepId, get_engine
from service.routes.errors import Responses, errors
from service.schemas import SweepEpochsPublic
from service.spec import INT32_MAX
from service.store import export
from service.store.engine import session_scope
from service.store.query_fields import require_sweep
from service.store.status import TrialStatus
from service.tables import MEDIA_TYPES, TableFormat, encode

router = APIRouter(prefix="/sweeps", tags=["results"])

Format = Annotated[
    TableFormat,
    Query(description="json, csv or parquet (csv and parquet are every matching row)"),
]
EngineDep = Annotated[Engine, Depends(get_engine)]


def table_responses(model: type[BaseModel]) -> Responses:
    """OpenAPI for a table route: ``model`` as JSON, or CSV / Parquet bytes; 404, 422."""
    return {
        200: {
            "model": model,
            "content": {MEDIA_TYPES["csv"].split(";")[0]: {}, MEDIA_TYPES["parquet"]: {}},
            "description": "the rows as JSON, CSV (header line) or Parquet",
        },
        **errors(404, own={422: "invalid filter or format"}),
    }


def trial_filters(
    status: TrialStatus | None = None,
    architecture: str | None = None,
    algorithm: str | None = None,
    learning_rate: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    samples: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    batch_size: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    seed: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
    data: str | None = None,
    init: str | None = None,
    optimizer: str | None = None,
) -> dict[str, Any]:
    """The trial filters given (status or a config field, each equal to one value)."""
    given = {
        "status": status,
        "architecture": architecture,
        "algorithm": algorithm,
        "learning_rate": learning_rate,
        "samples": samples,
        "batch_size": batch_size,
        "seed": seed,
        "data": data,
        "init": init,
        "optimizer": optimizer,
    }
    return {k: v for k, v in given.items() if v is not None}


TrialFilters = Annotated[dict[str, Any], Depends(trial_filters)]


def table_response(
    engine: Engine,
    fmt: TableFormat,
    table: export.Table,
    sweep_id: int,
    filters: Mapping[str, Any],
    head: Mapping[str, Any] | None = None,
) -> StreamingResponse:
    """Stream the sweep's ``table`` rows matching ``filters`` encoded as ``fmt`` (JSON
    with ``head`` before its rows), read on a session of its own."""

    def body() -> Iterator[bytes]:
        with session_scope(engine, readonly=True) as session:
            rows = table.stream(session, sweep_id, filters)
            yield from encode(fmt, table.columns(), rows, dict(head or {}))

    headers = {}
    if fmt != "json":
        filename = f"sweep-{sweep_id}-{table.name}.{fmt}"
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(body(), media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/{sweep_id}/epochs",
    response_model=SweepEpochsPublic,
    responses=table_responses(SweepEpochsPublic),
)
def sweep_epochs(
    sweep_id: SweepId,
    session: ReadSessionDep,
    engine: EngineDep,
    filters: TrialFilters,
    format: Format = "json",
) -> Any:
    """Every epoch row of the sweep's trials (matching the filters), each with its trial
    id and config columns, ordered by trial and epoch; streamed. A reused trial shows the
    rows of the run it took over."""
    require_sweep(session, sweep_id)  # 404 before the stream starts
    return table_response(engine, format, export.EPOCHS, sweep_id, filters, {"sweep_id": sweep_id})
