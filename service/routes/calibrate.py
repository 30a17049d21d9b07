"""Step calibration: ``POST /calibrate`` measures one update per (algorithm, learning rate,
seed) and answers synchronously (the request's size is bounded; see service.calibration).
"""

from __future__ import annotations

from fastapi import APIRouter

from service.calibration import CalibrateRequest, CalibrationPublic, check_limits, run_calibration
from service.deps import SettingsDep, WriteAccess
from service.routes.errors import errors

router = APIRouter(prefix="/calibrate", tags=["calibrate"])

ERRORS = errors(401, 413, 422)


@router.post("", response_model=CalibrationPublic, dependencies=[WriteAccess], responses=ERRORS)
def calibrate(request: CalibrateRequest, settings: SettingsDep) -> CalibrationPublic:
    """First-step update norms per (algorithm, learning rate) over the seeds, the step
    ratios at equal learning rate, the pairs whose steps match within a factor of 2 and,
    with ``suggest``, a per-algorithm ``learning_rates`` mapping whose steps match within
    1.25 (measured again). Runs in the request (a worker thread): B4 with 2 algorithms,
    3 rates and 3 seeds takes seconds on a CPU; the size is bounded (422 beyond)."""
    check_limits(request, settings)
    return run_calibration(request)
