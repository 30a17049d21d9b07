"""What kind of solution a run found: null map, identity, a real projection, or divergence.

For an idempotent map the Jacobian at a point of its image is a projection onto the
image's tangent space, so its trace (``image_dim``) counts the image's dimensions: 0 for
the null (or constant) map, d for the identity, in between for a real projection. Both
ends are trivially idempotent: a tiny idempotent error from the null map is not a success.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.store.records import TrialRecord

DIM_TOLERANCE = 0.5  # image_dim within this of 0 (or d) counts as the null map (identity)


class Kind(StrEnum):
    """The kind of solution at the end of a run."""

    null = "null map"
    identity = "identity"
    projection = "projection"
    unconverged = "not idempotent"
    diverged = "diverged"
    unfinished = "unfinished"


KIND_ORDER: tuple[Kind, ...] = (
    Kind.projection,
    Kind.null,
    Kind.identity,
    Kind.unconverged,
    Kind.diverged,
    Kind.unfinished,
)


def input_dim(config: Mapping[str, Any]) -> int:
    """The network's dimension d from a stored trial config (named or custom layers)."""
    arch = config["architecture"]
    if isinstance(arch, str):
        from idemcore.architectures import ARCHITECTURES

        return ARCHITECTURES[arch][0].in_features
    return int(arch[0]["in_features"])


def classify(trial: TrialRecord, threshold: float) -> Kind:
    """The kind of solution ``trial`` ended at: its final ``image_dim`` against d, once
    its idempotent error is below ``threshold`` (above it, the map is not idempotent yet
    and its Jacobian trace does not count dimensions)."""
    if trial.status == "diverged":
        return Kind.diverged
    if trial.status != "succeeded" or trial.image_dim is None:
        return Kind.unfinished
    if trial.idempotent_error is None or trial.idempotent_error >= threshold:
        return Kind.unconverged
    d = input_dim(trial.config)
    if trial.image_dim <= DIM_TOLERANCE:
        return Kind.null
    if trial.image_dim >= d - DIM_TOLERANCE:
        return Kind.identity
    return Kind.projection


@dataclass(frozen=True)
class KindCounts:
    """How the runs of one group ended."""

    n: int
    counts: Mapping[Kind, int]
    real_successes: int  # idempotent runs at a real projection (neither null nor identity)
    median_image_dim: float | None

    def share(self, kind: Kind) -> float:
        """The fraction of runs of this kind (0 when the group is empty)."""
        return self.counts.get(kind, 0) / self.n if self.n else 0.0


def count_kinds(trials: Iterable[TrialRecord], threshold: float) -> KindCounts:
    """Kind counts, real successes and the median image dimension of ``trials``."""
    runs = list(trials)
    counts = Counter(classify(t, threshold) for t in runs)
    real = counts.get(Kind.projection, 0)
    dims = sorted(t.image_dim for t in runs if t.image_dim is not None)
    median = None
    if dims:
        mid = len(dims) // 2
        median = dims[mid] if len(dims) % 2 else (dims[mid - 1] + dims[mid]) / 2
    return KindCounts(len(runs), dict(counts), real, median)
