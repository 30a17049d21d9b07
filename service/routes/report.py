"""The sweep report page: ``GET /sweeps/{id}/report`` (self-contained HTML)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service.deps import ReadSessionDep
from service.report import build_report, load_report_data
from service.report.cache import ReportCache, cache_key
from service.store import queries

# service.schemas.ErrorPublic, spelled out as JSON: with ``"model": ErrorPublic`` FastAPI
# would document the error bodies of an HTML route as text/html.
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorPublic"}

router = APIRouter(prefix="/sweeps", tags=["report"])

PAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/html": {}},
        "description": "the report page, figures embedded; a finished sweep's page is "
        "built once and then served from memory (header X-Idem-Report: cached)",
    },
    404: {
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
        "description": "no such sweep",
    },
}


@router.get("/{sweep_id}/report", response_class=HTMLResponse, responses=PAGE)
def sweep_report(sweep_id: int, request: Request, session: ReadSessionDep) -> HTMLResponse:
    """One HTML page answering the note's claims for this sweep (same as `idem report`).

    A plain ``def``: FastAPI runs it in the thread pool, so drawing the figures does not
    block the event loop. A finished sweep's page is built once (service.report.cache).
    """
    cache: ReportCache = request.app.state.report_cache
    key = cache_key(queries.get_sweep(session, sweep_id))  # 404 for an unknown sweep
    if key is not None and (page := cache.get(key)) is not None:
        return HTMLResponse(page, headers={"X-Idem-Report": "cached"})
    report = build_report(load_report_data(session, sweep_id))
    if key is not None:
        cache.put(key, report.html)
    return HTMLResponse(report.html, headers={"X-Idem-Report": "built"})
