"""Status rules: allowed transitions, none out of a final state, and the bulk statements'
source states taken from the same tables (an illegal one raises before any SQL runs)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine

from service.exceptions import InvalidTransition
from service.store import queries
from service.store.engine import session_scope
from service.store.status import (
    SWEEP_FINAL,
    TRIAL_FINAL,
    SweepStatus,
    TrialStatus,
    check_transition,
    sources,
)
from service.store.sweeps import request_cancel
from service.store.trials import end_unfinished_trials, finish_trial, unfinished_trials
from tests.utils.factories import add_sweep, fake_result, make_grid


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (SweepStatus.queued, SweepStatus.running),
        (SweepStatus.running, SweepStatus.queued),
        (SweepStatus.running, SweepStatus.cancelled),
        (TrialStatus.pending, TrialStatus.running),
        (TrialStatus.running, TrialStatus.diverged),
        (TrialStatus.pending, TrialStatus.succeeded),
    ],
)
def test_allowed_transitions(
    old: SweepStatus | TrialStatus, new: SweepStatus | TrialStatus
) -> None:
    check_transition(old, new)


def test_no_transition_leaves_a_final_state() -> None:
    for final in SWEEP_FINAL:
        for new in SweepStatus:
            with pytest.raises(InvalidTransition):
                check_transition(final, new)
    for trial_final in TRIAL_FINAL:
        for trial_new in TrialStatus:
            with pytest.raises(InvalidTransition):
                check_transition(trial_final, trial_new)
    with pytest.raises(InvalidTransition):
        check_transition(SweepStatus.queued, TrialStatus.running)


@pytest.mark.parametrize("enum", [SweepStatus, TrialStatus])
def test_sources_are_exactly_the_allowed_transitions(enum: type[SweepStatus | TrialStatus]) -> None:
    for new in enum:
        expected = []
        for old in enum:
            try:
                check_transition(old, new)
            except InvalidTransition:
                continue
            expected.append(old)
        assert sources(new) == expected


def test_sources_refuse_an_illegal_source() -> None:
    assert sources(TrialStatus.pending, among=[TrialStatus.running]) == [TrialStatus.running]
    assert sources(SweepStatus.queued, among=[SweepStatus.running]) == [SweepStatus.running]
    for final, new in itertools.product(TRIAL_FINAL, TrialStatus):
        with pytest.raises(InvalidTransition, match=f"trial status {final.value} → {new.value}"):
            sources(new, among=[TrialStatus.running, final])
    with pytest.raises(InvalidTransition, match="sweep status queued → queued"):
        sources(SweepStatus.queued, among=[SweepStatus.queued])


def test_bulk_end_of_trials_skips_finished_ones_and_needs_a_final_status(engine: Engine) -> None:
    created = add_sweep(engine, make_grid(seeds=(0,)))
    with session_scope(engine) as s:
        first, *rest = unfinished_trials(s, created.id)
        finish_trial(s, first.id, TrialStatus.succeeded, fake_result(), None)
    with session_scope(engine) as s:
        with pytest.raises(InvalidTransition, match="can only end"):
            end_unfinished_trials(s, created.id, TrialStatus.pending)
        assert end_unfinished_trials(s, created.id, TrialStatus.cancelled) == len(rest)
    with session_scope(engine) as s:
        assert queries.get_trial(s, first.id).status == TrialStatus.succeeded
        # Cancelling the queued sweep now ends no trial a second time.
        assert request_cancel(s, created.id) == SweepStatus.cancelled
        assert queries.get_sweep(s, created.id).trials_by_status["cancelled"] == len(rest)
