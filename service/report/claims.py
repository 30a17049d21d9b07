"""The note's two claims as paired comparisons of two algorithms over runs with equal seeds.

(a) "modified backprop finds as good or better solutions (idempotent error)" and
(b) "... in fewer epochs", each asked three ways: paired by seed at equal learning rate,
at each algorithm's best learning rate, and at a matched step size (the learning rates
whose first-epoch ``update_norm`` agree within a factor of two).

A run's error is its final idempotent error; a diverged run's error is +inf. Its epochs
are ``epochs_to_threshold``; a run that never reached the threshold has +inf epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import median

from service.report.kinds import Kind, classify
from service.store.records import TrialRecord

ERROR_FLOOR = 1e-12  # errors below this are numerically zero (float32 evaluation)
REL_TOL = 0.01  # two errors within 1% are a tie
HOLDS = 0.8  # the claim holds when it is true in at least 80% of the decided pairs
FAILS = 0.5  # ... and fails when true in under half of them
MATCH_FACTOR = 2.0  # first-epoch update norms within this factor count as matched


def error_value(trial: TrialRecord) -> float:
    """Final idempotent error, +inf for a diverged run (or a missing value)."""
    if trial.status != "succeeded" or trial.idempotent_error is None:
        return math.inf
    return trial.idempotent_error


def epochs_value(trial: TrialRecord) -> float:
    """Epochs to reach the threshold, +inf when it never did."""
    if trial.status != "succeeded" or trial.epochs_to_threshold is None:
        return math.inf
    return float(trial.epochs_to_threshold)


@dataclass(frozen=True)
class Metric:
    """How one claim reads and compares a run."""

    name: str  # "idempotent_error" or "epochs_to_threshold"
    claim: str  # "a" or "b"
    value: Callable[[TrialRecord], float]

    def outcome(self, va: float, vb: float) -> int:
        """+1 when a is better, -1 when b is, 0 for a tie."""
        if va == vb or (va <= ERROR_FLOOR and vb <= ERROR_FLOOR and self.claim == "a"):
            return 0
        finite = math.isfinite(va) and math.isfinite(vb)
        if self.claim == "a" and finite and abs(va - vb) <= REL_TOL * max(va, vb):
            return 0
        return 1 if va < vb else -1

    def diff(self, va: float, vb: float) -> float | None:
        """The paired difference (log10 ratio for errors), None when either is infinite."""
        if not (math.isfinite(va) and math.isfinite(vb)):
            return None
        if self.claim == "a":
            return math.log10(max(va, ERROR_FLOOR)) - math.log10(max(vb, ERROR_FLOOR))
        return va - vb


ERROR = Metric("idempotent_error", "a", error_value)
EPOCHS = Metric("epochs_to_threshold", "b", epochs_value)


@dataclass(frozen=True)
class Pair:
    """Two runs that share everything but the algorithm (and maybe the learning rate)."""

    seed: int
    a: TrialRecord
    b: TrialRecord


@dataclass(frozen=True)
class Outcome:
    """One claim answered over a set of pairs."""

    mode: str  # "equal lr", "best lr", "matched step"
    label: str  # e.g. "lr 0.05" or "modified 0.5 vs ordinary 0.1"
    metric: str
    pairs: int
    a_wins: int
    b_wins: int
    ties: int
    undecided: int  # pairs where both runs diverged (a) or neither reached the threshold (b)
    support_by_null: int  # pairs supporting the claim where a's run is a null map
    median_diff: float | None
    p_value: float | None
    verdict: str

    @property
    def support(self) -> int:
        """Pairs where the claim is true: as good or better (a), strictly fewer epochs (b)."""
        return self.a_wins + self.ties if self.metric == ERROR.name else self.a_wins

    @property
    def decided(self) -> int:
        return self.pairs - self.undecided


def verdict(support: int, decided: int, by_null: int) -> str:
    """'holds', 'mixed', 'fails' or 'n/a'; 'holds only via null maps' when most of the
    supporting pairs are modified runs that collapsed to the null map."""
    if decided == 0:
        return "n/a"
    share = support / decided
    if share >= HOLDS:
        return "holds only via null maps" if by_null * 2 > support else "holds"
    return "fails" if share < FAILS else "mixed"


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (None if undefined).

    Zero differences are dropped (Wilcoxon's original rule); tied magnitudes get mid-ranks.
    The p-value is exact: the null distribution of the positive rank sum is counted over
    all 2^n sign assignments by dynamic programming on doubled (integer) ranks, so it is
    right for small n and with ties, and fast (scipy's wilcoxon falls back to a slow
    permutation test with ties).
    """
    import numpy as np

    nonzero = [d for d in diffs if d != 0]
    n = len(nonzero)
    if n == 0:
        return None
    magnitudes = np.abs(np.asarray(nonzero, dtype=float))
    order = np.argsort(magnitudes, kind="stable")
    ranks2 = np.empty(n, dtype=np.int64)  # doubled mid-ranks: integers
    i = 0
    while i < n:
        j = i
        while j + 1 < n and magnitudes[order[j + 1]] == magnitudes[order[i]]:
            j += 1
        ranks2[order[i : j + 1]] = i + j + 2  # 2 x mean of ranks i+1 .. j+1
        i = j + 1
    total = int(ranks2.sum())
    counts = np.zeros(total + 1, dtype=float)  # ways to reach each positive rank sum
    counts[0] = 1.0
    for r in ranks2:
        counts[r:] = counts[r:] + counts[: total + 1 - r].copy()
    observed = int(ranks2[np.asarray(nonzero) > 0].sum())
    sums = np.arange(total + 1)
    extreme = np.abs(2 * sums - total) >= abs(2 * observed - total)
    return float(min(1.0, counts[extreme].sum() / counts.sum()))


def answer(
    mode: str, label: str, pairs: Sequence[Pair], metric: Metric, threshold: float
) -> Outcome:
    """Count wins, ties and the median difference of ``metric`` over ``pairs``."""
    a_wins = b_wins = ties = undecided = by_null = 0
    diffs: list[float] = []
    for pair in pairs:
        va, vb = metric.value(pair.a), metric.value(pair.b)
        if math.isinf(va) and math.isinf(vb):
            undecided += 1  # neither diverged run nor never-reached run answers the claim
            continue
        result = metric.outcome(va, vb)
        a_wins += result > 0
        b_wins += result < 0
        ties += result == 0
        supports = result > 0 or (result == 0 and metric is ERROR)
        if supports and classify(pair.a, threshold) is Kind.null:
            by_null += 1
        d = metric.diff(va, vb)
        if d is not None:
            diffs.append(d)
    support = a_wins + ties if metric is ERROR else a_wins
    return Outcome(
        mode=mode,
        label=label,
        metric=metric.name,
        pairs=len(pairs),
        a_wins=a_wins,
        b_wins=b_wins,
        ties=ties,
        undecided=undecided,
        support_by_null=by_null,
        median_diff=median(diffs) if diffs else None,
        p_value=wilcoxon_p(diffs),
        verdict=verdict(support, len(pairs) - undecided, by_null),
    )


def pair_by_seed(a_runs: Sequence[TrialRecord], b_runs: Sequence[TrialRecord]) -> list[Pair]:
    """Pairs of final runs with the same seed (unfinished runs are left out)."""
    final = ("succeeded", "diverged")
    b_by_seed = {t.seed: t for t in b_runs if t.status in final}
    return [
        Pair(t.seed, t, b_by_seed[t.seed])
        for t in sorted(a_runs, key=lambda t: t.seed)
        if t.status in final and t.seed in b_by_seed
    ]


def median_value(runs: Sequence[TrialRecord], metric: Metric) -> float:
    """Median of ``metric`` over runs (+inf counts as the worst value)."""
    values = [metric.value(t) for t in runs if t.status in ("succeeded", "diverged")]
    return median(values) if values else math.inf


def best_lr(by_lr: dict[float, list[TrialRecord]], metric: Metric) -> float | None:
    """The learning rate with the best median ``metric`` (ties: fewer infinite, smaller lr)."""
    if not by_lr:
        return None

    def key(lr: float) -> tuple[float, int, float]:
        runs = by_lr[lr]
        infinite = sum(1 for t in runs if math.isinf(metric.value(t)))
        return (median_value(runs, metric), infinite, lr)

    return min(by_lr, key=key)
