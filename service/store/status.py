"""Sweep and trial status enums with their allowed transitions written next to them.

The store checks every status change against these tables, so a finished sweep or
trial can never be silently reopened (Optuna's ``check_trial_is_updatable``): a change
of one row calls :func:`check_transition`; a bulk ``UPDATE`` takes the states it may
change from :func:`sources` as its ``WHERE status IN (...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TypeVar

from service.exceptions import InvalidTransition


class SweepStatus(StrEnum):
    """Life cycle of a sweep: queued → running → succeeded | failed | cancelled."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class TrialStatus(StrEnum):
    """Life cycle of a trial: pending → running → succeeded | diverged | failed | cancelled."""

    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    diverged = "diverged"
    failed = "failed"
    cancelled = "cancelled"


SWEEP_FINAL: frozenset[SweepStatus] = frozenset(
    {SweepStatus.succeeded, SweepStatus.failed, SweepStatus.cancelled}
)
TRIAL_FINAL: frozenset[TrialStatus] = frozenset(
    {TrialStatus.succeeded, TrialStatus.diverged, TrialStatus.failed, TrialStatus.cancelled}
)

SWEEP_ALLOWED: dict[SweepStatus, frozenset[SweepStatus]] = {
    # queued → succeeded: every trial was reused; queued → cancelled: cancel before a claim.
    SweepStatus.queued: frozenset(
        {SweepStatus.running, SweepStatus.succeeded, SweepStatus.cancelled, SweepStatus.failed}
    ),
    # running → queued: the lease expired or the worker released it (SIGTERM).
    SweepStatus.running: frozenset(
        {SweepStatus.queued, SweepStatus.succeeded, SweepStatus.failed, SweepStatus.cancelled}
    ),
    SweepStatus.succeeded: frozenset(),
    SweepStatus.failed: frozenset(),
    SweepStatus.cancelled: frozenset(),
}

TRIAL_ALLOWED: dict[TrialStatus, frozenset[TrialStatus]] = {
    # pending → final: reused (succeeded), cancelled before it ran, or failed before start.
    TrialStatus.pending: frozenset({TrialStatus.running} | TRIAL_FINAL),
    # running → running: a retry after the worker died (attempts += 1);
    # running → pending: the sweep was requeued.
    TrialStatus.running: frozenset({TrialStatus.running, TrialStatus.pending} | TRIAL_FINAL),
    TrialStatus.succeeded: frozenset(),
    TrialStatus.diverged: frozenset(),
    TrialStatus.failed: frozenset(),
    TrialStatus.cancelled: frozenset(),
}


def check_transition(old: SweepStatus | TrialStatus, new: SweepStatus | TrialStatus) -> None:
    """Raise InvalidTransition unless ``old → new`` is allowed for its enum."""
    if isinstance(old, SweepStatus) and isinstance(new, SweepStatus):
        allowed: frozenset[SweepStatus] | frozenset[TrialStatus] = SWEEP_ALLOWED[old]
        kind = "sweep"
    elif isinstance(old, TrialStatus) and isinstance(new, TrialStatus):
        allowed = TRIAL_ALLOWED[old]
        kind = "trial"
    else:
        raise InvalidTransition(f"cannot compare statuses {old!r} and {new!r}")
    if new not in allowed:
        raise InvalidTransition(f"{kind} status {old.value} → {new.value} is not allowed")


S = TypeVar("S", SweepStatus, TrialStatus)


def _allowed(status: SweepStatus | TrialStatus) -> frozenset[SweepStatus] | frozenset[TrialStatus]:
    if isinstance(status, SweepStatus):
        return SWEEP_ALLOWED[status]
    return TRIAL_ALLOWED[status]


def sources(new: S, among: Iterable[S] | None = None) -> list[S]:
    """The states allowed to change to ``new``, for a bulk ``UPDATE … WHERE status IN``.

    ``among`` narrows them to the states the caller means to change (e.g. only running
    trials go back to pending); any of those that may not change to ``new`` raises
    InvalidTransition, so a bulk statement can never encode a transition the tables
    forbid. Returned in declaration order (stable SQL).
    """
    allowed = [s for s in type(new) if new in _allowed(s)]
    if among is None:
        return allowed
    wanted = set(among)
    for old in wanted:
        check_transition(old, new)
    return [s for s in allowed if s in wanted]
