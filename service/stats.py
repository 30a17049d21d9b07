"""Paired statistics for ``GET /sweeps/{id}/compare``.

Runs of algorithm ``a`` and ``b`` that agree on everything else (the same seed means the
same initialization and the same data) form pairs. Per set of pairs we count wins and
ties, take the median and mean of the paired differences a − b, and run the Wilcoxon
signed-rank test. Degenerate inputs (no pairs, all differences zero) give a null p-value,
never an error.

Missing values: a run without a value (it diverged, or never reached the threshold for
``epochs_to_threshold``) counts as worse than any value when wins are counted (two missing
values tie); the differences and the test use only the pairs where both runs have a value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Direction = Literal["lower", "higher"]

# Which direction counts as a win. Metrics not listed (image_dim, norm, trace, ...) have
# no "better": the API reports their differences and test, and no win counts.
BETTER: dict[str, Direction] = {
    "idempotent_error": "lower",
    "train_idempotent_error": "lower",
    "loss": "lower",
    "epochs_to_threshold": "lower",
    "wall_seconds": "lower",
}


@dataclass(frozen=True)
class PairedStats:
    """Statistics over paired values of a and b."""

    pairs: int
    complete_pairs: int
    a_wins: int | None
    b_wins: int | None
    ties: int
    median_difference: float | None
    mean_difference: float | None
    p_value: float | None


def _present(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``differences``; None when undefined
    (no differences, or every difference is zero)."""
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return None
    from scipy.stats import wilcoxon

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(wilcoxon(list(differences)).pvalue)
    except ValueError:
        return None
    return p if math.isfinite(p) else None


def paired_stats(
    a: Sequence[float | None], b: Sequence[float | None], better: Direction | None
) -> PairedStats:
    """Compare paired values ``a[i]`` and ``b[i]``; ``better`` says which direction wins."""
    if len(a) != len(b):
        raise ValueError("a and b must have the same length")
    a_wins = b_wins = ties = 0
    diffs: list[float] = []
    for x, y in zip(a, b, strict=True):
        has_x, has_y = _present(x), _present(y)
        if has_x and has_y:
            assert x is not None and y is not None
            diffs.append(x - y)
            if x == y:
                ties += 1
            elif (x < y) == (better == "lower"):
                a_wins += 1
            else:
                b_wins += 1
        elif has_x:
            a_wins += 1
        elif has_y:
            b_wins += 1
        else:
            ties += 1
    median = _median(diffs)
    return PairedStats(
        pairs=len(a),
        complete_pairs=len(diffs),
        a_wins=a_wins if better else None,
        b_wins=b_wins if better else None,
        ties=ties,
        median_difference=median,
        mean_difference=sum(diffs) / len(diffs) if diffs else None,
        p_value=wilcoxon_p(diffs),
    )


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2
