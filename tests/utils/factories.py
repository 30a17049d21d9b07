"""Factories shared by the tests: TrialConfigs, fake epoch records and trial results."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from idemcore.config import TrialConfig
from idemcore.train import EpochRecord, TrialResult

if TYPE_CHECKING:
    from service.store.records import TrialRecord

SMALL_SPEC: dict[str, Any] = {
    "name": "small",
    "architectures": ["N1"],
    "algorithms": ["modified", "ordinary"],
    "learning_rates": [0.05],
    "batches": [{"samples": 100, "batch_size": 100}],
    "seeds": 2,
    "epochs": 10,
}  # a valid sweep spec of 4 small trials (the POST /sweeps body)


def make_config(**overrides: Any) -> TrialConfig:
    """A small valid TrialConfig (N1, modified); keyword arguments override fields."""
    values: dict[str, Any] = {
        "architecture": "N1",
        "algorithm": "modified",
        "learning_rate": 0.05,
        "samples": 100,
        "batch_size": 100,
        "epochs": 20,
        "seed": 0,
    }
    values.update(overrides)
    return TrialConfig(**values)


def make_small_config(**overrides: Any) -> TrialConfig:
    """A tiny float64 run (64 samples in batches of 16, 5 epochs): fast, and exact enough
    to hold two implementations equal at 1e-9; keyword arguments override fields."""
    small = {"samples": 64, "batch_size": 16, "epochs": 5, "dtype": "float64"}
    return make_config(**{**small, **overrides})


def make_grid(
    *,
    architectures: Sequence[str] = ("N1",),
    algorithms: Sequence[str] = ("ordinary", "modified"),
    learning_rates: Sequence[float] = (0.01, 0.05),
    batch_sizes: Sequence[int] = (100,),
    seeds: Sequence[int] = (0, 1, 2),
    **common: Any,
) -> list[TrialConfig]:
    """The cartesian product of the given axes, as TrialConfigs."""
    samples = common.pop("samples", 100)
    return [
        make_config(
            architecture=arch,
            algorithm=alg,
            learning_rate=lr,
            batch_size=bs,
            samples=max(bs, samples),
            seed=seed,
            **common,
        )
        for arch, alg, lr, bs, seed in itertools.product(
            architectures, algorithms, learning_rates, batch_sizes, seeds
        )
    ]


def fake_epochs(n: int, *, start: int = 1, scale: float = 1.0) -> list[EpochRecord]:
    """``n`` epoch records numbered from ``start`` with deterministic, distinct values."""
    return [
        EpochRecord(
            epoch=e,
            idempotent_error=scale / e,
            loss=2.0 * scale / e,
            norm=1.0 + e / 1000,
            trace=float(e % 5),
            update_norm=0.1 / e,
            image_dim=float(min(e, 5)),
            train_idempotent_error=scale / (e + 1),
            seconds=0.001 * e,
        )
        for e in range(start, start + n)
    ]


def fake_result(
    *,
    idempotent_error: float | None = 1e-4,
    epochs_run: int = 20,
    epochs_to_threshold: int | None = 10,
    diverged: bool = False,
    **overrides: Any,
) -> TrialResult:
    """A TrialResult with plausible values (eigenvalues included)."""
    values: dict[str, Any] = {
        "idempotent_error": idempotent_error,
        "train_idempotent_error": idempotent_error,
        "loss": 0.5,
        "norm": 2.0,
        "trace": 2.0,
        "update_norm": 1e-3,
        "image_dim": 2.0,
        "epochs_to_threshold": epochs_to_threshold,
        "epochs_run": epochs_run,
        "diverged": diverged,
        "wall_seconds": 0.25,
        "eigenvalues": [(1.0, 0.0), (0.0, 0.0)],
        "eig_near_zero": 1,
        "eig_near_one": 1,
        "wb_norm": 0.0,
    }
    values.update(overrides)
    return TrialResult(**values)


def add_sweep(engine: Any, configs: Sequence[TrialConfig], **kwargs: Any) -> Any:
    """Create a sweep of ``configs`` in its own transaction; returns the SweepCreated."""
    from service.store.engine import session_scope
    from service.store.sweeps import create_sweep

    kwargs.setdefault("name", "test sweep")
    kwargs.setdefault("spec", {"configs": len(configs)})
    kwargs.setdefault("priority", 0)
    with session_scope(engine) as session:
        return create_sweep(session, trials=list(configs), **kwargs)


def run_sweep_to_end(
    engine: Any, sweep_id: int, worker_id: str, *, epochs: int = 5, diverge: Sequence[int] = ()
) -> None:
    """Play a worker: every unfinished trial succeeds (or diverges if its index is in
    ``diverge``) with ``epochs`` fake epoch rows, then the sweep finishes."""
    from service.store.engine import session_scope
    from service.store.leases import finish_sweep
    from service.store.status import TrialStatus
    from service.store.trials import finish_trial, mark_trials_running, unfinished_trials

    with session_scope(engine) as s:
        todo = unfinished_trials(s, sweep_id)
        mark_trials_running(s, [t.id for t in todo], node_ip="127.0.0.1")
    for i, t in enumerate(todo):
        bad = i in diverge
        status = TrialStatus.diverged if bad else TrialStatus.succeeded
        result = fake_result(
            idempotent_error=None if bad else 1e-4 * (1 + t.config.seed),
            epochs_run=epochs,
            epochs_to_threshold=None if bad else 3,
            diverged=bad,
        )
        with session_scope(engine) as s:
            finish_trial(s, t.id, status, result, None, fake_epochs(epochs))
    with session_scope(engine) as s:
        finish_sweep(s, sweep_id, worker_id)


_record_ids = itertools.count(1)


def make_trial_record(
    algorithm: str, learning_rate: float, seed: int, error: float | None, **overrides: Any
) -> TrialRecord:
    """A stored trial as the store returns it, for report tests that need no database: a
    succeeded N1 run of ``algorithm`` at ``learning_rate`` and ``seed`` whose final
    idempotent error is ``error`` (fresh id, the other metrics None but ``image_dim`` 2),
    with ``overrides``."""
    from service.store.records import TrialRecord
    from service.store.status import TrialStatus

    fields: dict[str, Any] = dict.fromkeys(TrialRecord.__dataclass_fields__)
    fields.update(
        id=next(_record_ids),
        sweep_id=1,
        status=TrialStatus.succeeded,
        architecture="N1",
        algorithm=algorithm,
        learning_rate=learning_rate,
        samples=200,
        batch_size=200,
        seed=seed,
        data="gaussian-fresh",
        init="default",
        optimizer="sgd",
        config={"architecture": "N1"},
        config_hash="x",
        attempts=1,
        idempotent_error=error,
        image_dim=2.0,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    fields.update(overrides)
    return TrialRecord(**fields)
