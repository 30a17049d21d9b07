"""The report's answer as data: ``GET /sweeps/{id}/claims``."""

from __future__ import annotations

from fastapi import APIRouter

from service.comparison import ALPHA
from service.deps import ReadSessionDep, SweepId
from service.report import claims, load_report_data
from service.report.analysis import analyse
from service.routes.errors import errors
from service.schemas import ClaimRowPublic, ClaimsPublic

router = APIRouter(prefix="/sweeps", tags=["claims"])

ERRORS = errors(404)


@router.get("/{sweep_id}/claims", response_model=ClaimsPublic, responses=ERRORS)
def sweep_claims(sweep_id: SweepId, session: ReadSessionDep) -> ClaimsPublic:
    """Every row of the report's answer table: each of the note's claims, asked each way
    (equal_lr per learning rate, best_lr on held-out seeds, matched_step per matched pair),
    per setting and comparison, with the comparison engine's numbers, the Holm-corrected p
    over all rows and the verdict. The report page renders exactly these rows.

    A plain ``def``: FastAPI runs it in the thread pool (the tests and bootstraps take a
    while on a large sweep).
    """
    data = load_report_data(session, sweep_id)  # 404 for an unknown sweep
    rows = [ClaimRowPublic.from_row(r) for r in claims.claim_rows(analyse(data), data.threshold)]
    return ClaimsPublic(
        sweep_id=sweep_id,
        alpha=ALPHA,
        null_map_share=claims.NULL_MAP_SHARE,
        data=rows,
        count=len(rows),
    )
