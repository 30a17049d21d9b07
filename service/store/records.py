"""Frozen dataclasses the store returns: never ORM objects (they outlive the session).

A TrialRecord's metric fields are the per-epoch metrics' final values, idemcore's
declaration (``Metrics``); its config columns are ``ConfigColumns``, declared here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from idemcore.config import TrialConfig
from idemcore.provenance import Provenance
from idemcore.records import EpochRecord, Metrics
from service.store.status import SweepStatus, TrialStatus


@dataclass(frozen=True)
class SweepCreated:
    """What ``create_sweep`` made: the new sweep's id and how many trials were reused."""

    id: int
    status: SweepStatus
    trial_count: int
    reused_trials: int


@dataclass(frozen=True)
class SweepDeleted:
    """What ``delete_sweep`` removed: the sweep, its trials and their epoch rows."""

    id: int
    trials: int
    epochs: int


@dataclass(frozen=True)
class SweepRecord:
    """A sweep with its trial counts; ``progress`` is the finished fraction (0..1)."""

    id: int
    name: str
    status: SweepStatus
    priority: int
    spec: dict[str, Any]
    spec_hash: str
    trial_count: int
    trials_by_status: dict[str, int]
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    claimed_by: str | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    error: str | None
    ray_experiment: str | None
    ray_dashboard_url: str | None
    ray_job_id: str | None
    attempt: int


@dataclass(frozen=True, kw_only=True)
class ConfigColumns:
    """A trial's config as the columns that group, filter and pair results: the one
    declaration of their names, types and order (``query_fields.TRIAL_FIELDS``)."""

    architecture: str
    algorithm: str
    learning_rate: float
    samples: int
    batch_size: int
    seed: int
    data: str
    init: str
    optimizer: str


@dataclass(frozen=True, kw_only=True)
class TrialRecord(Metrics, ConfigColumns):
    """One trial: its config columns, status and final metrics (the per-epoch metrics'
    last values, idemcore's :class:`~idemcore.records.Metrics`, and the run's own)."""

    id: int
    sweep_id: int
    status: TrialStatus
    config: dict[str, Any]
    config_hash: str
    attempts: int
    epochs_to_threshold: int | None
    epochs_run: int | None
    wall_seconds: float | None
    result: dict[str, Any] | None
    error: str | None
    reused_from: int | None
    node_ip: str | None
    started_at: datetime | None
    finished_at: datetime | None
    provenance: Provenance | None = None


# One stored epoch of a trial: the EpochRecord its run reported, read back (one
# declaration of the per-epoch fields for idemcore, the store, the API and the report).
EpochRow = EpochRecord


@dataclass(frozen=True)
class ClaimedSweep:
    """A sweep a worker has just claimed."""

    id: int
    name: str
    spec: dict[str, Any]
    attempt: int  # 1 on the first claim, +1 on each later one (requeue, release)
    created_at: datetime


@dataclass(frozen=True)
class TrialTodo:
    """An unfinished trial a worker must (re)run."""

    id: int
    config: TrialConfig
    attempts: int


@dataclass(frozen=True)
class SummaryRow:
    """Statistics of one metric over the succeeded trials of one group.

    ``n`` counts succeeded trials with a value; ``std`` is the sample standard deviation
    (None when n < 2); ``diverged`` counts diverged trials of the group; ``never`` counts
    succeeded or diverged trials that never reached the threshold.
    """

    group: dict[str, Any]
    n: int
    mean: float | None
    std: float | None
    min: float | None
    median: float | None
    max: float | None
    diverged: int
    never: int


@dataclass(frozen=True)
class CompareRow:
    """Two trials that agree on every config field but the algorithm (a paired sample)."""

    group: dict[str, Any]
    seed: int
    init: str
    a_trial_id: int
    b_trial_id: int
    a_status: TrialStatus
    b_status: TrialStatus
    a_value: float | None
    b_value: float | None


@dataclass(frozen=True)
class CurvePoint:
    """Mean and sample std of a metric over a group's trials at one epoch."""

    group: dict[str, Any]
    epoch: int
    n: int
    mean: float | None
    std: float | None
