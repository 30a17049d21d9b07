"""The report on a small real sweep: kinds, the claims (recounted independently), the page."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from service.comparison import Verdict
from service.report import ReportData, build_report, load_report_data, write_report
from service.report.analysis import SettingAnalysis, analyse, setting_of
from service.report.claims import ClaimRow, Way, claim_rows
from service.report.kinds import Kind, classify
from service.report.page import NULL_MAP_WARNING, num
from service.settings import Settings
from service.store.convert import trial_record, trial_row
from service.store.engine import session_scope
from service.store.models import Trial
from service.store.records import TrialRecord
from tests.service.report.conftest import StoredSweeps
from tests.utils.claims import check_claims_against_compare
from tests.utils.factories import make_config


@pytest.fixture(scope="module")
def paper(stored: StoredSweeps) -> ReportData:
    with session_scope(stored.engine) as session:
        return load_report_data(session, stored.paper)


@pytest.fixture(scope="module")
def settings(paper: ReportData) -> list[SettingAnalysis]:
    return analyse(paper)


@pytest.fixture(scope="module")
def rows(paper: ReportData, settings: list[SettingAnalysis]) -> list[ClaimRow]:
    return claim_rows(settings, paper.threshold)


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


def test_settings_split_architecture_batch_and_init(
    settings: list[SettingAnalysis], rows: list[ClaimRow]
) -> None:
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
    mine = [r.question for r in rows if r.setting == full_default.setting]
    compared = [(q.a, q.b) for q in mine if q.dimension == "algorithm"]
    assert list(dict.fromkeys(compared)) == [("modified", "ordinary"), ("m1", "ordinary")]
    # The two inits of the full batch are a grid dimension: compared per algorithm too.
    inits = {(q.a, q.b, q.algorithm) for q in mine if q.dimension == "init"}
    ortho = next(s for s in settings if s.setting.init == "orthogonal")
    both = [a for a in full_default.algorithms if a in ortho.algorithms]
    assert both and inits == {("default", "orthogonal", a) for a in both}


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
    """(pairs, a better, b better, ties), written out independently of the engine: errors
    floored at 1e-12 and tied within 1%; a diverged or never-reached run loses to any value;
    two of those tie."""
    a = b = tie = 0
    for ta, tb in pairs:
        va, vb = _value(ta, metric), _value(tb, metric)
        if metric == "idempotent_error":
            va, vb = max(va, 1e-12), max(vb, 1e-12)
        if va == vb or (
            metric == "idempotent_error"
            and math.isfinite(va)
            and math.isfinite(vb)
            and max(va, vb) <= 1.01 * min(va, vb) * (1 + 1e-12)
        ):
            tie += 1
        elif va < vb:
            a += 1
        else:
            b += 1
    return len(pairs), a, b, tie


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
            and t.init == s.setting.init
        }

    ra, rb = runs(a, lr_a), runs(b, lr_b)
    return [(ra[seed], rb[seed]) for seed in sorted(ra) if seed in rb]


def _check(row: ClaimRow, pairs: list[tuple[TrialRecord, TrialRecord]]) -> None:
    r = row.result
    got = (r.pairs, r.a_wins, r.b_wins, r.ties)
    assert got == _recount(pairs, row.question.claim.metric), row.question


def test_equal_lr_counts_match_an_independent_recount(
    paper: ReportData, settings: list[SettingAnalysis], rows: list[ClaimRow]
) -> None:
    checked = 0
    for s in settings:
        for row in rows:
            if row.setting != s.setting or row.question.way != Way.equal_lr:
                continue
            if row.question.dimension != "algorithm":  # the init rows: their own test
                continue
            q = row.question
            assert q.lr_a == q.lr_b and q.lr_a is not None
            pairs = _pairs(paper, s, q.a, q.lr_a, q.b, q.lr_a)
            assert len(pairs) == 3
            _check(row, pairs)
            checked += 1
    # settings x comparisons x learning rates x claims
    assert checked == (2 * 2 + 1) * 2 * 2


def test_best_lr_cannot_be_asked_with_three_seeds(rows: list[ClaimRow]) -> None:
    best = [r for r in rows if r.question.way == Way.best_lr]
    assert best and all(r.verdict is Verdict.not_asked for r in best)


def test_matched_step_uses_first_epoch_update_norm(
    paper: ReportData, settings: list[SettingAnalysis], rows: list[ClaimRow]
) -> None:
    for s in settings:
        for (alg, lr), step in s.steps.items():
            firsts = [paper.epochs[t.id][0].update_norm for t in s.runs(alg, lr)]
            expected = median(v for v in firsts if v is not None and v > 0)
            assert step == pytest.approx(expected)
        for row in rows:
            q = row.question
            if row.setting != s.setting or q.way != Way.matched_step:
                continue
            assert q.lr_a is not None and q.lr_b is not None
            ratio = s.steps[(q.a, q.lr_a)] / s.steps[(q.b, q.lr_b)]  # type: ignore[operator]
            assert 0.5 <= ratio <= 2.0
            _check(row, _pairs(paper, s, q.a, q.lr_a, q.b, q.lr_b))


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
    assert escape(NULL_MAP_WARNING) in html  # its "<" escaped by the template
    assert "A tiny idempotent error from the null map is not a success" in html
    assert "(a) as good or better idempotent error" in html
    assert "(b) fewer epochs to the threshold" in html
    for way in Way:
        assert f"<th>{way.value}</th>" in html
    for s in analyse(paper):
        assert s.setting.title() in html
    # the spec that produced the sweep, verbatim (escaped by the template's autoescape)
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
    from service.report.figures import CELL_POINTS, STRIPS, sample_runs, strip_figure

    one = setting_of(paper.trials[0])
    many = tuple(
        replace(t, id=t.id * 1000 + i, seed=t.seed * 1000 + i)
        for t in paper.trials
        if setting_of(t) == one
        for i in range(100)
    )
    algorithms = tuple(sorted({t.algorithm for t in many}))
    lrs = tuple(sorted({t.learning_rate for t in many}))
    big = SettingAnalysis(one, many, algorithms, lrs, {}, {}, {})
    runs = big.runs(algorithms[0], lrs[0])
    assert len(runs) == 300 > CELL_POINTS
    drawn = sample_runs(runs)
    assert len(drawn) == CELL_POINTS and drawn == sample_runs(runs)
    assert strip_figure([big], STRIPS["error_strip.png"], paper.threshold).startswith(b"\x89PNG")


class TableRows(HTMLParser):
    """The text of each cell of each row of the table with id ``table_id``."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows = table_id, False, []  # type: ignore[var-annotated]
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", self.table_id) in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def page_rows(html: str) -> list[list[str]]:
    parser = TableRows("claims")
    parser.feed(html)
    return [r for r in parser.rows if r]  # the header row has no <td>


@pytest.fixture(scope="module")
def api(stored: StoredSweeps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from service.app import create_app

    settings = Settings(database_url=stored.url, data_dir=tmp_path_factory.mktemp("data"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_page_renders_exactly_the_claims_endpoint(
    paper: ReportData, stored: StoredSweeps, api: TestClient
) -> None:
    report = build_report(paper)
    body = api.get(f"/sweeps/{stored.paper}/claims").json()
    assert body["count"] == len(body["data"]) == len(report.claims) > 0
    assert body["data"] == [r.model_dump(mode="json") for r in report.claims]
    shown = page_rows(report.html)
    assert len(shown) == body["count"]
    for cells, row in zip(shown, body["data"], strict=True):
        if row["dimension"] == "algorithm":
            assert cells[1] == f"{row['a']} vs {row['b']}"
        else:
            assert cells[1] == f"{row['dimension']}: {row['a']} vs {row['b']} ({row['algorithm']})"
        assert cells[2:4] == [f"({row['claim']})", row["way"]]
        assert cells[4:6] == [num(row["lr_a"], "g"), num(row["lr_b"], "g")]
        counts = [str(row["pairs"]), num(row["a_wins"], "d"), num(row["b_wins"], "d")]
        assert cells[7:11] == [*counts, str(row["ties"])]
        assert cells[11] == num(row["effect"], "+.3g")
        assert cells[12] == f"[{num(row['ci_low'], '+.3g')}, {num(row['ci_high'], '+.3g')}]"
        assert cells[13:15] == [num(row["p"], ".2g"), num(row["p_corrected"], ".2g")]
        assert cells[15] == row["verdict"]
        assert cells[16] == num(row["null_map_share"], ".0%")
        assert row["architecture"] in cells[0] and row["init"] in cells[0]
    verdicts = {row["verdict"] for row in body["data"]}
    assert verdicts <= {v.value for v in Verdict}


def test_compare_returns_the_claims_numbers_for_the_same_cell(
    stored: StoredSweeps, api: TestClient
) -> None:
    claims = api.get(f"/sweeps/{stored.paper}/claims").json()["data"]
    equal = [
        r
        for r in claims
        if r["way"] == "equal_lr"
        and r["a"] == "modified"
        and r["init"] in ("default", "orthogonal")
    ]
    key = ("architecture", "learning_rate", "samples", "batch_size", "init")
    assert check_claims_against_compare(api, stored.paper, equal, key) == len(equal) > 0


def test_setting_labels_an_init_with_its_gain_once() -> None:
    """The report's init label is TrialConfig.init_label (it once read
    'normal(std=0.2) gain=1.5×1.5': two label builders each added the gain)."""
    config = make_config(init="normal", init_std=0.2, gain=1.5)
    trial = trial_record(Trial(id=1, **trial_row(1, config)))
    setting = setting_of(trial)
    assert setting.init == config.init_label == "normal(std=0.2) gain=1.5"
    assert setting.title().count("1.5") == 1
    plain = trial_record(Trial(id=2, **trial_row(1, make_config(init="orthogonal"))))
    assert setting_of(plain).init == "orthogonal"
