"""What a run reports: one EpochRecord per epoch and a TrialResult at the end.

Torch-free plain data. :class:`Metrics` is the one declaration of the metric names: the
store's columns and records, the API's schemas and the report read them from here
(:data:`EPOCH_METRICS`, :data:`FINAL_ONLY_FIELDS`) instead of spelling them again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idemcore.metrics import EigenAnalysis


def finite_or_none(value: float | None) -> float | None:
    """Non-finite numbers become None, so records stay JSON- and SQL-safe."""
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """The metrics measured after every epoch (a run's final values are its last epoch's):
    the one declaration of their names, types and order. Non-finite values are None."""

    idempotent_error: float | None
    loss: float | None
    norm: float | None
    trace: float | None
    update_norm: float | None
    image_dim: float | None
    train_idempotent_error: float | None = None


@dataclass(frozen=True, kw_only=True)
class EpochNumber:
    """Which epoch a record is (1-based); a base of its own so that it comes first."""

    epoch: int


@dataclass(frozen=True, kw_only=True)
class EpochRecord(Metrics, EpochNumber):
    """Metrics after one epoch: the epoch, the metrics, the seconds it took (fields in
    that order: dataclass fields follow the reversed MRO)."""

    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class TrialResult(Metrics):
    """The final state of a run: the last epoch's metrics and the run's own numbers."""

    epochs_to_threshold: int | None
    epochs_run: int
    diverged: bool
    wall_seconds: float
    eigenvalues: list[tuple[float, float]] | None = None
    eig_near_zero: int | None = None
    eig_near_one: int | None = None
    wb_norm: float | None = None

    @classmethod
    def from_run(
        cls,
        last: EpochRecord | None,
        *,
        epochs_to_threshold: int | None,
        epochs_run: int,
        diverged: bool,
        wall_seconds: float,
        eig: EigenAnalysis | None,
    ) -> TrialResult:
        """The final result of a run from its last epoch record and eigen-analysis
        (shared by ``Training`` and ``PackedTraining``, so both report alike)."""
        return cls(
            **{name: getattr(last, name) if last else None for name in EPOCH_METRICS},
            epochs_to_threshold=epochs_to_threshold,
            epochs_run=epochs_run,
            diverged=diverged,
            wall_seconds=wall_seconds,
            eigenvalues=eig.eigenvalues if eig else None,
            eig_near_zero=eig.near_zero if eig else None,
            eig_near_one=eig.near_one if eig else None,
            wb_norm=eig.wb_norm if eig else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.eigenvalues is not None:
            out["eigenvalues"] = [list(v) for v in self.eigenvalues]
        return out


# The per-epoch metrics in declaration order; and the final result's fields beyond them.
EPOCH_METRICS: tuple[str, ...] = tuple(f.name for f in fields(Metrics))
FINAL_ONLY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(TrialResult) if f.name not in EPOCH_METRICS
)
