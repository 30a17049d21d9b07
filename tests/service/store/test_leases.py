"""Leases of claimed sweeps: requeue when stalled, release, fail and finish."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from service.exceptions import InvalidTransition, LeaseLost
from service.store import queries
from service.store.claim import claim_sweep, register_worker, worker_heartbeat
from service.store.engine import session_scope
from service.store.leases import (
    fail_sweep,
    finish_sweep,
    release_sweep,
    requeue_stalled,
    set_ray_info,
    sweep_heartbeat,
)
from service.store.models import Sweep, utcnow
from service.store.status import SweepStatus, TrialStatus
from service.store.trials import finish_trial, mark_trials_running, unfinished_trials
from tests.utils.factories import add_sweep, fake_result, make_config, make_grid


def _worker(engine: Engine, host: str = "host") -> str:
    with session_scope(engine) as s:
        return register_worker(s, host)


def test_stalled_lease_is_requeued_and_finished_trials_stay(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,), learning_rates=(0.05,)))
    dead, alive = _worker(engine, "dead"), _worker(engine, "alive")
    assert claim_sweep(engine, dead) is not None
    with session_scope(engine) as s:
        todo = unfinished_trials(s, created.id)
        mark_trials_running(s, [t.id for t in todo], node_ip="10.0.0.1")
        finish_trial(s, todo[0].id, TrialStatus.succeeded, fake_result(), None)
    with session_scope(engine) as s:
        assert requeue_stalled(s, lease_timeout_s=60) == []  # heartbeat is fresh
        s.execute(update(Sweep).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    with session_scope(engine) as s:
        assert requeue_stalled(s, lease_timeout_s=60) == [created.id]
    with pytest.raises(LeaseLost), session_scope(engine) as s:
        sweep_heartbeat(s, created.id, dead)
    claimed = claim_sweep(engine, alive)
    assert claimed is not None and claimed.id == created.id
    with session_scope(engine) as s:
        again = unfinished_trials(s, created.id)
        assert [t.id for t in again] == [t.id for t in todo[1:]]
        assert all(t.attempts == 1 for t in again)
        mark_trials_running(s, [t.id for t in again])
        # The finished trial is never reopened, even if named again.
        assert mark_trials_running(s, [todo[0].id]) == 0
    with session_scope(engine) as s:
        assert [t.attempts for t in unfinished_trials(s, created.id)] == [2]
        with pytest.raises(LeaseLost):
            finish_sweep(s, created.id, dead)


def test_stalled_sweep_with_cancel_requested_ends_cancelled(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    w = _worker(engine)
    claim_sweep(engine, w)
    with session_scope(engine) as s:
        s.execute(
            update(Sweep).values(
                cancel_requested=True, heartbeat_at=utcnow() - timedelta(seconds=999)
            )
        )
    with session_scope(engine) as s:
        assert requeue_stalled(s, lease_timeout_s=1) == []
        assert queries.get_sweep(s, created.id).status == SweepStatus.cancelled


def test_release_and_fail_sweep(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    w = _worker(engine)
    claim_sweep(engine, w)
    with session_scope(engine) as s:
        todo = unfinished_trials(s, created.id)
        mark_trials_running(s, [todo[0].id])
        set_ray_info(s, created.id, "idem-sweep-1", "http://127.0.0.1:8265")
        worker_heartbeat(s, w)
        release_sweep(s, created.id, w)
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
        assert (sweep.status, sweep.claimed_by) == (SweepStatus.queued, None)
        assert sweep.ray_experiment == "idem-sweep-1"
        assert sweep.trials_by_status["pending"] == sweep.trial_count
    w2 = _worker(engine)
    claim_sweep(engine, w2)
    with session_scope(engine) as s:
        fail_sweep(s, created.id, "ray exploded")
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
        assert (sweep.status, sweep.error) == (SweepStatus.failed, "ray exploded")
        assert sweep.trials_by_status["failed"] == sweep.trial_count
        assert sweep.progress == 1.0
        with pytest.raises(InvalidTransition):
            fail_sweep(s, created.id, "again")


def test_finish_sweep_with_unfinished_trials_fails_it(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    w = _worker(engine)
    claim_sweep(engine, w)
    with session_scope(engine) as s:
        assert finish_sweep(s, created.id, w) == SweepStatus.failed
        assert "did not finish" in (queries.get_sweep(s, created.id).error or "")
