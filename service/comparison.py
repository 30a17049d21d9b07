"""The one comparison engine: paired runs of a and b, scipy's Wilcoxon test, an effect
with a bootstrap interval, Holm's correction and the verdict.

Used by ``GET /sweeps/{id}/compare``, ``GET /sweeps/{id}/claims``, ``idem compare``,
``idem claims`` and the report, so every place that compares two sets of runs counts the
same wins and prints the same p-value. Pure functions over numbers (no FastAPI, no
SQLAlchemy); the callers pair the runs.

The method, in the order a comparison runs it:

1. **Pairing.** The caller pairs a's and b's runs by seed (same seed = same initial weights
   and the same data); ``a[i]`` and ``b[i]`` are one pair's values, ``None`` (or NaN) when
   the run has none (it never reached the threshold, or it diverged: :func:`run_value`).
2. **Transform** (one per metric, :func:`rule`). Errors and the loss: ``log10`` of the value,
   floored at :data:`ERROR_FLOOR` (float32 evaluation cannot tell smaller errors apart), so
   the paired difference is the log10 ratio a/b. Every other metric (epochs to the
   threshold, seconds, ...): the value itself, so the difference is a − b.
3. **Missing values.** For a metric with a direction (lower is better), a missing value is
   worse than any value: it is replaced by one unit (one decade, one epoch) beyond the worst
   value present in the comparison, so the pair stays in the test with a finite difference
   that ranks as the worst. Two missing values are a tie. For a metric without a direction
   (image_dim, norm, ...) a pair with a missing value is left out.
4. **Tie rule.** A pair is a tie when its transformed difference is within the metric's
   tolerance (errors within 1%: ``|log10 ratio| <= log10(1.01)``; other metrics: equal).
   Ties count as zero differences.
5. **Test.** ``scipy.stats.wilcoxon`` on the differences, two-sided, ``zero_method="wilcox"``
   (ties are dropped, Wilcoxon's own rule): the exact null distribution when at most
   :data:`EXACT_MAX` differences are nonzero (with tied magnitudes scipy rounds the
   statistic conservatively, gh-19872), the normal approximation with tie and continuity
   correction above. All differences zero: p = 1 (no evidence either way). No pairs: no p.
   The side a significant test favours is the side with the larger signed-rank sum.
6. **Effect.** The median of the paired differences (ties included): the median log10 ratio
   for errors, the median difference in epochs. Its 95% interval is the percentile
   ``scipy.stats.bootstrap`` interval over pairs, :data:`BOOTSTRAP_RESAMPLES` resamples from
   a generator seeded with :data:`BOOTSTRAP_SEED`, so a page is reproducible. Under two
   pairs there is no interval; identical differences give a zero-width one.
7. **Correction.** Holm–Bonferroni over the family of tests one answer makes (one report,
   one ``/claims`` response, one ``/compare`` call), :func:`holm`.
8. **Verdict** (:func:`verdict`): *holds* when the corrected p is below :data:`ALPHA` and
   the test favours a; *fails* when it favours b; *no difference shown* otherwise.

Cost: sorting and ranking (O(n log n)) plus the bootstrap's resampled medians
(``BOOTSTRAP_RESAMPLES`` x O(n)); 2,500 pairs take well under a second.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy import stats

Direction = Literal["lower", "higher"]

ALPHA = 0.05  # a corrected p below this decides a comparison
CONFIDENCE = 0.95  # the effect's bootstrap interval
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # every interval is drawn from a generator seeded with this
EXACT_MAX = 50  # scipy's exact Wilcoxon distribution up to this many nonzero differences
ERROR_FLOOR = 1e-12  # errors below this are numerically zero (float32 evaluation)
ERROR_TIE = math.log10(1.01)  # two errors within 1% are a tie
MISSING_STEP = 1.0  # a missing value sits this far (transformed) beyond the worst present one


@dataclass(frozen=True)
class Rule:
    """How one metric is compared: direction, transform and tie tolerance."""

    metric: str
    better: Direction | None  # which direction wins; None: no wins, missing pairs left out
    log: bool  # compare log10(max(value, ERROR_FLOOR)) instead of the value
    tolerance: float  # |transformed difference| up to this is a tie
    diverged_missing: bool  # a diverged run has no value (its last one is not a result)

    @property
    def transform(self) -> str:
        """The paired difference in words (for the method section and the API docs)."""
        return "log10 ratio a/b" if self.log else "difference a − b"


# Which metrics have a direction and which are compared on a log scale. Metrics not listed
# (image_dim, norm, trace, update_norm, epochs_run) have no "better": plain differences.
_LOWER_LOG = ("idempotent_error", "train_idempotent_error", "loss")
_LOWER_PLAIN = ("epochs_to_threshold", "wall_seconds")


def rule(metric: str) -> Rule:
    """The comparison rule of ``metric`` (any stored final or per-epoch metric)."""
    if metric in _LOWER_LOG:
        return Rule(metric, "lower", log=True, tolerance=ERROR_TIE, diverged_missing=True)
    if metric in _LOWER_PLAIN:
        return Rule(metric, "lower", False, 0.0, diverged_missing=metric == "epochs_to_threshold")
    return Rule(metric, None, log=False, tolerance=0.0, diverged_missing=False)


def run_value(value: float | None, diverged: bool, metric: str) -> float | None:
    """A run's value of ``metric`` as the comparison reads it: none when the run diverged
    and the metric measures its result (errors, loss, epochs to the threshold)."""
    return None if diverged and rule(metric).diverged_missing else value


class Verdict(StrEnum):
    """The answer of one comparison (a against b)."""

    holds = "holds"
    holds_via_null_maps = "holds only via null maps"
    fails = "fails"
    no_difference = "no difference shown"
    no_pairs = "no pairs"
    not_asked = "cannot be asked honestly"


@dataclass(frozen=True)
class Paired:
    """One comparison of paired values of a and b (see the module docstring)."""

    pairs: int  # pairs in the test
    a_wins: int | None  # pairs where a is better (None: the metric has no direction)
    b_wins: int | None
    ties: int
    effect: float | None  # median transformed difference a − b (negative: a lower)
    ci_low: float | None  # CONFIDENCE bootstrap interval of the effect
    ci_high: float | None
    p: float | None  # two-sided Wilcoxon signed-rank p; None only without pairs
    favours: Literal["a", "b"] | None  # the side with the larger signed-rank sum
    signs: tuple[int, ...]  # per input pair: +1 a better, -1 b better, 0 tie (or left out)


def _transformed(values: Sequence[float | None], r: Rule) -> np.ndarray:
    """The values on the comparison scale, NaN where missing."""
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    x[~np.isfinite(x)] = np.nan
    if r.log:
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.log10(np.maximum(x, ERROR_FLOOR))
    return x


def differences(
    a: Sequence[float | None], b: Sequence[float | None], r: Rule
) -> tuple[np.ndarray, np.ndarray]:
    """The paired differences on ``r``'s scale (ties set to exactly 0) and a mask of the
    input pairs they come from (pairs with a missing value are left out only when the
    metric has no direction)."""
    if len(a) != len(b):
        raise ValueError("a and b must have the same length")
    xa, xb = _transformed(a, r), _transformed(b, r)
    keep = np.ones(len(xa), dtype=bool)
    if r.better is None:
        keep = ~(np.isnan(xa) | np.isnan(xb))
        xa, xb = xa[keep], xb[keep]
    else:
        present = np.concatenate([xa[~np.isnan(xa)], xb[~np.isnan(xb)]])
        if present.size:
            worst = (
                present.max() + MISSING_STEP
                if r.better == "lower"
                else present.min() - MISSING_STEP
            )
        else:
            worst = 0.0  # nothing present: every pair is a tie
        xa = np.where(np.isnan(xa), worst, xa)
        xb = np.where(np.isnan(xb), worst, xb)
    d = xa - xb
    d[np.abs(d) <= r.tolerance] = 0.0
    return d, keep


def wilcoxon_p(d: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of differences ``d`` (see the module
    docstring, item 5): never NaN; 1 when every difference is zero; None when empty."""
    if d.size == 0:
        return None
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return 1.0
    method = "exact" if nonzero <= EXACT_MAX else "asymptotic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's notes on ties with the exact method
        p = float(stats.wilcoxon(d, zero_method="wilcox", method=method).pvalue)
    return min(1.0, max(0.0, p)) if math.isfinite(p) else 1.0


def _favours(d: np.ndarray, better: Direction) -> Literal["a", "b"] | None:
    """The side whose signed ranks weigh more (mid-ranks of |d| over nonzero d)."""
    nz = d[d != 0]
    if nz.size == 0:
        return None
    ranks = stats.rankdata(np.abs(nz))
    r_plus, r_minus = ranks[nz > 0].sum(), ranks[nz < 0].sum()
    if r_plus == r_minus:
        return None
    a_side = r_minus > r_plus if better == "lower" else r_plus > r_minus
    return "a" if a_side else "b"


def effect_interval(d: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """The median difference and its seeded percentile bootstrap interval."""
    if d.size == 0:
        return None, None, None
    effect = float(np.median(d))
    if d.size < 2:
        return effect, None, None
    if np.all(d == d[0]):
        return effect, effect, effect  # every resample has the same median
    res = stats.bootstrap(
        (d,),
        np.median,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return effect, low, high


def compare(a: Sequence[float | None], b: Sequence[float | None], metric: str) -> Paired:
    """Compare paired values ``a[i]`` and ``b[i]`` of ``metric`` (the whole method)."""
    r = rule(metric)
    d, keep = differences(a, b, r)
    signs_kept = np.sign(d).astype(int)
    if r.better == "lower":
        signs_kept = -signs_kept  # a lower value is a win for a
    signs = np.zeros(len(keep), dtype=int)
    signs[keep] = signs_kept
    effect, low, high = effect_interval(d)
    ties = int(np.count_nonzero(d == 0))
    return Paired(
        pairs=int(d.size),
        a_wins=int(np.count_nonzero(signs_kept > 0)) if r.better else None,
        b_wins=int(np.count_nonzero(signs_kept < 0)) if r.better else None,
        ties=ties,
        effect=effect,
        ci_low=low,
        ci_high=high,
        p=wilcoxon_p(d),
        favours=_favours(d, r.better) if r.better else None,
        signs=tuple(int(s) for s in signs),
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in input order; None entries are not tests and
    stay None. The i-th smallest of m p-values is multiplied by m − i + 1, then made
    non-decreasing in that order and capped at 1 (Holm 1979). Written out because
    ``scipy.stats.false_discovery_control`` offers Benjamini–Hochberg/Yekutieli only."""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(result: Paired, p_corrected: float | None) -> Verdict:
    """holds / fails / no difference shown from the corrected p and the favoured side."""
    if result.pairs == 0:
        return Verdict.no_pairs
    if p_corrected is not None and p_corrected < ALPHA and result.favours is not None:
        return Verdict.holds if result.favours == "a" else Verdict.fails
    return Verdict.no_difference
