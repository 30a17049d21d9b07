"""The claims' building blocks: the exact Wilcoxon p-value, tie rules and verdicts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import rankdata, wilcoxon

from service.report.claims import EPOCHS, ERROR, verdict, wilcoxon_p


@pytest.mark.parametrize("n", [1, 2, 5, 9, 14, 30])
def test_wilcoxon_matches_scipy_exact_without_ties(n: int) -> None:
    diffs = np.random.default_rng(n).normal(0.4, 1.0, n)
    expected = wilcoxon(diffs, method="exact").pvalue
    assert wilcoxon_p(list(diffs)) == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_with_ties_and_zeros_matches_enumeration() -> None:
    diffs = [1.0, 1.0, -1.0, 2.0, 2.0, 3.0, -3.0, 0.5, 0.0]
    nonzero = [d for d in diffs if d != 0]
    ranks = rankdata(np.abs(nonzero))
    observed = ranks[np.asarray(nonzero) > 0].sum()
    total = ranks.sum()
    sums = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product([0, 1], repeat=len(nonzero))
    ]
    expected = np.mean([abs(2 * s - total) >= abs(2 * observed - total) - 1e-9 for s in sums])
    assert wilcoxon_p(diffs) == pytest.approx(expected, rel=1e-12)
    assert wilcoxon_p([0.0, 0.0]) is None


def test_error_ties_are_relative_and_floor_zero() -> None:
    assert ERROR.outcome(1.0e-5, 1.005e-5) == 0  # within 1%
    assert ERROR.outcome(1.0e-5, 2.0e-5) == 1
    assert ERROR.outcome(3e-14, 1e-20) == 0  # both numerically zero
    assert ERROR.outcome(math.inf, 1e-3) == -1  # a diverged run loses
    assert EPOCHS.outcome(10.0, 11.0) == 1
    assert EPOCHS.outcome(math.inf, 50.0) == -1
    assert ERROR.diff(1e-4, 1e-6) == pytest.approx(2.0)


def test_verdicts() -> None:
    assert verdict(support=5, decided=5, by_null=0) == "holds"
    assert verdict(support=4, decided=5, by_null=3) == "holds only via null maps"
    assert verdict(support=3, decided=5, by_null=0) == "mixed"
    assert verdict(support=2, decided=5, by_null=0) == "fails"
    assert verdict(support=0, decided=0, by_null=0) == "n/a"
