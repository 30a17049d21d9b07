"""Paired statistics: wins, ties and the Wilcoxon p-value, including degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from service.stats import paired_stats, wilcoxon_p


def test_wins_ties_and_differences_lower_is_better() -> None:
    a = [1.0, 2.0, 3.0, None, None, 5.0]
    b = [2.0, 2.0, 1.0, 4.0, None, None]
    s = paired_stats(a, b, "lower")
    assert (s.pairs, s.complete_pairs) == (6, 3)
    assert (s.a_wins, s.b_wins, s.ties) == (2, 2, 2)  # a wins 1<2 and 5 vs missing
    assert s.median_difference == 0.0
    assert s.mean_difference == pytest.approx((-1 + 0 + 2) / 3)


def test_no_direction_reports_no_wins() -> None:
    s = paired_stats([1.0, 2.0], [2.0, 2.0], None)
    assert s.a_wins is None and s.b_wins is None and s.ties == 1
    assert s.median_difference == -0.5


def test_p_value_is_scipys() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=12)
    b = a + rng.normal(0.5, 1.0, size=12)
    s = paired_stats(list(a), list(b), "lower")
    assert s.p_value == pytest.approx(float(sps.wilcoxon(a - b).pvalue), rel=1e-12)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([], []),
        ([1.0, 2.0], [1.0, 2.0]),  # every difference is zero
        ([None, None], [None, 1.0]),  # no complete pair
        ([float("nan")], [1.0]),
    ],
)
def test_degenerate_inputs_give_a_null_p_value(
    a: list[float | None], b: list[float | None]
) -> None:
    s = paired_stats(a, b, "lower")
    assert s.p_value is None


def test_single_pair_p_value_is_finite_or_null() -> None:
    p = wilcoxon_p([0.5])
    assert p is None or (0 <= p <= 1 and math.isfinite(p))


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        paired_stats([1.0], [], "lower")
