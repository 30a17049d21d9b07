"""Epoch batches: one idempotent bulk insert per batch, on each backend's path."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from service.store import queries
from service.store.engine import session_scope
from service.store.epochs import EPOCH_ROWS_PER_STATEMENT, append_epochs
from service.store.trials import unfinished_trials
from tests.utils.factories import add_sweep, fake_epochs, make_config


def test_append_epochs_is_one_idempotent_batch(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = unfinished_trials(s, created.id)
        assert append_epochs(s, todo.id, fake_epochs(10)) == 10
    with session_scope(engine) as s:
        # A replayed, overlapping batch adds only the new epochs.
        assert append_epochs(s, todo.id, fake_epochs(10, start=6)) == 5
        assert append_epochs(s, todo.id, []) == 0
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
        (todo,) = unfinished_trials(s, created.id)
        assert append_epochs(s, todo.id, fake_epochs(10)) == 10
        assert append_epochs(s, todo.id, fake_epochs(10, start=6)) == 5
    with session_scope(engine) as s:
        assert [r.epoch for r in queries.trial_epochs(s, todo.id)] == list(range(1, 16))


def test_append_epochs_splits_huge_batches(engine: Engine) -> None:
    created = add_sweep(engine, [make_config()])
    with session_scope(engine) as s:
        (todo,) = unfinished_trials(s, created.id)
        n = EPOCH_ROWS_PER_STATEMENT * 2 + 7
        assert append_epochs(s, todo.id, fake_epochs(n)) == n
