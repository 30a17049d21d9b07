"""Questions across the grid's other dimensions on hand-made runs: which runs pair, in
which order, and that they go through the same engine and Holm family as the algorithms."""

from __future__ import annotations

import itertools
from dataclasses import replace

from service.comparison import Verdict
from service.report.analysis import Setting, SettingAnalysis, setting_of
from service.report.claims import claim_rows
from service.report.dimensions import dimension_questions, levels
from service.store.records import TrialRecord
from tests.utils.factories import make_trial_record


def run(alg: str, lr: float, seed: int, data: str, optimizer: str, error: float) -> TrialRecord:
    return make_trial_record(
        alg, lr, seed, error, data=data, optimizer=optimizer, epochs_to_threshold=10
    )


def analyses(trials: list[TrialRecord]) -> list[SettingAnalysis]:
    groups: dict[Setting, list[TrialRecord]] = {}
    for t in trials:
        groups.setdefault(setting_of(t), []).append(t)
    return [
        SettingAnalysis(
            s,
            tuple(ts),
            tuple(sorted({t.algorithm for t in ts})),
            tuple(sorted({t.learning_rate for t in ts})),
            {},
            {},
            {},
        )
        for s, ts in groups.items()
    ]


RATES = {"modified": 0.02, "ordinary": 0.05}  # a per-algorithm mapping, one rate each
SEEDS = range(12)  # enough for the test to decide after Holm over every row


def sweep() -> list[TrialRecord]:
    """Grid order as expand_grid builds it: algorithm, data, optimizer, seed. Fixed data
    gives a tenth of fresh data's error for modified and the same for ordinary."""
    out = []
    for alg, data, opt, seed in itertools.product(
        RATES, ["gaussian-fresh", "gaussian-fixed"], ["sgd", "adam"], SEEDS
    ):
        base = 1e-3 * (seed + 1)
        error = base / 10 if (alg == "modified" and data == "gaussian-fixed") else base
        out.append(run(alg, RATES[alg], seed, data, opt, error))
    return out


def test_levels_follow_the_grid_order() -> None:
    settings = analyses(sweep())
    assert levels(settings, "data") == ["gaussian-fresh", "gaussian-fixed"]
    assert levels(settings, "optimizer") == ["sgd", "adam"]
    assert levels(settings, "init") == ["default"]


def test_each_dimension_pairs_runs_that_differ_only_there() -> None:
    qs = dimension_questions(analyses(sweep()))
    assert {q.dimension for q in qs} == {"data", "optimizer"}  # one init: no init rows
    for dimension, other in (("data", "optimizer"), ("optimizer", "data")):
        mine = [q for q in qs if q.dimension == dimension]
        # per algorithm (at its own rate) × value of the other dimension × 2 claims
        assert len(mine) == 2 * 2 * 2
        for q in mine:
            assert q.lr_a == q.lr_b == RATES[q.algorithm or ""]
            assert [p.seed for p in q.pairs] == list(SEEDS)
            for p in q.pairs:
                assert p.a.algorithm == p.b.algorithm == q.algorithm
                assert getattr(p.a, other) == getattr(p.b, other)
                assert (getattr(p.a, dimension), getattr(p.b, dimension)) == (q.a, q.b)


def test_dimension_rows_share_the_engine_and_the_holm_family() -> None:
    trials = sweep()
    rows = claim_rows(analyses(trials), threshold=1e-9)
    data_rows = [r for r in rows if r.question.dimension == "data" and r.question.claim.key == "a"]
    by_alg = {r.question.algorithm: r for r in data_rows if r.setting.optimizer == "sgd"}
    # fresh (a) vs fixed (b): modified's fixed-data errors are 10x lower in every pair,
    # ordinary's equal: the claim "fresh is as good or better" fails for modified only.
    assert by_alg["modified"].result.b_wins == len(SEEDS)
    assert by_alg["modified"].verdict is Verdict.fails
    assert by_alg["ordinary"].result.ties == len(SEEDS)
    assert by_alg["ordinary"].verdict is Verdict.no_difference
    # One Holm family over algorithm and dimension rows alike.
    assert rows[0].question.dimension == "algorithm"
    assert all(r.p_corrected is None or r.p_corrected >= r.result.p for r in rows)


def test_settings_differing_in_two_dimensions_do_not_pair() -> None:
    # Only (fresh, sgd) and (fixed, adam): no two settings differ in exactly one dimension.
    trials = [
        t
        for t in sweep()
        if (t.data, t.optimizer) in {("gaussian-fresh", "sgd"), ("gaussian-fixed", "adam")}
    ]
    assert dimension_questions(analyses(trials)) == []
    fresh = analyses(trials)[0].setting
    assert replace(fresh, data="gaussian-fixed") not in {s.setting for s in analyses(trials)}
