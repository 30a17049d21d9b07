"""Step calibration: how large a first update each algorithm takes at each learning rate.

At equal learning rate modified backprop's first step is about d/2 times ordinary's, so a
comparison at equal learning rate compares steps of very different sizes. Calibration
takes ONE update of a run's network from its seeded initialization (the update rule and
optimizer the training loop uses, on a seeded gaussian batch of ``batch_size`` samples)
and measures ``||Δθ||`` over all parameters: the quantity the report's *matched step*
comparison reads as the first epoch's ``update_norm``. No training, no metrics: cheap
enough for B3 (d = 4096) on a CPU.

From the measured steps (median over seeds) come the *matched pairs* (learning rates of
two algorithms whose steps agree within :data:`MATCH_FACTOR`, the rule the report pairs
by) and a *suggested* learning-rate mapping: the reference algorithm (the one with the
smallest steps) keeps the given rates and every other algorithm gets the rates whose
steps equal the reference's, found by interpolating log step against log rate (a single
step is proportional to the rate for sgd, momentum and adam, so this is exact up to
round-off; :func:`verify` measures it again).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import median

import numpy as np

from idemcore.config import LayerSpec, TrialConfig

# Learning rates whose first steps agree within this factor count as matched (the
# report's matched-step comparison pairs by the same rule).
MATCH_FACTOR = 2.0
# A suggested mapping's steps agree with the reference's within this factor.
SUGGEST_FACTOR = 1.25
# Significant digits of a suggested learning rate (readable in a spec).
SUGGEST_DIGITS = 3


@dataclass(frozen=True)
class StepSize:
    """The first-step update norms of one (algorithm, learning rate), one per seed
    (None where the step was not finite)."""

    algorithm: str
    learning_rate: float
    norms: tuple[float | None, ...]

    @property
    def median(self) -> float | None:
        """Median norm over the seeds with a finite, positive step (None if none)."""
        finite = [n for n in self.norms if n is not None and n > 0]
        return median(finite) if finite else None


def calibration_config(
    architecture: str | tuple[LayerSpec, ...],
    algorithm: str,
    learning_rate: float,
    *,
    seed: int,
    batch_size: int,
    optimizer: str = "sgd",
    dtype: str = "float32",
) -> TrialConfig:
    """The one-step run measured for (algorithm, learning rate, seed): one batch, one epoch,
    the seed's initialization and gaussian data (validated like any TrialConfig)."""
    return TrialConfig(
        architecture=architecture,
        algorithm=algorithm,
        learning_rate=learning_rate,
        samples=batch_size,
        batch_size=batch_size,
        epochs=1,
        seed=seed,
        data="gaussian-fresh",
        dtype=dtype,
        eval_samples=1,
        optimizer=optimizer,
    )


def first_step_norm(config: TrialConfig) -> float | None:
    """``||Δθ||`` of the first update of ``config``'s run (None when not finite): the
    training loop's own update (:meth:`idemcore.train.PackedTraining.first_step_norms`)."""
    from idemcore.train import PackedTraining

    value = PackedTraining([config]).first_step_norms()[0]
    return value if math.isfinite(value) else None


def measure(
    architecture: str | tuple[LayerSpec, ...],
    algorithms: Sequence[str],
    learning_rates: Mapping[str, Sequence[float]] | Sequence[float],
    *,
    seeds: Sequence[int],
    batch_size: int,
    optimizer: str = "sgd",
    dtype: str = "float32",
    threads: int | None = 1,
) -> list[StepSize]:
    """The first-step norms of every (algorithm, learning rate) over ``seeds``, in order.

    ``learning_rates`` is one list for every algorithm or a mapping per algorithm.
    ``threads`` sets torch's intra-op threads while measuring (None: leave them): one
    step on a small batch gains little from threads, and on a machine shared with other
    jobs one thread measured 4-5x faster than two (B4, batch 100: 0.3 s vs 1.3 s a step
    at load 15 on 2 cores). The setting is process-wide and restored afterwards.
    """
    out: list[StepSize] = []
    with _torch_threads(threads):
        for algorithm in algorithms:
            rates = (
                learning_rates[algorithm] if isinstance(learning_rates, Mapping) else learning_rates
            )
            for lr in rates:
                norms = tuple(
                    first_step_norm(
                        calibration_config(
                            architecture,
                            algorithm,
                            lr,
                            seed=seed,
                            batch_size=batch_size,
                            optimizer=optimizer,
                            dtype=dtype,
                        )
                    )
                    for seed in seeds
                )
                out.append(StepSize(algorithm, float(lr), norms))
    return out


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (None: left as they are), restored
    afterwards."""
    import torch  # here: the matching rules below are read by the report without torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def steps_by_algorithm(sizes: Sequence[StepSize]) -> dict[str, dict[float, float | None]]:
    """{algorithm: {learning rate: median step}} from measured sizes."""
    table: dict[str, dict[float, float | None]] = {}
    for s in sizes:
        table.setdefault(s.algorithm, {})[s.learning_rate] = s.median
    return table


def matched_pairs(
    steps_a: Mapping[float, float | None],
    steps_b: Mapping[float, float | None],
    factor: float = MATCH_FACTOR,
) -> list[tuple[float, float, float]]:
    """For each learning rate of a, the rate of b whose step is nearest in ratio, kept when
    the two agree within ``factor``: ``(lr_a, lr_b, step_a / step_b)`` in a's rate order."""
    pairs: list[tuple[float, float, float]] = []
    for lr_a in sorted(steps_a):
        step_a = steps_a[lr_a]
        if not step_a:
            continue
        candidates = [(abs(math.log(step_a / s)), lr_b, s) for lr_b, s in steps_b.items() if s]
        if not candidates:
            continue
        distance, lr_b, step_b = min(candidates)
        if distance <= math.log(factor):
            pairs.append((lr_a, lr_b, step_a / step_b))
    return pairs


def reference_algorithm(steps: Mapping[str, Mapping[float, float | None]]) -> str:
    """The algorithm with the smallest step per unit learning rate (median over its rates):
    it keeps the given rates and the others are scaled down to match, never up."""

    def per_rate(algorithm: str) -> float:
        ratios = [s / lr for lr, s in steps[algorithm].items() if s]
        return median(ratios) if ratios else math.inf

    return min(steps, key=per_rate)


def _round(value: float) -> float:
    return float(f"{value:.{SUGGEST_DIGITS}g}")


def rate_for_step(steps: Mapping[float, float | None], target: float) -> float | None:
    """The learning rate whose step is ``target``: log step interpolated linearly in log
    rate between measured rates, extrapolated with the end slopes (slope 1 from a single
    rate). None without two finite steps that grow with the rate (or one finite step)."""
    points = sorted((math.log(lr), math.log(s)) for lr, s in steps.items() if s)
    if not points:
        return None
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    if len(points) == 1 or np.any(np.diff(ys) <= 0):
        if len(points) > 1:
            return None  # steps that do not grow with the rate cannot be inverted
        return math.exp(xs[0] + (math.log(target) - ys[0]))
    t = math.log(target)
    if t < ys[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return math.exp(xs[0] + (t - ys[0]) / slope)
    if t > ys[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return math.exp(xs[-1] + (t - ys[-1]) / slope)
    return math.exp(float(np.interp(t, ys, xs)))


def suggest(
    steps: Mapping[str, Mapping[float, float | None]], learning_rates: Sequence[float]
) -> dict[str, list[float]]:
    """A per-algorithm learning-rate mapping with matching first steps: the reference
    algorithm keeps ``learning_rates`` and each other algorithm gets, position by position,
    the rate (to :data:`SUGGEST_DIGITS` digits) whose step equals the reference's there.
    A rate for which some algorithm has no finite answer is left out of every list."""
    reference = reference_algorithm(steps)
    ref_steps = steps[reference]
    mapping: dict[str, list[float]] = {algorithm: [] for algorithm in steps}
    for lr in learning_rates:
        target = ref_steps.get(lr)
        if not target:
            continue
        row = {a: lr if a == reference else rate_for_step(steps[a], target) for a in steps}
        if all(r is not None and math.isfinite(r) and r > 0 for r in row.values()):
            for algorithm, rate in row.items():
                assert rate is not None
                mapping[algorithm].append(float(lr) if algorithm == reference else _round(rate))
    return mapping


@dataclass(frozen=True)
class Verified:
    """A suggested mapping measured again: per reference rate, each algorithm's step
    divided by the reference's (within :data:`SUGGEST_FACTOR` when it matches)."""

    reference: str
    mapping: dict[str, list[float]]
    ratios: dict[str, list[float | None]]

    @property
    def matches(self) -> bool:
        """Whether every suggested rate's step is within SUGGEST_FACTOR of the reference's."""
        return all(
            r is not None and abs(math.log(r)) <= math.log(SUGGEST_FACTOR)
            for rs in self.ratios.values()
            for r in rs
        )


def verify(
    mapping: dict[str, list[float]],
    steps: Mapping[str, Mapping[float, float | None]],
    measured: Sequence[StepSize],
) -> Verified:
    """Compare the steps ``measured`` at the suggested ``mapping`` with the reference's."""
    reference = reference_algorithm(steps)
    again = steps_by_algorithm(measured)
    ref_rates = mapping[reference]
    ratios: dict[str, list[float | None]] = {}
    for algorithm, rates in mapping.items():
        if algorithm == reference:
            continue
        out: list[float | None] = []
        for lr_ref, lr in zip(ref_rates, rates, strict=True):
            s, r = again.get(algorithm, {}).get(lr), again.get(reference, {}).get(lr_ref)
            out.append(s / r if s and r else None)
        ratios[algorithm] = out
    return Verified(reference, mapping, ratios)
