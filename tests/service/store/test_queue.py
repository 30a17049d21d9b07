"""The worker side: claim order, leases, requeue, epoch batches, final states."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from service.exceptions import InvalidTransition, LeaseLost
from service.store import queries, queue
from service.store.engine import session_scope
from service.store.models import EpochMetric, Sweep, utcnow
from service.store.status import SweepStatus, TrialStatus
from tests.utils.factories import add_sweep, fake_epochs, fake_result, make_config, make_grid


def _worker(engine: Engine, host: str = "host") -> str:
    with session_scope(engine) as s:
        return queue.register_worker(s, host)


def test_claim_takes_highest_priority_then_oldest(engine: Engine) -> None:
    low = add_sweep(engine, [make_config()], priority=0)
    high_old = add_sweep(engine, [make_config()], priority=5)
    high_new = add_sweep(engine, [make_config()], priority=5)
    w = _worker(engine)
    order = [queue.claim_sweep(engine, w) for _ in range(4)]
    assert [c.id if c else None for c in order] == [high_old.id, high_new.id, low.id, None]
    first = order[0]
    assert first is not None and first.spec == {"configs": 1} and first.name == "test sweep"
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, high_old.id)
    assert sweep.status == SweepStatus.running and sweep.claimed_by == w
    assert sweep.heartbeat_at is not None and sweep.started_at is not None


def test_stalled_lease_is_requeued_and_finished_trials_stay(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,), learning_rates=(0.05,)))
    dead, alive = _worker(engine, "dead"), _worker(engine, "alive")
    assert queue.claim_sweep(engine, dead) is not None
    with session_scope(engine) as s:
        todo = queue.unfinished_trials(s, created.id)
        queue.mark_trials_running(s, [t.id for t in todo], node_ip="10.0.0.1")
        queue.finish_trial(s, todo[0].id, TrialStatus.succeeded, fake_result(), None)
    with session_scope(engine) as s:
        assert queue.requeue_stalled(s, lease_timeout_s=60) == []  # heartbeat is fresh
        s.execute(update(Sweep).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    with session_scope(engine) as s:
        assert queue.requeue_stalled(s, lease_timeout_s=60) == [created.id]
    with pytest.raises(LeaseLost), session_scope(engine) as s:
        queue.sweep_heartbeat(s, created.id, dead)
    claimed = queue.claim_sweep(engine, alive)
    assert claimed is not None and claimed.id == created.id
    with session_scope(engine) as s:
        again = queue.unfinished_trials(s, created.id)
        assert [t.id for t in again] == [t.id for t in todo[1:]]
        assert all(t.attempts == 1 for t in again)
        queue.mark_trials_running(s, [t.id for t in again])
        # The finished trial is never reopened, even if named again.
        assert queue.mark_trials_running(s, [todo[0].id]) == 0
    with session_scope(engine) as s:
        assert [t.attempts for t in queue.unfinished_trials(s, created.id)] == [2]
        with pytest.raises(LeaseLost):
            queue.finish_sweep(s, created.id, dead)


def test_stalled_sweep_with_cancel_requested_ends_cancelled(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    w = _worker(engine)
    queue.claim_sweep(engine, w)
    with session_scope(engine) as s:
        s.execute(
            update(Sweep).values(
                cancel_requested=True, heartbeat_at=utcnow() - timedelta(seconds=999)
            )
        )
    with session_scope(engine) as s:
        assert queue.requeue_stalled(s, lease_timeout_s=1) == []
        assert queries.get_sweep(s, created.id).status == SweepStatus.cancelled


def test_append_epochs_is_one_idempotent_batch(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = queue.unfinished_trials(s, created.id)
        assert queue.append_epochs(s, todo.id, fake_epochs(10)) == 10
    with session_scope(engine) as s:
        # A replayed, overlapping batch adds only the new epochs.
        assert queue.append_epochs(s, todo.id, fake_epochs(10, start=6)) == 5
        assert queue.append_epochs(s, todo.id, []) == 0
    with session_scope(engine) as s:
        rows = queries.trial_epochs(s, todo.id)
        assert [r.epoch for r in rows] == list(range(1, 16))
        assert rows[3].idempotent_error == pytest.approx(1 / 4)
        assert rows[3].train_idempotent_error == pytest.approx(1 / 5)
        assert [r.epoch for r in queries.trial_epochs(s, todo.id, stride=4)] == [1, 5, 9, 13, 15]


def test_replayed_batch_in_the_same_transaction_keeps_the_earlier_rows(engine: Engine) -> None:
    # On PostgreSQL the second batch's fast COPY hits the stored epochs 6..10 and its
    # savepoint is rolled back: the first batch, written earlier in the same
    # transaction, must survive that rollback and the fallback must add 11..15.
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = queue.unfinished_trials(s, created.id)
        assert queue.append_epochs(s, todo.id, fake_epochs(10)) == 10
        assert queue.append_epochs(s, todo.id, fake_epochs(10, start=6)) == 5
    with session_scope(engine) as s:
        assert [r.epoch for r in queries.trial_epochs(s, todo.id)] == list(range(1, 16))


def test_append_epochs_splits_huge_batches(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = queue.unfinished_trials(s, created.id)
        n = queue.EPOCH_ROWS_PER_STATEMENT * 2 + 7
        assert queue.append_epochs(s, todo.id, fake_epochs(n)) == n


def test_finish_trial_writes_rows_and_state_atomically(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = queue.unfinished_trials(s, created.id)
        queue.mark_trials_running(s, [todo.id], node_ip="10.1.2.3")
    # A crash inside the transaction leaves neither rows nor the final state.
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        queue.finish_trial(s, todo.id, TrialStatus.succeeded, fake_result(), None, fake_epochs(5))
        raise RuntimeError("worker died")
    with session_scope(engine) as s:
        assert queries.get_trial(s, todo.id).status == TrialStatus.running
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 0
    with session_scope(engine) as s:
        queue.finish_trial(
            s, todo.id, TrialStatus.succeeded, fake_result(epochs_run=5), None, fake_epochs(5)
        )
    with session_scope(engine) as s:
        t = queries.get_trial(s, todo.id)
        assert t.status == TrialStatus.succeeded and t.epochs_run == 5
        assert t.node_ip == "10.1.2.3" and t.attempts == 1 and t.finished_at is not None
        assert t.result is not None and t.result["eigenvalues"] == [[1.0, 0.0], [0.0, 0.0]]
        assert len(queries.trial_epochs(s, todo.id)) == 5
        with pytest.raises(InvalidTransition):
            queue.finish_trial(s, todo.id, TrialStatus.failed, None, "late")
        with pytest.raises(InvalidTransition):
            queue.finish_trial(s, todo.id, TrialStatus.succeeded, None, None)
        # A retried write of the same final state (lost commit reply) changes nothing.
        assert not queue.finish_trial(s, todo.id, TrialStatus.succeeded, None, None, repeat_ok=True)
        with pytest.raises(InvalidTransition):
            queue.finish_trial(s, todo.id, TrialStatus.failed, None, "late", repeat_ok=True)
        assert queries.get_trial(s, todo.id).epochs_run == 5
        with pytest.raises(InvalidTransition):
            queue.finish_trial(s, todo.id, TrialStatus.running, None, None)


def test_final_state_drops_rows_past_epochs_run(engine: Engine) -> None:
    """An earlier attempt stored epochs 1..8; the rerun stopped after 5 (diverged
    sooner): the final trial keeps exactly epochs 1..5, from the rerun."""
    created = add_sweep(engine, make_grid(seeds=(0,)))
    queue.claim_sweep(engine, _worker(engine))
    with session_scope(engine) as s:
        todo = queue.unfinished_trials(s, created.id)[0]
        queue.mark_trials_running(s, [todo.id])
        queue.append_epochs(s, todo.id, fake_epochs(8))
    with session_scope(engine) as s:
        queue.finish_trial(
            s,
            todo.id,
            TrialStatus.diverged,
            fake_result(epochs_run=5, diverged=True),
            None,
            fake_epochs(5, scale=2.0),
        )
    with session_scope(engine) as s:
        rows = queries.trial_epochs(s, todo.id)
        assert [r.epoch for r in rows] == [1, 2, 3, 4, 5]
        assert queries.get_trial(s, todo.id).epochs_run == 5
    with session_scope(engine) as s:  # a failed trial (no result) keeps what it had
        other = queue.unfinished_trials(s, created.id)[0]
        queue.mark_trials_running(s, [other.id])
        queue.append_epochs(s, other.id, fake_epochs(3))
        queue.finish_trial(s, other.id, TrialStatus.failed, None, "boom")
    with session_scope(engine) as s:
        assert [r.epoch for r in queries.trial_epochs(s, other.id)] == [1, 2, 3]


def test_release_and_fail_sweep(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    w = _worker(engine)
    queue.claim_sweep(engine, w)
    with session_scope(engine) as s:
        todo = queue.unfinished_trials(s, created.id)
        queue.mark_trials_running(s, [todo[0].id])
        queue.set_ray_info(s, created.id, "idem-sweep-1", "http://127.0.0.1:8265")
        queue.worker_heartbeat(s, w)
        queue.release_sweep(s, created.id, w)
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
        assert (sweep.status, sweep.claimed_by) == (SweepStatus.queued, None)
        assert sweep.ray_experiment == "idem-sweep-1"
        assert sweep.trials_by_status["pending"] == sweep.trial_count
    w2 = _worker(engine)
    queue.claim_sweep(engine, w2)
    with session_scope(engine) as s:
        queue.fail_sweep(s, created.id, "ray exploded")
    with session_scope(engine) as s:
        sweep = queries.get_sweep(s, created.id)
        assert (sweep.status, sweep.error) == (SweepStatus.failed, "ray exploded")
        assert sweep.trials_by_status["failed"] == sweep.trial_count
        assert sweep.progress == 1.0
        with pytest.raises(InvalidTransition):
            queue.fail_sweep(s, created.id, "again")


def test_finish_sweep_with_unfinished_trials_fails_it(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    w = _worker(engine)
    queue.claim_sweep(engine, w)
    with session_scope(engine) as s:
        assert queue.finish_sweep(s, created.id, w) == SweepStatus.failed
        assert "did not finish" in (queries.get_sweep(s, created.id).error or "")
