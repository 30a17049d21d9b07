"""What a report is made of: the sweep, its trials and their epoch curves (frozen records).

``load_report_data`` is the only function here that touches the database; everything
downstream is a pure function of :class:`ReportData`, so the CLI and the API route build
the same page from the same records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sqlalchemy.orm import Session

from service.store import queries
from service.store.records import EpochRow, SweepRecord, TrialRecord

MAX_CURVE_POINTS = 200  # epochs read per trial curve (every k-th epoch, plus the last)
CURVE_ROW_BUDGET = 1_000_000  # epoch rows read for a whole report (bounds its memory)


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows: the sweep, all its trials, each trial's epoch curve."""

    sweep: SweepRecord
    trials: tuple[TrialRecord, ...]
    epochs: Mapping[int, tuple[EpochRow, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def threshold(self) -> float:
        """The idempotent error that counts as reached (from the spec)."""
        return float(self.sweep.spec.get("threshold", 1e-3))


def curve_stride(epochs: int, max_points: int = MAX_CURVE_POINTS) -> int:
    """Read every k-th epoch so a curve has at most about ``max_points`` points."""
    return max(1, -(-epochs // max_points))


def curve_points(trials: int) -> int:
    """Points per curve so that all curves together stay within ``CURVE_ROW_BUDGET``
    rows (200 for up to 5,000 trials, 10 for 100,000; never fewer than 2)."""
    return max(2, min(MAX_CURVE_POINTS, CURVE_ROW_BUDGET // max(1, trials)))


def load_report_data(session: Session, sweep_id: int) -> ReportData:
    """Read sweep ``sweep_id`` with every trial and its (strided) epoch curve.

    Three set-based queries whatever the sweep's size (the sweep, its trials, the epoch
    rows of all of them), never one per trial. Raises ``service.exceptions.NotFound``
    for an unknown sweep.
    """
    sweep = queries.get_sweep(session, sweep_id)
    trials = queries.sweep_trials(session, sweep_id, with_result=False)  # not shown
    stride = curve_stride(int(sweep.spec.get("epochs", 1)), curve_points(len(trials)))
    rows = queries.sweep_epochs(session, sweep_id, stride=stride)
    epochs = {tid: tuple(r) for tid, r in rows.items()}
    return ReportData(sweep=sweep, trials=tuple(trials), epochs=MappingProxyType(epochs))
