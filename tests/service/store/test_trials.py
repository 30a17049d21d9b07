"""Trial state: final states written atomically with their rows, never reopened."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from service.exceptions import InvalidTransition
from service.store import queries
from service.store.claim import claim_sweep, register_worker
from service.store.engine import session_scope
from service.store.epochs import append_epochs
from service.store.models import EpochMetric
from service.store.status import TrialStatus
from service.store.trials import finish_trial, mark_trials_running, unfinished_trials
from tests.utils.factories import add_sweep, fake_epochs, fake_result, make_config, make_grid


def _worker(engine: Engine, host: str = "host") -> str:
    with session_scope(engine) as s:
        return register_worker(s, host)


def test_finish_trial_writes_rows_and_state_atomically(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = unfinished_trials(s, created.id)
        mark_trials_running(s, [todo.id], node_ip="10.1.2.3")
    # A crash inside the transaction leaves neither rows nor the final state.
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        finish_trial(s, todo.id, TrialStatus.succeeded, fake_result(), None, fake_epochs(5))
        raise RuntimeError("worker died")
    with session_scope(engine) as s:
        assert queries.get_trial(s, todo.id).status == TrialStatus.running
        assert s.scalar(select(func.count()).select_from(EpochMetric)) == 0
    with session_scope(engine) as s:
        finish_trial(
            s, todo.id, TrialStatus.succeeded, fake_result(epochs_run=5), None, fake_epochs(5)
        )
    with session_scope(engine) as s:
        t = queries.get_trial(s, todo.id)
        assert t.status == TrialStatus.succeeded and t.epochs_run == 5
        assert t.node_ip == "10.1.2.3" and t.attempts == 1 and t.finished_at is not None
        assert t.result is not None and t.result["eigenvalues"] == [[1.0, 0.0], [0.0, 0.0]]
        assert len(queries.trial_epochs(s, todo.id)) == 5
        with pytest.raises(InvalidTransition):
            finish_trial(s, todo.id, TrialStatus.failed, None, "late")
        with pytest.raises(InvalidTransition):
            finish_trial(s, todo.id, TrialStatus.succeeded, None, None)
        # A retried write of the same final state (lost commit reply) changes nothing.
        assert not finish_trial(s, todo.id, TrialStatus.succeeded, None, None, repeat_ok=True)
        with pytest.raises(InvalidTransition):
            finish_trial(s, todo.id, TrialStatus.failed, None, "late", repeat_ok=True)
        assert queries.get_trial(s, todo.id).epochs_run == 5
        with pytest.raises(InvalidTransition):
            finish_trial(s, todo.id, TrialStatus.running, None, None)


def test_final_state_drops_rows_past_epochs_run(engine: Engine) -> None:
    """An earlier attempt stored epochs 1..8; the rerun stopped after 5 (diverged
    sooner): the final trial keeps exactly epochs 1..5, from the rerun."""
    created = add_sweep(engine, make_grid(seeds=(0,)))
    claim_sweep(engine, _worker(engine))
    with session_scope(engine) as s:
        todo = unfinished_trials(s, created.id)[0]
        mark_trials_running(s, [todo.id])
        append_epochs(s, todo.id, fake_epochs(8))
    with session_scope(engine) as s:
        finish_trial(
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
        other = unfinished_trials(s, created.id)[0]
        mark_trials_running(s, [other.id])
        append_epochs(s, other.id, fake_epochs(3))
        finish_trial(s, other.id, TrialStatus.failed, None, "boom")
    with session_scope(engine) as s:
        assert [r.epoch for r in queries.trial_epochs(s, other.id)] == [1, 2, 3]
