"""Issue 14's done-when, for real: a spec with a per-algorithm learning-rate mapping, two
data sources and two optimizers expands, runs through a worker on the shared local Ray,
and its report compares each dimension, paired by seed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.report import claims, load_report_data
from service.report.analysis import analyse
from service.settings import Settings
from service.spec import SweepSpec, expand_grid
from service.store.engine import session_scope
from tests.workers.conftest import add_sweep, sweep, trials
from workers.worker import Worker

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = {
    "name": "dimensions",
    "architectures": ["N1"],
    "algorithms": ["modified", "ordinary"],
    "learning_rates": {"modified": [0.02], "ordinary": [0.05]},
    "batches": [{"samples": 100, "batch_size": 50}],
    "data": ["gaussian-fresh", "gaussian-fixed"],
    "optimizers": ["sgd", "adam"],
    "seeds": 3,
    "epochs": 8,
    "eval_samples": 100,
}


def test_mapping_data_and_optimizers_run_and_pair_by_seed_in_the_report(
    ray_address: str, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    spec = SweepSpec.model_validate(SPEC)
    configs, _ = expand_grid(spec, settings)
    assert len(configs) == 2 * 2 * 2 * 3  # algorithms (one rate each) × data × optimizers × seeds
    spec_body = {k: v for k, v in SPEC.items() if k != "name"}
    sweep_id = add_sweep(engine, configs, name="dimensions", **spec_body)
    Worker(settings, engine, poll_s=0.2).run(once=True)

    assert sweep(engine, sweep_id).status == "succeeded"
    rows = trials(engine, sweep_id)
    assert {(r.algorithm, r.learning_rate) for r in rows} == {
        ("modified", 0.02),
        ("ordinary", 0.05),
    }
    assert {(r.data, r.optimizer) for r in rows} == {
        (d, o) for d in ("gaussian-fresh", "gaussian-fixed") for o in ("sgd", "adam")
    }
    assert all(r.status == "succeeded" for r in rows)

    with session_scope(engine, readonly=True) as session:
        data = load_report_data(session, sweep_id)
    answer = claims.claim_rows(analyse(data), data.threshold)
    by_dimension: dict[str, list[claims.ClaimRow]] = {}
    for row in answer:
        by_dimension.setdefault(row.question.dimension, []).append(row)
    # data: fresh vs fixed per algorithm (its own rate) per optimizer, both claims; and
    # optimizer: sgd vs adam per algorithm per data source, both claims.
    for dimension, (a, b) in {
        "data": ("gaussian-fresh", "gaussian-fixed"),
        "optimizer": ("sgd", "adam"),
    }.items():
        got = by_dimension[dimension]
        assert len(got) == 2 * 2 * 2, dimension  # algorithms × other dimension × claims
        for row in got:
            q = row.question
            assert (q.a, q.b) == (a, b)
            assert q.lr_a == q.lr_b == {"modified": 0.02, "ordinary": 0.05}[q.algorithm]
            assert [p.seed for p in q.pairs] == [0, 1, 2]
            assert all(p.a.algorithm == p.b.algorithm == q.algorithm for p in q.pairs)
            assert all(getattr(row.setting, dimension) == a for _ in q.pairs)
            assert row.result.pairs == 3
    # The algorithm rows are still there, and none pools across data or optimizer.
    algorithm_rows = by_dimension["algorithm"]
    assert algorithm_rows
    assert all({p.a.data for p in r.question.pairs} <= {r.setting.data} for r in algorithm_rows)
