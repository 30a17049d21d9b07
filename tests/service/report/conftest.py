"""A small real sweep for the report tests: real idemcore runs stored in a real store.

N1 with modified, ordinary and m1 at two learning rates, full and small batch, 3 seeds,
plus an orthogonal-init setting (which reaches real projections where the default init
collapses to the null map) and a fixed-data sweep (train vs held-out error). The learning
rate 1.0 makes some runs diverge. Built once per session (about 10 s on one core).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from idemcore.config import TrialConfig
from idemcore.train import Training
from tests.utils.factories import make_grid

EPOCHS = 50


@dataclass(frozen=True)
class StoredSweeps:
    """The database and the ids of the two sweeps in it."""

    url: str
    engine: Engine
    paper: int
    fixed: int


def _spec(name: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "architectures": ["N1"],
        "algorithms": ["modified", "ordinary", "m1"],
        "learning_rates": [0.1, 1.0],
        "batches": [{"samples": 200, "batch_size": 200}, {"samples": 200, "batch_size": 100}],
        "seeds": 3,
        "epochs": EPOCHS,
        "threshold": 1e-3,
    }
    spec.update(extra)
    return spec


def paper_configs() -> list[TrialConfig]:
    base = make_grid(
        algorithms=("modified", "ordinary", "m1"),
        learning_rates=(0.1, 1.0),
        batch_sizes=(200, 100),
        seeds=range(3),
        samples=200,
        epochs=EPOCHS,
    )
    ortho = make_grid(
        learning_rates=(0.1, 1.0),
        batch_sizes=(200,),
        seeds=range(3),
        samples=200,
        epochs=EPOCHS,
        init="orthogonal",
    )
    return base + ortho


def fixed_configs() -> list[TrialConfig]:
    return make_grid(
        learning_rates=(0.1,),
        seeds=(0, 1),
        samples=100,
        epochs=20,
        data="gaussian-fixed",
        eval_samples=100,
    )


def run_sweep(engine: Engine, name: str, spec: dict[str, Any], configs: list[TrialConfig]) -> int:
    """Create the sweep, train every trial with idemcore and store it as a worker would."""
    from service.store import sweeps
    from service.store.claim import claim_sweep, register_worker
    from service.store.engine import session_scope
    from service.store.leases import finish_sweep
    from service.store.status import TrialStatus
    from service.store.trials import finish_trial, mark_trials_running, unfinished_trials

    with session_scope(engine) as session:
        created = sweeps.create_sweep(session, name=name, spec=spec, trials=configs)
        worker = register_worker(session, "report-tests")
    claimed = claim_sweep(engine, worker)
    assert claimed is not None and claimed.id == created.id
    with session_scope(engine) as session:
        todo = unfinished_trials(session, created.id)
        mark_trials_running(session, [t.id for t in todo])
    for item in todo:
        run = Training(item.config)
        records = list(run.epochs())
        result = run.result()
        status = TrialStatus.diverged if result.diverged else TrialStatus.succeeded
        with session_scope(engine) as session:
            finish_trial(session, item.id, status, result, None, records)
    with session_scope(engine) as session:
        finish_sweep(session, created.id, worker)
    return created.id


@pytest.fixture(scope="session")
def stored(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoredSweeps]:
    """Two finished sweeps in a fresh SQLite store."""
    from service.store.engine import make_engine

    path = tmp_path_factory.mktemp("report") / "idem.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    paper = run_sweep(engine, "report-paper", _spec("report-paper"), paper_configs())
    fixed = run_sweep(
        engine,
        "report-fixed",
        _spec("report-fixed", data="gaussian-fixed", algorithms=["modified", "ordinary"]),
        fixed_configs(),
    )
    yield StoredSweeps(url, engine, paper, fixed)
    engine.dispose()
