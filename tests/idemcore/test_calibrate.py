"""Step calibration: the first update measured through the training loop's rule and
optimizer equals an independent formula; matching and suggesting learning rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from idemcore import calibrate
from idemcore.data import STREAM_TRAIN, generator
from idemcore.nets import build_net


def _first_batch(seed: int, m: int, d: int) -> np.ndarray:
    g = generator(seed, STREAM_TRAIN)
    return torch.randn(m, d, generator=g, dtype=torch.float64).numpy()


@pytest.mark.parametrize("algorithm", ["ordinary", "modified", "m1"])
def test_first_step_of_n1_equals_the_closed_form(algorithm: str) -> None:
    """N1 is n(x) = x W^T: E's gradient and the note's Δn have closed forms."""
    seed, m, lr = 3, 40, 0.05
    config = calibrate.calibration_config(
        "N1", algorithm, lr, seed=seed, batch_size=m, dtype="float64"
    )
    got = calibrate.first_step_norm(config)
    w = build_net("N1", seed=seed, dtype=torch.float64)[0].weight.detach().numpy()  # (d, d)
    x = _first_batch(seed, m, 5)  # (m, d)
    y, y2, y3 = x @ w.T, x @ w.T @ w.T, x @ w.T @ w.T @ w.T
    if algorithm == "ordinary":
        # E = mean((y W^T - y)^2) over m·d entries; dE/dW through both applications of W.
        r = y2 - y  # (m, d)
        g_out = 2 * r / r.size  # dE/d(y2)
        grad = g_out.T @ y + ((g_out @ w) - g_out).T @ x
    else:
        # modified and M1 (the same step for N1, the note's Note 1): -Δn x^T / m.
        grad = -((3 * y2 - 2 * y3 - y).T @ x) / m
    assert got is not None
    np.testing.assert_allclose(got, lr * np.linalg.norm(grad), rtol=1e-10)


def test_adam_first_step_is_lr_times_sqrt_of_parameters() -> None:
    """Adam's first update is lr · g/(|g| + eps) per parameter: about lr · sqrt(P)."""
    config = calibrate.calibration_config(
        "B1", "modified", 0.01, seed=0, batch_size=50, optimizer="adam", dtype="float64"
    )
    got = calibrate.first_step_norm(config)
    assert got == pytest.approx(0.01 * math.sqrt(30), rel=1e-3)  # B1: 25 weights + 5 biases


def test_measure_is_deterministic_and_in_order() -> None:
    a = calibrate.measure("B1", ["modified", "ordinary"], [0.01, 0.1], seeds=[0, 1], batch_size=20)
    b = calibrate.measure("B1", ["modified", "ordinary"], [0.01, 0.1], seeds=[0, 1], batch_size=20)
    assert a == b
    assert [(s.algorithm, s.learning_rate) for s in a] == [
        ("modified", 0.01),
        ("modified", 0.1),
        ("ordinary", 0.01),
        ("ordinary", 0.1),
    ]
    assert all(len(s.norms) == 2 and s.median is not None for s in a)


def test_matched_pairs_takes_the_nearest_step_within_the_factor() -> None:
    a = {0.01: 1.0, 0.1: 10.0, 1.0: 100.0}
    b = {0.1: 0.6, 1.0: 6.0}
    # 1.0 vs 0.6 is within 2 (ratio 1.67); 10 vs 6 too; 100 has nothing within 2.
    pairs = calibrate.matched_pairs(a, b)
    assert [(la, lb) for la, lb, _ in pairs] == [(0.01, 0.1), (0.1, 1.0)]
    assert pairs[0][2] == pytest.approx(1 / 0.6)
    assert calibrate.matched_pairs({0.1: None}, b) == []


def test_rate_for_step_inverts_a_power_law() -> None:
    steps = {0.01: 0.02, 0.1: 0.2, 1.0: 2.0}  # step = 2 lr
    assert calibrate.rate_for_step(steps, 0.5) == pytest.approx(0.25)
    assert calibrate.rate_for_step(steps, 0.002) == pytest.approx(0.001)  # extrapolated
    assert calibrate.rate_for_step(steps, 20.0) == pytest.approx(10.0)
    assert calibrate.rate_for_step({0.1: 3.0}, 30.0) == pytest.approx(1.0)  # slope 1
    assert calibrate.rate_for_step({0.1: 3.0, 1.0: 2.0}, 1.0) is None  # not increasing


def test_suggest_keeps_the_smaller_steps_rates_and_scales_the_other() -> None:
    steps = {
        "modified": {0.01: 4.0, 0.1: 40.0},  # 400 × lr
        "ordinary": {0.01: 0.01, 0.1: 0.1},  # 1 × lr
    }
    assert calibrate.reference_algorithm(steps) == "ordinary"
    mapping = calibrate.suggest(steps, [0.01, 0.1])
    assert mapping == {"modified": [2.5e-05, 0.00025], "ordinary": [0.01, 0.1]}


def test_suggested_rates_match_when_measured_again() -> None:
    seeds, m = [0, 1], 50
    sizes = calibrate.measure(
        "B2", ["modified", "ordinary"], [0.01, 0.1], seeds=seeds, batch_size=m
    )
    steps = calibrate.steps_by_algorithm(sizes)
    mapping = calibrate.suggest(steps, [0.01, 0.1])
    again = calibrate.measure("B2", list(mapping), mapping, seeds=seeds, batch_size=m)
    verified = calibrate.verify(mapping, steps, again)
    assert verified.reference == "ordinary"
    assert verified.matches
    # B2 (d = 100): modified's steps are tens of times ordinary's at equal rate.
    assert all(r < lr / 10 for r, lr in zip(mapping["modified"], [0.01, 0.1], strict=True))
