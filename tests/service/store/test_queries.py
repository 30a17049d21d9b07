"""SQL aggregates checked against Python's statistics on the same stored values."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from sqlalchemy import Engine

from service.exceptions import InvalidQuery, NotFound
from service.store import queries
from service.store.claim import claim_sweep, register_worker
from service.store.curves import epoch_curves
from service.store.engine import session_scope
from service.store.leases import finish_sweep
from service.store.results import compare_rows, summary
from service.store.status import SweepStatus, TrialStatus
from service.store.trials import finish_trial, unfinished_trials
from tests.utils.factories import add_sweep, fake_epochs, fake_result, make_grid

# idempotent_error per trial index; index 5 diverges, index 6 never reaches threshold.
VALUES = [0.5, 0.1, 0.3, 0.9, 0.2, None, 0.4, 0.7, 0.6, 0.8, 0.25, 0.35]


@pytest.fixture
def finished(engine: Engine) -> int:
    """A finished sweep of 12 trials (2 algorithms × 2 lrs × 3 seeds) with known values."""
    created = add_sweep(engine, make_grid(seeds=(0, 1, 2)))
    with session_scope(engine) as s:
        w = register_worker(s, "h")
    claim_sweep(engine, w)
    with session_scope(engine) as s:
        todo = unfinished_trials(s, created.id)
    for i, t in enumerate(todo):
        bad = VALUES[i] is None
        result = fake_result(
            idempotent_error=VALUES[i],
            epochs_to_threshold=None if bad or i == 6 else 4,
            diverged=bad,
            epochs_run=6,
        )
        status = TrialStatus.diverged if bad else TrialStatus.succeeded
        with session_scope(engine) as s:
            finish_trial(s, t.id, status, result, None, fake_epochs(6, scale=i + 1))
    with session_scope(engine) as s:
        assert finish_sweep(s, created.id, w) == SweepStatus.succeeded
    return created.id


def _expected(engine: Engine, sweep_id: int, by: list[str]) -> dict[tuple, list]:
    with session_scope(engine) as s:
        trials, _ = queries.list_trials(s, sweep_id, limit=1000)
    groups: dict[tuple, list] = {}
    for t in trials:
        groups.setdefault(tuple(getattr(t, f) for f in by), []).append(t)
    return groups


def test_summary_matches_python_statistics(engine: Engine, finished: int) -> None:
    by = ["algorithm", "learning_rate"]
    with session_scope(engine) as s:
        rows = summary(s, finished, by=by, metric="idempotent_error")
    expected = _expected(engine, finished, by)
    assert [tuple(r.group.values()) for r in rows] == sorted(expected)
    for row in rows:
        trials = expected[tuple(row.group.values())]
        ok = [t.idempotent_error for t in trials if t.status == TrialStatus.succeeded]
        assert row.n == len(ok)
        assert row.mean == pytest.approx(statistics.mean(ok))
        assert row.std == pytest.approx(statistics.stdev(ok) if len(ok) > 1 else None)
        assert row.median == pytest.approx(statistics.median(ok))
        assert (row.min, row.max) == (pytest.approx(min(ok)), pytest.approx(max(ok)))
        assert row.diverged == sum(t.status == TrialStatus.diverged for t in trials)
        assert row.never == sum(t.epochs_to_threshold is None for t in trials)
    assert sum(r.diverged for r in rows) == 1 and sum(r.never for r in rows) == 2


def test_summary_at_an_epoch_and_ungrouped(engine: Engine, finished: int) -> None:
    with session_scope(engine) as s:
        (row,) = summary(s, finished, by=[], metric="loss", epoch=2)
    # fake_epochs(scale=i+1): loss at epoch 2 is (i+1); the diverged trial (i=5) is left out.
    ok = [float(i + 1) for i in range(12) if i != 5]
    assert row.group == {} and row.n == 11
    assert row.mean == pytest.approx(statistics.mean(ok))
    assert row.std == pytest.approx(statistics.stdev(ok))
    assert row.median == pytest.approx(statistics.median(ok))


def test_compare_pairs_trials_differing_only_in_algorithm(engine: Engine, finished: int) -> None:
    with session_scope(engine) as s:
        rows = compare_rows(s, finished, a="modified", b="ordinary", metric="idempotent_error")
        by_id = {t.id: t for t in queries.list_trials(s, finished, limit=100)[0]}
    assert len(rows) == 6
    for r in rows:
        ta, tb = by_id[r.a_trial_id], by_id[r.b_trial_id]
        assert (ta.algorithm, tb.algorithm) == ("modified", "ordinary")
        assert (
            (ta.learning_rate, ta.seed)
            == (tb.learning_rate, tb.seed)
            == (
                r.group["learning_rate"],
                r.seed,
            )
        )
        assert (r.a_value, r.b_value) == (ta.idempotent_error, tb.idempotent_error)
        assert (r.a_status, r.b_status) == (ta.status, tb.status)


def test_epoch_curves(engine: Engine, finished: int) -> None:
    with session_scope(engine) as s:
        points = epoch_curves(s, finished, by=["algorithm"], metric="loss", stride=2)
    assert [(p.group["algorithm"], p.epoch) for p in points] == [
        (alg, e) for alg in ("modified", "ordinary") for e in (1, 3, 5)
    ]
    # trials 0-5 are ordinary... order follows make_grid: algorithms outermost.
    ordinary = [2.0 * (i + 1) / 3 for i in range(6) if i != 5]
    p = next(p for p in points if p.group["algorithm"] == "ordinary" and p.epoch == 3)
    assert p.n == 5
    assert p.mean == pytest.approx(statistics.mean(ordinary))
    assert p.std == pytest.approx(statistics.stdev(ordinary))


def test_listing_filters_and_pages(engine: Engine, finished: int) -> None:
    add_sweep(engine, make_grid(seeds=(7,)), name="second")  # new configs: queued
    with session_scope(engine) as s:
        sweeps, total = queries.list_sweeps(s, limit=1)
        assert total == 2 and [x.name for x in sweeps] == ["second"]
        done, n_done = queries.list_sweeps(s, status="succeeded")
        assert n_done == 1 and done[0].id == finished and done[0].progress == 1.0
        trials, total = queries.list_trials(
            s, finished, filters={"algorithm": "modified", "seed": [0, 1]}, limit=3, offset=1
        )
        assert total == 4 and len(trials) == 3
        assert all(t.algorithm == "modified" and t.seed in (0, 1) for t in trials)
        _, n_div = queries.list_trials(s, finished, filters={"status": "diverged"})
        assert n_div == 1


def test_unknown_names_are_refused(engine: Engine, finished: int) -> None:
    with session_scope(engine) as s:
        with pytest.raises(InvalidQuery):
            summary(s, finished, by=["algorithm; drop table trial"], metric="loss")
        with pytest.raises(InvalidQuery):
            summary(s, finished, by=["algorithm"], metric="config")
        with pytest.raises(InvalidQuery):
            summary(s, finished, by=[], metric="epochs_run", epoch=3)
        with pytest.raises(InvalidQuery):
            queries.list_trials(s, finished, filters={"config_hash": "x"})
        with pytest.raises(NotFound):
            queries.get_sweep(s, 10_000)
        with pytest.raises(NotFound):
            queries.get_trial(s, 10_000)


def test_epoch_curves_several_fields_no_fields_and_reuse(engine: Engine, finished: int) -> None:
    """Curves group and order by every field, work ungrouped, and a fully reused sweep
    (no epoch rows of its own) has the same curves as the sweep it reuses."""
    by = ["learning_rate", "algorithm"]
    with session_scope(engine) as s:
        trials, _ = queries.list_trials(s, finished, limit=1000)
        rows = {t.id: queries.trial_epochs(s, t.id) for t in trials}
        points = epoch_curves(s, finished, by=by, metric="loss")
        flat = epoch_curves(s, finished, by=[], metric="loss", stride=4)
    ok = [t for t in trials if t.status == TrialStatus.succeeded]
    want: dict[tuple, list[float]] = {}
    for t in ok:
        for r in rows[t.id]:
            assert r.loss is not None
            want.setdefault((t.learning_rate, t.algorithm, r.epoch), []).append(r.loss)
    assert [(*p.group.values(), p.epoch) for p in points] == sorted(want)
    for p in points:
        values = want[(*p.group.values(), p.epoch)]
        assert p.n == len(values)
        assert p.mean == pytest.approx(statistics.mean(values))
        assert p.std == pytest.approx(statistics.stdev(values))
    assert [(p.group, p.epoch) for p in flat] == [({}, 1), ({}, 5)]
    first = [r.loss for t in ok for r in rows[t.id] if r.epoch == 1]
    assert flat[0].n == len(first) and flat[0].mean == pytest.approx(statistics.mean(first))

    again = add_sweep(engine, make_grid(seeds=(0, 1, 2)))
    assert again.reused_trials == len(ok)
    with session_scope(engine) as s:
        reused = epoch_curves(s, again.id, by=by, metric="loss")
    assert [(p.group, p.epoch, p.n) for p in reused] == [(p.group, p.epoch, p.n) for p in points]
    assert [p.mean for p in reused] == pytest.approx([p.mean for p in points])


def test_sweep_trials_reads_plain_rows_equal_to_the_orm_records(
    engine: Engine, finished: int
) -> None:
    """The report's whole-sweep read builds its records from plain rows in one SELECT (no
    ORM objects: at 100,000 trials they doubled its time and memory) and, without the
    result, never names that column; the records are those of the ORM path, field for
    field (the result None when left out); it and the curves' read stream their rows."""

    from dataclasses import replace

    from sqlalchemy import event

    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, *_: Any) -> None:
        statements.append((statement, context.execution_options))

    with session_scope(engine) as s:
        orm, _ = queries.list_trials(s, finished, limit=1000)
        assert queries.sweep_trials(s, finished) == orm
        assert all(t.result is not None for t in orm)
        event.listen(engine, "before_cursor_execute", seen)
        try:
            light = queries.sweep_trials(s, finished, with_result=False)
            queries.sweep_epochs(s, finished)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert light == [replace(t, result=None) for t in orm]
    (read, options) = next(q for q in statements if "trial.config" in q[0])
    assert "trial.result" not in read
    # both whole-sweep reads stream their rows (a server-side cursor on PostgreSQL)
    (_, epoch_options) = next(q for q in statements if "FROM trial JOIN epoch_metric" in q[0])
    assert options["yield_per"] == epoch_options["yield_per"] == queries.READ_BATCH


def test_keyset_pages_read_the_index_in_id_order_without_sorting(
    engine: Engine, finished: int, backend: str
) -> None:
    """A page by ``after_id`` is read from the (sweep_id, id) index in order: no sort of
    the sweep's trials per page, so the last page of 100,000 costs what the first does."""
    from sqlalchemy import event, text

    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "ORDER BY trial.id" in statement and "LIMIT" in statement:
            statements.append((statement, parameters))

    with session_scope(engine) as s:
        event.listen(engine, "before_cursor_execute", seen)
        try:
            trials, _ = queries.list_trials(s, finished, limit=3, after_id=1)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert [t.id for t in trials] == [2, 3, 4]
        ((statement, parameters),) = statements
        if backend == "sqlite":
            raw = s.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = " ".join(str(row[-1]) for row in raw)
            assert "ix_trial_sweep_id" in plan and "TEMP B-TREE" not in plan, plan
        else:
            s.execute(text("SET LOCAL enable_seqscan = off"))
            raw = s.connection().exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plan = " ".join(str(row[0]) for row in raw)
            assert "ix_trial_sweep_id" in plan and "Sort" not in plan, plan
