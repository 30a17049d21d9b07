"""The report on a small real sweep: kinds, the claims (recounted independently), the page."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from html import escape
from pathlib import Path
from statistics import median
from typing import Any

import pytest

from service.report import ReportData, build_report, load_report_data, write_report
from service.report.analysis import SettingAnalysis, analyse, init_label
from service.report.claims import Outcome
from service.report.kinds import Kind, classify
from service.report.page import NULL_MAP_WARNING
from service.store.engine import session_scope
from service.store.records import TrialRecord
from tests.service.report.conftest import StoredSweeps


@pytest.fixture(scope="module")
def paper(stored: StoredSweeps) -> ReportData:
    with session_scope(stored.engine) as session:
        return load_report_data(session, stored.paper)


@pytest.fixture(scope="module")
def settings(paper: ReportData) -> list[SettingAnalysis]:
    return analyse(paper)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (asserting the PNG signature)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_loads_every_trial_and_curve(paper: ReportData) -> None:
    assert len(paper.trials) == 48
    assert paper.sweep.status == "succeeded"
    for trial in paper.trials:
        rows = paper.epochs[trial.id]
        assert rows[0].epoch == 1
        assert rows[-1].epoch == trial.epochs_run


def test_settings_split_architecture_batch_and_init(settings: list[SettingAnalysis]) -> None:
    titles = [s.setting.title() for s in settings]
    assert len(titles) == 3
    assert {(s.setting.batch_size, s.setting.init) for s in settings} == {
        (200, "default"),
        (100, "default"),
        (200, "orthogonal"),
    }
    full_default = next(
        s for s in settings if s.setting.batch_size == 200 and s.setting.init == "default"
    )
    assert full_default.algorithms == ("modified", "ordinary", "m1")
    assert [(c.a, c.b) for c in full_default.comparisons] == [
        ("modified", "ordinary"),
        ("m1", "ordinary"),
    ]


def test_kinds_follow_image_dimension(paper: ReportData) -> None:
    threshold = paper.threshold
    kinds = {classify(t, threshold) for t in paper.trials}
    # the fixture is chosen to show all of these (default init collapses to the null map)
    assert {Kind.null, Kind.diverged, Kind.projection, Kind.unconverged} <= kinds
    for trial in paper.trials:
        kind = classify(trial, threshold)
        if trial.status == "diverged":
            assert kind is Kind.diverged
        elif trial.idempotent_error is None or trial.idempotent_error >= threshold:
            assert kind is Kind.unconverged
        elif trial.image_dim is not None and trial.image_dim < 0.5:
            assert kind is Kind.null
        elif trial.image_dim is not None and trial.image_dim > 4.5:
            assert kind is Kind.identity
        else:
            assert kind is Kind.projection


def _value(trial: TrialRecord, metric: str) -> float:
    if trial.status != "succeeded":
        return math.inf
    v = getattr(trial, metric)
    return math.inf if v is None else float(v)


def _recount(
    pairs: list[tuple[TrialRecord, TrialRecord]], metric: str
) -> tuple[int, int, int, int]:
    """(a better, b better, ties, undecided), written out independently of claims.py."""
    a = b = tie = undecided = 0
    for ta, tb in pairs:
        va, vb = _value(ta, metric), _value(tb, metric)
        if va == math.inf and vb == math.inf:
            undecided += 1
        elif va == vb or (
            metric == "idempotent_error"
            and (
                (va < 1e-12 and vb < 1e-12)
                or (va != math.inf and vb != math.inf and abs(va - vb) <= 0.01 * max(va, vb))
            )
        ):
            tie += 1
        elif va < vb:
            a += 1
        else:
            b += 1
    return a, b, tie, undecided


def _pairs(
    paper: ReportData, s: SettingAnalysis, a: str, lr_a: float, b: str, lr_b: float
) -> list[tuple[TrialRecord, TrialRecord]]:
    def runs(alg: str, lr: float) -> dict[int, TrialRecord]:
        return {
            t.seed: t
            for t in paper.trials
            if t.algorithm == alg
            and t.learning_rate == lr
            and t.batch_size == s.setting.batch_size
            and init_label(t) == s.setting.init
        }

    ra, rb = runs(a, lr_a), runs(b, lr_b)
    return [(ra[seed], rb[seed]) for seed in sorted(ra) if seed in rb]


def _check(outcome: Outcome, pairs: list[tuple[TrialRecord, TrialRecord]]) -> None:
    a, b, tie, undecided = _recount(pairs, outcome.metric)
    assert (outcome.pairs, outcome.a_wins, outcome.b_wins, outcome.ties, outcome.undecided) == (
        len(pairs),
        a,
        b,
        tie,
        undecided,
    )


def test_equal_lr_counts_match_an_independent_recount(
    paper: ReportData, settings: list[SettingAnalysis]
) -> None:
    checked = 0
    for s in settings:
        for comp in s.comparisons:
            for outcomes in (comp.error, comp.epochs):
                per_lr = [o for o in outcomes if o.mode == "lr"]
                assert len(per_lr) == len(s.learning_rates)
                pooled: list[tuple[TrialRecord, TrialRecord]] = []
                for lr, outcome in zip(s.learning_rates, per_lr, strict=True):
                    pairs = _pairs(paper, s, comp.a, lr, comp.b, lr)
                    assert len(pairs) == 3
                    _check(outcome, pairs)
                    pooled += pairs
                    checked += 1
                _check(next(o for o in outcomes if o.mode == "equal lr"), pooled)
    assert checked == 2 * (2 + 2 + 1) * 2


def test_best_lr_is_the_lowest_median(paper: ReportData, settings: list[SettingAnalysis]) -> None:
    for s in settings:
        for comp in s.comparisons:
            outcome = comp.headline("idempotent_error", "best lr")
            assert outcome is not None

            def med(alg: str, lr: float, s: SettingAnalysis = s) -> float:
                return median(_value(t, "idempotent_error") for t in s.runs(alg, lr))

            best_a = min(s.learning_rates, key=lambda lr: (med(comp.a, lr), lr))
            best_b = min(s.learning_rates, key=lambda lr: (med(comp.b, lr), lr))
            if med(comp.a, s.learning_rates[0]) == med(comp.a, s.learning_rates[1]):
                continue  # ties are broken by the count of infinite runs; not recomputed here
            assert f"{comp.a} at lr {best_a:g}" in outcome.label
            assert f"{comp.b} at lr {best_b:g}" in outcome.label
            _check(outcome, _pairs(paper, s, comp.a, best_a, comp.b, best_b))


def test_matched_step_uses_first_epoch_update_norm(
    paper: ReportData, settings: list[SettingAnalysis]
) -> None:
    for s in settings:
        for (alg, lr), step in s.steps.items():
            firsts = [paper.epochs[t.id][0].update_norm for t in s.runs(alg, lr)]
            expected = median(v for v in firsts if v is not None and v > 0)
            assert step == pytest.approx(expected)
        for comp in s.comparisons:
            outcome = comp.headline("idempotent_error", "matched step")
            assert outcome is not None
            for lr_a, lr_b in re.findall(r"([\d.e-]+)↔([\d.e-]+)", outcome.label):
                ratio = s.steps[(comp.a, float(lr_a))] / s.steps[(comp.b, float(lr_b))]  # type: ignore[operator]
                assert 0.5 <= ratio <= 2.0


def test_modified_and_m1_agree_on_n1(paper: ReportData) -> None:
    """M1 is modified backprop's special case for N1 (the note's Note 1): same runs."""
    by_key = {(t.algorithm, t.learning_rate, t.batch_size, t.seed, t.init): t for t in paper.trials}
    for (alg, lr, bs, seed, init), t in by_key.items():
        if alg == "m1":
            mod = by_key[("modified", lr, bs, seed, init)]
            assert classify(mod, paper.threshold) is classify(t, paper.threshold)


def test_page_answers_the_claims_and_warns_about_null_maps(
    paper: ReportData, tmp_path: Path
) -> None:
    report = build_report(paper)
    html = report.html
    assert NULL_MAP_WARNING in html
    assert "A tiny idempotent error from the null map is not a success" in html
    assert "(a) as good or better idempotent error" in html
    assert "(b) fewer epochs to the threshold" in html
    for mode in ("equal lr", "best lr", "matched step"):
        assert mode in html
    for s in analyse(paper):
        assert s.setting.title() in html
    # the spec that produced the sweep, verbatim
    assert escape(json.dumps(paper.sweep.spec, indent=2, sort_keys=True)) in html
    # self-contained: no script, nothing fetched from elsewhere
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(report.figures) == 4 + 3
    for data in embedded:
        width, height = png_size(base64.b64decode(data))
        assert width > 100 and height > 100

    page = write_report(report, tmp_path / "out")
    assert page.read_text(encoding="utf-8") == html
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([*report.figures, "index.html"])
    for name, data in report.figures.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_fixed_data_shows_train_vs_held_out(stored: StoredSweeps) -> None:
    with session_scope(stored.engine) as session:
        data = load_report_data(session, stored.fixed)
    html = build_report(data).html
    assert "Training-set vs held-out idempotent error" in html
    assert all(t.train_idempotent_error is not None for t in data.trials)


def test_report_data_is_read_in_a_few_queries_whatever_the_size(stored: StoredSweeps) -> None:
    """Set-based loading: the sweep, its trials and every curve in a handful of SQL
    statements, not one per trial (the paper sweep has 48 trials)."""
    from sqlalchemy import event

    from service.report import load_report_data
    from service.store.engine import session_scope

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(stored.engine, "before_cursor_execute", count)
    try:
        with session_scope(stored.engine, readonly=True) as session:
            data = load_report_data(session, stored.paper)
    finally:
        event.remove(stored.engine, "before_cursor_execute", count)
    assert len(data.trials) == 48 and len(data.epochs) == 48
    for trial in data.trials:
        rows = data.epochs[trial.id]
        assert [r.epoch for r in rows] == list(range(1, (trial.epochs_run or 0) + 1))
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 6, selects


def test_strips_of_thousands_of_runs_draw_a_bounded_seeded_sample(paper: ReportData) -> None:
    """2,400 runs in one setting (100 copies of each stored full-batch default-init run):
    each (algorithm, lr) group of a strip draws at most CELL_POINTS points, the same ones
    on every build, over a box of all of them."""
    from dataclasses import replace

    from service.report.analysis import setting_of
    from service.report.figures import CELL_POINTS, error_strip, sample_runs

    one = setting_of(paper.trials[0])
    many = tuple(
        replace(t, id=t.id * 1000 + i, seed=t.seed * 1000 + i)
        for t in paper.trials
        if setting_of(t) == one
        for i in range(100)
    )
    algorithms = tuple(sorted({t.algorithm for t in many}))
    lrs = tuple(sorted({t.learning_rate for t in many}))
    big = SettingAnalysis(one, many, algorithms, lrs, {}, {}, {}, ())
    runs = big.runs(algorithms[0], lrs[0])
    assert len(runs) == 300 > CELL_POINTS
    drawn = sample_runs(runs)
    assert len(drawn) == CELL_POINTS and drawn == sample_runs(runs)
    assert error_strip([big], paper.threshold).startswith(b"\x89PNG")
