"""create_sweep (config columns, reuse, Idempotency-Key) and request_cancel."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from service.exceptions import DuplicateIdempotencyKey, NotFound, SweepFinished
from service.store import queries
from service.store.claim import claim_sweep, register_worker
from service.store.engine import session_scope
from service.store.leases import finish_sweep, sweep_heartbeat
from service.store.models import EpochMetric
from service.store.status import SweepStatus, TrialStatus
from service.store.sweeps import lookup_idempotency_key, request_cancel
from service.store.trials import mark_trials_running, unfinished_trials
from tests.utils.factories import add_sweep, make_config, make_grid, run_sweep_to_end


def test_create_sweep_stores_config_columns(engine: Engine) -> None:
    configs = make_grid(seeds=(0, 1))
    created = add_sweep(engine, configs, name="grid", spec={"a": 1}, priority=3)
    assert created.status == SweepStatus.queued
    assert created.trial_count == len(configs) == 8
    assert created.reused_trials == 0
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
        trials, total = queries.list_trials(s, created.id, limit=100)
    assert (sweep.name, sweep.priority, sweep.spec, sweep.trial_count) == ("grid", 3, {"a": 1}, 8)
    assert sweep.trials_by_status["pending"] == 8 and sweep.progress == 0.0
    assert sweep.created_at.tzinfo is not None
    assert total == 8
    by_hash = {c.config_hash(): c for c in configs}
    for t in trials:
        c = by_hash[t.config_hash]
        assert (t.architecture, t.algorithm, t.learning_rate, t.seed) == (
            c.architecture_name,
            c.algorithm,
            c.learning_rate,
            c.seed,
        )
        assert (t.samples, t.batch_size, t.data, t.init) == (
            c.samples,
            c.batch_size,
            c.data,
            c.init,
        )
        assert t.config == c.to_dict() and t.status == TrialStatus.pending


def test_identical_resubmission_reuses_everything(engine: Engine) -> None:
    configs = make_grid(seeds=(0,))
    first = add_sweep(engine, configs)
    with session_scope(engine) as s:
        worker = register_worker(s, "host")
    assert claim_sweep(engine, worker) is not None
    run_sweep_to_end(engine, first.id, worker, epochs=7)

    again = add_sweep(engine, configs)
    assert again.status == SweepStatus.succeeded
    assert again.reused_trials == again.trial_count == len(configs)
    assert claim_sweep(engine, worker) is None  # nothing to run
    with session_scope(engine) as s:
        old, _ = queries.list_trials(s, first.id)
        new, _ = queries.list_trials(s, again.id)
        old_by_hash = {t.config_hash: t for t in old}
        for t in new:
            src = old_by_hash[t.config_hash]
            assert t.status == TrialStatus.succeeded and t.reused_from == src.id
            assert t.idempotent_error == src.idempotent_error
            assert t.result == src.result and t.epochs_run == 7
            assert queries.trial_epochs(s, t.id) == queries.trial_epochs(s, src.id)
            assert len(queries.trial_epochs(s, t.id)) == 7
        # Reuse copies nothing into epoch_metric; a third generation points at the source.
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 7 * len(configs)
    third = add_sweep(engine, configs)
    with session_scope(engine) as s:
        trials, _ = queries.list_trials(s, third.id)
        assert {t.reused_from for t in trials} == {t.id for t in old}


def test_partial_reuse_leaves_new_trials_pending(engine: Engine) -> None:
    done = make_config(seed=0)
    first = add_sweep(engine, [done])
    with session_scope(engine) as s:
        worker = register_worker(s, "host")
    claim_sweep(engine, worker)
    run_sweep_to_end(engine, first.id, worker)
    second = add_sweep(engine, [done, make_config(seed=1)])
    assert (second.status, second.reused_trials) == (SweepStatus.queued, 1)
    with session_scope(engine) as s:
        todo = unfinished_trials(s, second.id)
    assert [t.config for t in todo] == [make_config(seed=1)]


def test_diverged_results_are_not_reused(engine: Engine) -> None:
    first = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        worker = register_worker(s, "host")
    claim_sweep(engine, worker)
    run_sweep_to_end(engine, first.id, worker, diverge=[0])
    assert add_sweep(engine, [make_config()]).reused_trials == 0


def test_idempotency_key_stores_first_response(engine: Engine) -> None:
    created = add_sweep(
        engine,
        [make_config()],
        idempotency_key="k1",
        response_for_key=lambda c: {"id": c.id, "hello": "world"},
    )
    with session_scope(engine) as s:
        assert lookup_idempotency_key(s, "k1") == {"id": created.id, "hello": "world"}
        assert lookup_idempotency_key(s, "nope") is None
    with pytest.raises(DuplicateIdempotencyKey):
        add_sweep(engine, [make_config()], idempotency_key="k1")
    with session_scope(engine) as s:
        _, total = queries.list_sweeps(s)
    assert total == 1  # the duplicate's sweep was rolled back with it


def test_cancel_queued_sweep_is_immediate(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    with session_scope(engine) as s:
        assert request_cancel(s, created.id) == SweepStatus.cancelled
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
        assert sweep.status == SweepStatus.cancelled and sweep.finished_at is not None
        assert sweep.trials_by_status["cancelled"] == sweep.trial_count
        with pytest.raises(SweepFinished):
            request_cancel(s, created.id)
        with pytest.raises(NotFound):
            request_cancel(s, 999_999)


def test_cancel_running_sweep_is_seen_at_heartbeat(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    with session_scope(engine) as s:
        worker = register_worker(s, "host")
    claim_sweep(engine, worker)
    with session_scope(engine) as s:
        todo = unfinished_trials(s, created.id)
        mark_trials_running(s, [todo[0].id])
        assert sweep_heartbeat(s, created.id, worker) is False
    with session_scope(engine) as s:
        assert request_cancel(s, created.id) == SweepStatus.running
    with session_scope(engine) as s:
        assert sweep_heartbeat(s, created.id, worker) is True
        assert finish_sweep(s, created.id, worker) == SweepStatus.cancelled
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
    assert sweep.status == SweepStatus.cancelled
    assert sweep.trials_by_status["cancelled"] == sweep.trial_count
