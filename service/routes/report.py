"""The sweep report page: ``GET /sweeps/{id}/report`` (self-contained HTML).

Small sweeps are built in the request; larger ones once in the background
(service.report.cache), answering ``202`` with ``Retry-After`` until the page is ready.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Engine

from service.deps import ReadSessionDep, SweepId
from service.report import build_report, load_report_data
from service.report.cache import ReportCache, cache_key, is_final
from service.schemas import ReportBuilding
from service.store import queries
from service.store.engine import session_scope

# service.schemas.ErrorPublic, spelled out as JSON: with ``"model": ErrorPublic`` FastAPI
# would document the error bodies of an HTML route as text/html.
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorPublic"}
BUILDING_SCHEMA = ReportBuilding.model_json_schema()  # inline: no JSON route uses the model

router = APIRouter(prefix="/sweeps", tags=["report"])

PAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/html": {}},
        "description": "the report page, figures embedded (header X-Idem-Report: built, "
        "cached, or stale = a running sweep's last page while its newer one is built)",
    },
    202: {
        "content": {"application/json": {"schema": BUILDING_SCHEMA}},
        "description": "the page of this large sweep is being built in the background: "
        "ask again after Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    404: {
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
        "description": "no such sweep",
    },
}


def retry_after(trials: int) -> int:
    """Seconds to wait before asking again: longer for larger sweeps (1 s per 20,000
    runs, between 1 and 10)."""
    return max(1, min(10, 1 + trials // 20000))


def build_page(engine: Engine, sweep_id: int) -> str:
    """Read the sweep in its own session and render its page (a background build)."""
    with session_scope(engine, readonly=True) as session:
        data = load_report_data(session, sweep_id)
    return build_report(data).html


@router.get("/{sweep_id}/report", response_class=HTMLResponse, responses=PAGE)
def sweep_report(sweep_id: SweepId, request: Request, session: ReadSessionDep) -> Response:
    """One HTML page answering the note's claims for this sweep (same as `idem report`).

    A plain ``def``: FastAPI runs it in the thread pool, so a small page drawn here does
    not block the event loop; a large one is drawn by a background thread and this
    request answers 202 at once (service.report.cache).
    """
    cache: ReportCache = request.app.state.report_cache
    sweep = queries.get_sweep(session, sweep_id)  # 404 for an unknown sweep
    key = cache_key(sweep)
    final = is_final(key)
    if (final or sweep.trial_count > cache.inline_trials) and (page := cache.get(key)):
        return HTMLResponse(page, headers={"X-Idem-Report": "cached"})
    if sweep.trial_count <= cache.inline_trials:
        html = build_report(load_report_data(session, sweep_id)).html
        if final:
            cache.put(key, html)
        return HTMLResponse(html, headers={"X-Idem-Report": "built"})
    engine: Engine = request.app.state.engine
    job = cache.start(key, sweep.trial_count, lambda: build_page(engine, sweep_id))
    stale = cache.latest(sweep_id)
    if stale is not None and not final:
        return HTMLResponse(stale[1], headers={"X-Idem-Report": "stale"})
    wait = retry_after(sweep.trial_count)
    body = ReportBuilding(
        sweep_id=sweep_id, trials=sweep.trial_count, elapsed_s=job.elapsed(), retry_after_s=wait
    )
    return JSONResponse(body.model_dump(), status_code=202, headers={"Retry-After": str(wait)})
