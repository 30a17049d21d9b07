"""The note's two claims as rows of paired comparisons, answered by the comparison engine.

(a) "modified backprop finds as good or better solutions (idempotent error)" and
(b) "... in fewer epochs", for each setting and each comparison of two algorithms, asked
three ways (:class:`Way`):

- **equal_lr**: pairs by seed at the same learning rate, one row per learning rate both
  algorithms ran (a row's pairs are distinct seeds, so they are independent);
- **best_lr**: each algorithm's best learning rate (lowest median value; a missing value is
  the worst) chosen on the *selection seeds*, the lower half of the setting's seeds, and the
  comparison run on the *evaluation seeds*, the upper half, so no seed both chooses and
  judges. With fewer than :data:`MIN_SPLIT_SEEDS` seeds the row says it cannot be asked;
- **matched_step**: each learning rate of a against the learning rate of b whose median
  first-epoch ``update_norm`` is nearest, when within :data:`MATCH_FACTOR`; one row each.

Every row is one call of :func:`service.comparison.compare`; Holm's correction runs over
every row of one answer (one report, one ``/claims`` response). A row that holds with more
than :data:`NULL_MAP_SHARE` of a's winning pairs being runs of a that collapsed to the null
map *holds only via null maps*.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import median
from typing import Literal

from idemcore.calibrate import matched_pairs
from service import comparison
from service.comparison import Paired, Verdict
from service.report.analysis import Setting, SettingAnalysis
from service.report.kinds import Kind, classify
from service.store.records import TrialRecord

NULL_MAP_SHARE = 0.5  # more than this share of a's wins at the null map: "only via null maps"
MIN_SPLIT_SEEDS = 4  # best_lr needs two selection and two evaluation seeds at least
RESULT_STATUSES = ("succeeded", "diverged")  # runs that ended with a result
# (a, b) comparisons made when both algorithms are in a setting: the note's claim first.
COMPARISONS: tuple[tuple[str, str], ...] = (("modified", "ordinary"), ("m1", "ordinary"))


class Way(StrEnum):
    """How a claim is asked: which learning rates are paired."""

    equal_lr = "equal_lr"
    best_lr = "best_lr"
    matched_step = "matched_step"


@dataclass(frozen=True)
class Claim:
    """One of the note's claims: the metric it compares and what it says."""

    key: Literal["a", "b"]
    metric: str
    text: str


CLAIMS: tuple[Claim, ...] = (
    Claim("a", "idempotent_error", "as good or better idempotent error"),
    Claim("b", "epochs_to_threshold", "fewer epochs to the threshold"),
)


def value(trial: TrialRecord, metric: str) -> float | None:
    """The run's value as the engine reads it (none when it diverged or never reached)."""
    raw = getattr(trial, metric)
    return comparison.run_value(
        None if raw is None else float(raw), trial.status == "diverged", metric
    )


@dataclass(frozen=True)
class Pair:
    """Two runs that share everything but the algorithm (and maybe the learning rate)."""

    seed: int
    a: TrialRecord
    b: TrialRecord


def pair_by_seed(
    a_runs: Sequence[TrialRecord],
    b_runs: Sequence[TrialRecord],
    seeds: Collection[int] | None = None,
) -> list[Pair]:
    """Pairs of runs that ended with a result and share a seed (in ``seeds`` if given)."""
    b_by_seed = {t.seed: t for t in b_runs if t.status in RESULT_STATUSES}
    wanted = None if seeds is None else as_set(seeds)
    return [
        Pair(t.seed, t, b_by_seed[t.seed])
        for t in sorted(a_runs, key=lambda t: t.seed)
        if t.status in RESULT_STATUSES
        and t.seed in b_by_seed
        and (wanted is None or t.seed in wanted)
    ]


def as_set(seeds: Collection[int]) -> Collection[int]:
    """``seeds`` for membership tests in O(1): the split's seeds come as sorted tuples,
    and a test of each run against a tuple of half the seeds was quadratic (7 of the
    15 s of the claims at 100,000 trials)."""
    return seeds if isinstance(seeds, set | frozenset) else frozenset(seeds)


def best_lr(
    runs_by_lr: dict[float, list[TrialRecord]], metric: str, seeds: Collection[int]
) -> float | None:
    """The learning rate whose runs on ``seeds`` have the lowest median value (a missing
    value is the worst; ties: fewer missing values, then the smaller rate)."""

    chosen = as_set(seeds)

    def key(lr: float) -> tuple[float, int, float]:
        values = [
            math.inf if (v := value(t, metric)) is None else v
            for t in runs_by_lr[lr]
            if t.seed in chosen and t.status in RESULT_STATUSES
        ]
        if not values:
            return (math.inf, len(seeds) + 1, lr)
        return (median(values), sum(math.isinf(v) for v in values), lr)

    return min(runs_by_lr, key=key) if runs_by_lr else None


def split_seeds(seeds: Collection[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Selection seeds (the lower half, sorted) and evaluation seeds (the upper half)."""
    ordered = sorted(set(seeds))
    half = len(ordered) // 2
    return tuple(ordered[:half]), tuple(ordered[half:])


@dataclass(frozen=True)
class Question:
    """One row before the test: which pairs answer which claim, asked which way."""

    setting: Setting
    a: str
    b: str
    claim: Claim
    way: Way
    lr_a: float | None
    lr_b: float | None
    pairs: tuple[Pair, ...]
    selection_seeds: tuple[int, ...] | None = None
    evaluation_seeds: tuple[int, ...] | None = None
    askable: bool = True
    # "algorithm": a and b are algorithms. "data", "optimizer" or "init": a and b are two
    # values of that grid dimension, both run with ``algorithm`` (service.report.dimensions).
    dimension: str = "algorithm"
    algorithm: str | None = None


@dataclass(frozen=True)
class ClaimRow:
    """One row of the answer table (``GET /sweeps/{id}/claims`` returns these)."""

    question: Question
    result: Paired
    p_corrected: float | None
    verdict: Verdict
    null_map_share: float | None

    @property
    def setting(self) -> Setting:
        return self.question.setting


def _matched(sa: SettingAnalysis, a: str, b: str) -> list[tuple[float, float]]:
    """(lr_a, lr_b) pairs whose median first-epoch update norms agree within MATCH_FACTOR
    (idemcore.calibrate's rule, the one ``idem calibrate`` reports)."""
    steps_a = {lr: sa.steps.get((a, lr)) for lr in sa.learning_rates if sa.runs(a, lr)}
    steps_b = {lr: sa.steps.get((b, lr)) for lr in sa.learning_rates if sa.runs(b, lr)}
    return [(lr_a, lr_b) for lr_a, lr_b, _ in matched_pairs(steps_a, steps_b)]


def _question(
    sa: SettingAnalysis,
    a: str,
    b: str,
    claim: Claim,
    way: Way,
    lrs: tuple[float, float] | None,
    split: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> Question:
    """The pairs of a at ``lrs[0]`` and b at ``lrs[1]`` (on the evaluation seeds of
    ``split``); no learning rates: the question cannot be asked."""
    if lrs is None:
        return Question(sa.setting, a, b, claim, way, None, None, (), askable=False)
    lr_a, lr_b = lrs
    selection, evaluation = split if split else (None, None)
    pairs = pair_by_seed(sa.runs(a, lr_a), sa.runs(b, lr_b), evaluation)
    return Question(sa.setting, a, b, claim, way, lr_a, lr_b, tuple(pairs), selection, evaluation)


def questions(sa: SettingAnalysis, a: str, b: str) -> list[Question]:
    """Every question of one comparison in one setting, both claims, every way."""
    shared = [lr for lr in sa.learning_rates if sa.runs(a, lr) and sa.runs(b, lr)]
    split = split_seeds({t.seed for t in sa.trials if t.algorithm in (a, b)})
    lrs_a = {lr: sa.runs(a, lr) for lr in sa.learning_rates if sa.runs(a, lr)}
    lrs_b = {lr: sa.runs(b, lr) for lr in sa.learning_rates if sa.runs(b, lr)}
    out: list[Question] = []
    for claim in CLAIMS:
        out += [_question(sa, a, b, claim, Way.equal_lr, (lr, lr)) for lr in shared]
        best_a = best_lr(lrs_a, claim.metric, split[0])
        best_b = best_lr(lrs_b, claim.metric, split[0])
        honest = len(split[0]) + len(split[1]) >= MIN_SPLIT_SEEDS
        if honest and best_a is not None and best_b is not None:
            out.append(_question(sa, a, b, claim, Way.best_lr, (best_a, best_b), split))
        else:
            out.append(_question(sa, a, b, claim, Way.best_lr, None))
        out += [_question(sa, a, b, claim, Way.matched_step, m) for m in _matched(sa, a, b)]
    return out


def null_map_share(q: Question, result: Paired, threshold: float) -> float | None:
    """The share of a's winning pairs whose run of a ended at the null map."""
    wins = [p for p, s in zip(q.pairs, result.signs, strict=True) if s > 0]
    if not wins:
        return None
    return sum(classify(p.a, threshold) is Kind.null for p in wins) / len(wins)


def answer(qs: Sequence[Question], threshold: float) -> list[ClaimRow]:
    """Run the engine on every question; Holm over all of them; the verdicts."""
    results = [
        comparison.compare(
            [value(p.a, q.claim.metric) for p in q.pairs],
            [value(p.b, q.claim.metric) for p in q.pairs],
            q.claim.metric,
        )
        for q in qs
    ]
    corrected = comparison.holm(
        [r.p if q.askable else None for q, r in zip(qs, results, strict=True)]
    )
    rows = []
    for q, r, pc in zip(qs, results, corrected, strict=True):
        share = null_map_share(q, r, threshold)
        v = comparison.verdict(r, pc) if q.askable else Verdict.not_asked
        if v is Verdict.holds and share is not None and share > NULL_MAP_SHARE:
            v = Verdict.holds_via_null_maps
        rows.append(ClaimRow(q, r, pc, v, share))
    return rows


def claim_rows(settings: Sequence[SettingAnalysis], threshold: float) -> list[ClaimRow]:
    """The whole answer table: every setting, comparison, claim and way, in order; then
    the comparisons across the sweep's other dimensions (data, optimizer, init) where it
    has more than one value. One Holm family."""
    from service.report.dimensions import dimension_questions  # it builds on this module

    qs = [
        q
        for sa in settings
        for a, b in COMPARISONS
        if a in sa.algorithms and b in sa.algorithms
        for q in questions(sa, a, b)
    ]
    return answer(qs + dimension_questions(settings), threshold)
