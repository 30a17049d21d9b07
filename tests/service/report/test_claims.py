"""The claim rows on hand-made runs: the held-out best-lr split, the ways, Holm over the
table, verdicts decided by the test and the null-map qualification."""

from __future__ import annotations

import numpy as np
import pytest

from service.comparison import Verdict, holm
from service.report.analysis import Setting, SettingAnalysis
from service.report.claims import (
    MIN_SPLIT_SEEDS,
    NULL_MAP_SHARE,
    Way,
    best_lr,
    claim_rows,
    pair_by_seed,
    questions,
    split_seeds,
)
from service.store.records import TrialRecord
from service.store.status import TrialStatus
from tests.utils.factories import make_trial_record

SETTING = Setting("N1", 200, 200, "gaussian-fresh", "default")
THRESHOLD = 1e-3


def run(
    alg: str,
    lr: float,
    seed: int,
    error: float | None,
    epochs: int | None = None,
    *,
    image_dim: float = 2.0,
    status: TrialStatus = TrialStatus.succeeded,
) -> TrialRecord:
    return make_trial_record(
        alg, lr, seed, error, status=status, epochs_to_threshold=epochs, image_dim=image_dim
    )


def analysis(
    trials: list[TrialRecord], steps: dict[tuple[str, float], float | None] | None = None
) -> SettingAnalysis:
    algorithms = tuple(sorted({t.algorithm for t in trials}))
    lrs = tuple(sorted({t.learning_rate for t in trials}))
    return SettingAnalysis(SETTING, tuple(trials), algorithms, lrs, {}, {}, steps or {})


def grid(
    errors: dict[tuple[str, float], list[float]], epochs: int | None = None
) -> list[TrialRecord]:
    return [
        run(alg, lr, seed, e, epochs)
        for (alg, lr), values in errors.items()
        for seed, e in enumerate(values)
    ]


@pytest.mark.parametrize("n", range(12))
def test_split_never_uses_a_seed_twice(n: int) -> None:
    rng = np.random.default_rng(n)
    seeds = {int(s) for s in rng.choice(1000, size=n, replace=False)}
    selection, evaluation = split_seeds(seeds)
    assert not set(selection) & set(evaluation)
    assert set(selection) | set(evaluation) == seeds
    assert len(evaluation) - len(selection) in (0, 1)
    assert all(s < e for s in selection for e in evaluation)


def test_best_lr_is_chosen_on_selection_seeds_and_compared_on_evaluation_seeds() -> None:
    # a's lr 0.1 is best on seeds 0-4 and lr 0.5 on seeds 5-9: selection must say 0.1
    a_01 = [1e-5] * 5 + [1e-2] * 5
    a_05 = [1e-3] * 5 + [1e-7] * 5
    b = [1e-4] * 10
    trials = grid({("modified", 0.1): a_01, ("modified", 0.5): a_05, ("ordinary", 0.1): b})
    trials += grid({("ordinary", 0.5): [1e-1] * 10})
    best = [q for q in questions(analysis(trials), "modified", "ordinary") if q.way == Way.best_lr]
    assert len(best) == 2  # one per claim
    q = best[0]
    assert q.selection_seeds == (0, 1, 2, 3, 4) and q.evaluation_seeds == (5, 6, 7, 8, 9)
    assert (q.lr_a, q.lr_b) == (0.1, 0.1)
    assert [p.seed for p in q.pairs] == [5, 6, 7, 8, 9]
    for question in best:
        assert question.selection_seeds is not None and question.evaluation_seeds is not None
        assert not set(question.selection_seeds) & set(question.evaluation_seeds)
        assert {p.seed for p in question.pairs} <= set(question.evaluation_seeds)


def test_fewer_than_four_seeds_cannot_be_asked_honestly() -> None:
    seeds = MIN_SPLIT_SEEDS - 1
    trials = grid({("modified", 0.1): [1e-5] * seeds, ("ordinary", 0.1): [1e-3] * seeds})
    rows = claim_rows([analysis(trials)], THRESHOLD)
    best = [r for r in rows if r.question.way == Way.best_lr]
    assert [r.verdict for r in best] == [Verdict.not_asked] * 2
    assert all(r.p_corrected is None and r.result.pairs == 0 for r in best)
    equal = [r for r in rows if r.question.way == Way.equal_lr]
    assert all(r.result.pairs == seeds for r in equal)


def test_clear_effects_are_decided_and_holm_covers_the_whole_table() -> None:
    n = 20
    rng = np.random.default_rng(5)
    trials = grid(
        {
            ("modified", 0.1): list(10 ** rng.uniform(-6, -5, n)),
            ("ordinary", 0.1): list(10 ** rng.uniform(-4, -3, n)),
            ("modified", 0.5): list(10 ** rng.uniform(-3, -2, n)),
            ("ordinary", 0.5): list(10 ** rng.uniform(-6, -5, n)),
        }
    )
    rows = claim_rows([analysis(trials)], THRESHOLD)
    assert holm([r.result.p for r in rows]) == [r.p_corrected for r in rows]
    by = {(r.question.claim.key, r.question.way, r.question.lr_a): r for r in rows}
    assert by[("a", Way.equal_lr, 0.1)].verdict is Verdict.holds
    assert by[("a", Way.equal_lr, 0.5)].verdict is Verdict.fails
    assert by[("a", Way.best_lr, 0.1)].question.lr_b == 0.5
    # epochs: no run has one, so every pair is a tie: nothing is shown
    assert by[("b", Way.equal_lr, 0.1)].verdict is Verdict.no_difference
    assert by[("b", Way.equal_lr, 0.1)].result.ties == n


def test_holds_only_via_null_maps_when_most_wins_are_collapses() -> None:
    n = 12
    trials = [run("modified", 0.1, s, 1e-9, image_dim=0.0 if s < 9 else 2.0) for s in range(n)]
    trials += [run("ordinary", 0.1, s, 1e-4) for s in range(n)]
    rows = claim_rows([analysis(trials)], THRESHOLD)
    row = next(r for r in rows if r.question.way == Way.equal_lr and r.question.claim.key == "a")
    assert row.null_map_share == pytest.approx(9 / 12)
    assert row.null_map_share is not None and row.null_map_share > NULL_MAP_SHARE
    assert row.verdict is Verdict.holds_via_null_maps


def test_matched_step_pairs_rates_whose_first_steps_agree() -> None:
    trials = grid(
        {
            ("modified", 0.1): [1e-5] * 4,
            ("modified", 0.5): [1e-5] * 4,
            ("ordinary", 0.1): [1e-4] * 4,
            ("ordinary", 0.5): [1e-4] * 4,
        }
    )
    steps: dict[tuple[str, float], float | None] = {
        ("modified", 0.1): 0.25,
        ("modified", 0.5): 1.25,
        ("ordinary", 0.1): 0.05,
        ("ordinary", 0.5): 0.26,
    }
    qs = questions(analysis(trials, steps), "modified", "ordinary")
    matched = [(q.lr_a, q.lr_b) for q in qs if q.way == Way.matched_step and q.claim.key == "a"]
    assert matched == [(0.1, 0.5)]  # 1.25 has no partner within a factor of 2


def test_diverged_and_never_reached_runs_stay_in_the_test() -> None:
    n = 10
    trials = [run("modified", 0.1, s, 1e-5, epochs=20 + s) for s in range(n)]
    trials += [
        run("ordinary", 0.1, s, None, None, status=TrialStatus.diverged) for s in range(n - 2)
    ]
    trials += [run("ordinary", 0.1, s, 1e-4, 60) for s in range(n - 2, n)]
    rows = claim_rows([analysis(trials)], THRESHOLD)
    for key in ("a", "b"):
        row = next(
            r for r in rows if r.question.way == Way.equal_lr and r.question.claim.key == key
        )
        assert row.result.pairs == n and row.result.a_wins == n
        assert row.verdict is Verdict.holds


class CountedSeeds(tuple[int, ...]):
    """Seeds that count the membership tests asked of them (``in``)."""

    asked = 0

    def __contains__(self, seed: object) -> bool:
        CountedSeeds.asked += 1
        return super().__contains__(seed)


def test_seed_subsets_are_looked_up_in_a_set_not_scanned_per_run() -> None:
    """best_lr and pair_by_seed test each run's seed against the split's seeds, which come
    as sorted tuples: a scan of the tuple per run made the claims quadratic (7 of 15 s at
    100,000 trials). They build a set once: the tuple is never asked per run, and the
    answers are those of the set."""
    a = grid({("modified", 0.1): [1e-5] * 6 + [1e-2] * 6, ("modified", 0.5): [1e-3] * 12})
    b = grid({("ordinary", 0.1): [1e-4] * 12})
    seeds = CountedSeeds(range(6, 12))
    by_lr = {0.1: a[:12], 0.5: a[12:]}
    assert best_lr(by_lr, "idempotent_error", seeds) == 0.5
    assert best_lr(by_lr, "idempotent_error", set(seeds)) == 0.5
    pairs = pair_by_seed(a[:12], b, seeds)
    assert pairs == pair_by_seed(a[:12], b, set(seeds))
    assert [p.seed for p in pairs] == list(range(6, 12))
    assert CountedSeeds.asked == 0
