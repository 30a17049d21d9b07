"""The comparison engine against scipy and by hand: transforms, ties, zeros, missing values,
degenerate inputs, Holm's correction, verdicts and the cost at 2,500 pairs."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats

from service.comparison import (
    ALPHA,
    ERROR_FLOOR,
    EXACT_MAX,
    Paired,
    Verdict,
    compare,
    holm,
    rule,
    verdict,
)


def scipy_p(d: Sequence[float], method: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, zero_method="wilcox", method=method).pvalue)


def test_errors_are_log10_ratios_with_a_floor_and_one_percent_ties() -> None:
    a = [1e-4, 1e-3, 1.005e-5, 1e-14, 1e-13, 4e-2]
    b = [1e-6, 1e-2, 1.0e-5, 1e-20, 1e-6, 1e-2]
    r = compare(a, b, "idempotent_error")
    # log10 ratios: +2, -1, tie (within 1%), tie (both under the floor),
    # log10(1e-12 / 1e-6) (a floored), +log10(4)
    d = [2.0, -1.0, 0.0, 0.0, -6.0, math.log10(4.0)]
    assert r.signs == (-1, 1, 0, 0, 1, -1)
    assert (r.pairs, r.a_wins, r.b_wins, r.ties) == (6, 2, 2, 2)
    assert r.effect == pytest.approx(float(np.median(d)))
    assert r.p == pytest.approx(scipy_p(d, "exact"), rel=1e-12)


def test_no_ties_small_n_is_scipys_exact_test() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(0.0, 1.0, 12)
    b = a * rng.lognormal(0.4, 0.5, 12)
    r = compare(list(a), list(b), "idempotent_error")
    d = np.log10(a) - np.log10(b)
    assert r.p == pytest.approx(float(stats.wilcoxon(d, method="exact").pvalue), rel=1e-9)
    assert r.favours == "a" and r.a_wins == int((d < 0).sum())


def test_ties_and_zeros_in_epochs_match_scipy() -> None:
    a = [10, 12, 12, 30, 30, 7, 50, 20, 21, 22]
    b = [12, 10, 14, 30, 33, 9, 60, 20, 25, 24]
    r = compare(a, b, "epochs_to_threshold")
    d = [x - y for x, y in zip(a, b, strict=True)]
    assert (r.ties, r.a_wins, r.b_wins) == (2, 7, 1)
    assert r.p == pytest.approx(scipy_p(d, "exact"), rel=1e-12)
    assert r.effect == float(np.median(d))


def test_never_reached_is_worse_than_any_value_and_stays_in_the_test() -> None:
    """The issue's N1 case: a reaches the threshold in 11 of 12 pairs, b mostly never."""
    a: list[float | None] = [40, 42, 45, 50, 38, 41, 44, 39, 47, 43, 46, None]
    b: list[float | None] = [None] * 9 + [60, 70, 30]
    r = compare(a, b, "epochs_to_threshold")
    worst = 70 + 1  # one epoch beyond the worst value present
    filled_a = [worst if v is None else v for v in a]
    filled_b = [worst if v is None else v for v in b]
    d = [x - y for x, y in zip(filled_a, filled_b, strict=True)]
    assert r.pairs == 12 and (r.a_wins, r.b_wins, r.ties) == (11, 1, 0)
    assert r.p == pytest.approx(scipy_p(d, "exact"), rel=1e-12)
    assert r.p is not None and r.p < 0.05 and r.favours == "a"  # was 0.5 with drop-outs
    both_missing = compare([None, None, 3], [None, 5, 4], "epochs_to_threshold")
    assert both_missing.signs == (0, -1, 1) and both_missing.ties == 1


def test_missing_errors_count_as_worst_and_nan_is_missing() -> None:
    r = compare([1e-3, None, float("nan"), math.inf], [1e-2, 1e-3, None, 1e-5], "idempotent_error")
    # worst present log10 value is -2, so missing = -1: diffs -1, +2, 0, +4
    assert r.signs == (1, -1, 0, -1)
    assert r.effect == pytest.approx(float(np.median([-1.0, 2.0, 0.0, 4.0])))


def test_metrics_without_direction_leave_incomplete_pairs_out() -> None:
    r = compare([1.0, 2.0, None, 4.0], [2.0, 2.0, 1.0, 1.0], "image_dim")
    assert rule("image_dim").better is None
    assert (r.pairs, r.ties, r.a_wins, r.b_wins, r.favours) == (3, 1, None, None, None)
    assert r.effect == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([], []),
        ([1.0], [2.0]),
        ([2.0] * 6, [2.0] * 6),  # all equal
        ([None] * 4, [None] * 4),  # all missing
        ([1e-20] * 3, [1e-15] * 3),  # all under the floor
        ([1.0, 3.0], [2.0, 2.0]),
    ],
)
def test_degenerate_inputs_give_no_warning_and_no_nan(
    a: list[float | None], b: list[float | None]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compare(a, b, "loss")
    for value in (r.effect, r.ci_low, r.ci_high, r.p):
        assert value is None or math.isfinite(value)
    assert (r.p is None) == (r.pairs == 0)
    if r.pairs and r.ties == r.pairs:
        assert r.p == 1.0 and r.effect == 0.0 and r.favours is None
    if r.pairs == 1:
        assert r.ci_low is None and r.ci_high is None
    assert verdict(r, r.p) in (Verdict.no_difference, Verdict.no_pairs)


def test_interval_is_seeded_and_contains_the_effect() -> None:
    rng = np.random.default_rng(7)
    a, b = list(rng.lognormal(0, 1, 40)), list(rng.lognormal(0.3, 1, 40))
    first, second = compare(a, b, "loss"), compare(a, b, "loss")
    assert first == second
    assert first.ci_low is not None and first.ci_high is not None and first.effect is not None
    assert first.ci_low <= first.effect <= first.ci_high
    # the same as scipy's percentile bootstrap of the median with the engine's seed
    d = np.log10(np.asarray(a)) - np.log10(np.asarray(b))
    assert min(a) > ERROR_FLOOR
    res = stats.bootstrap(
        (d,), np.median, n_resamples=2000, method="percentile", rng=np.random.default_rng(0)
    )
    assert first.ci_low == pytest.approx(res.confidence_interval.low)
    assert first.ci_high == pytest.approx(res.confidence_interval.high)


def test_above_the_exact_limit_is_the_normal_approximation() -> None:
    rng = np.random.default_rng(11)
    n = EXACT_MAX + 30
    a = rng.integers(10, 100, n).astype(float)
    b = a + rng.integers(-5, 12, n)
    r = compare(list(a), list(b), "epochs_to_threshold")
    assert r.p == pytest.approx(scipy_p(list(a - b), "asymptotic"), rel=1e-12)


def test_2500_pairs_fast_and_finite() -> None:
    """The report's scale case: 2,500 pairs per comparison, with ties and missing values."""
    rng = np.random.default_rng(0)
    a = [float(v) for v in rng.lognormal(-7, 2, 2500)]
    b = [float(v) for v in rng.lognormal(-6.8, 2, 2500)]
    a[:300] = [None] * 300  # type: ignore[list-item]
    b[200:400] = [None] * 200  # type: ignore[list-item]
    b[500:900] = a[500:900]  # exact ties
    start = time.perf_counter()
    r = compare(a, b, "idempotent_error")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0  # about 0.2 s on an idle core
    assert r.pairs == 2500 and r.ties >= 500
    assert r.p is not None and 0.0 < r.p <= 1.0 and math.isfinite(r.p)
    assert r.ci_low is not None and r.ci_high is not None


def test_holm_matches_the_definition() -> None:
    p: list[float | None] = [0.01, None, 0.04, 0.03, 0.005, 0.5]
    adjusted = holm(p)
    assert adjusted[1] is None
    # sorted: 0.005*5, 0.01*4, 0.03*3, 0.04*2, 0.5*1 -> 0.025, 0.04, 0.09, 0.09 (monotone), 0.5
    assert adjusted == pytest.approx([0.04, None, 0.09, 0.09, 0.025, 0.5])
    assert holm([]) == [] and holm([None]) == [None]
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def _paired(favours: str | None, pairs: int = 20) -> Paired:
    return Paired(pairs, 10, 5, 5, -1.0, -2.0, -0.5, 0.001, favours, ())  # type: ignore[arg-type]


def test_verdicts_follow_the_corrected_p_and_the_side() -> None:
    assert verdict(_paired("a"), ALPHA / 2) is Verdict.holds
    assert verdict(_paired("b"), ALPHA / 2) is Verdict.fails
    assert verdict(_paired("a"), ALPHA) is Verdict.no_difference
    assert verdict(_paired(None), 0.0) is Verdict.no_difference
    assert verdict(_paired("a", pairs=0), None) is Verdict.no_pairs
