"""What a run reports: one EpochRecord per epoch and a TrialResult at the end.

Torch-free plain data. These dataclasses are the one declaration of the metric names:
the store's columns, the API's schemas and the report read them from here
(:data:`EPOCH_METRICS`, :data:`FINAL_METRICS`) instead of spelling them again.
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


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch (1-based). Non-finite values are None."""

    epoch: int
    idempotent_error: float | None
    loss: float | None
    norm: float | None
    trace: float | None
    update_norm: float | None
    image_dim: float | None
    train_idempotent_error: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrialResult:
    """The final state of a run."""

    idempotent_error: float | None
    train_idempotent_error: float | None
    loss: float | None
    norm: float | None
    trace: float | None
    update_norm: float | None
    image_dim: float | None
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
            idempotent_error=last.idempotent_error if last else None,
            train_idempotent_error=last.train_idempotent_error if last else None,
            loss=last.loss if last else None,
            norm=last.norm if last else None,
            trace=last.trace if last else None,
            update_norm=last.update_norm if last else None,
            image_dim=last.image_dim if last else None,
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


# The per-epoch metrics (every EpochRecord field but its epoch number and timing), in
# declaration order; and the final result's fields beyond them.
EPOCH_METRICS: tuple[str, ...] = tuple(
    f.name for f in fields(EpochRecord) if f.name not in ("epoch", "seconds")
)
FINAL_ONLY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(TrialResult) if f.name not in EPOCH_METRICS
)
