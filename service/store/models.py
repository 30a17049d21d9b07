"""SQLAlchemy 2 models: the store's tables. Table and column names are a public contract.

Users query these tables directly with SQL, so names follow the issue exactly:
``sweep``, ``trial``, ``epoch_metric``, ``worker``, ``idempotency_key``. Every datetime
is timezone-aware UTC on both backends (:class:`UTCDateTime`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from idemcore.records import EPOCH_METRICS
from service.store.status import SweepStatus, TrialStatus


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock the store uses)."""
    return datetime.now(UTC)


# The metrics measured every epoch, stored per epoch and (the last epoch's) on the trial
# row: declared once, by idemcore's EpochRecord (idemcore.records.EPOCH_METRICS).
METRIC_COLUMNS: tuple[str, ...] = EPOCH_METRICS
# Final metrics stored on the trial row (copied as they are when a trial is reused).
FINAL_METRIC_COLUMNS: tuple[str, ...] = (
    *METRIC_COLUMNS,
    "epochs_to_threshold",
    "epochs_run",
    "wall_seconds",
)
# One epoch row's values, after its keys (trial_id, epoch).
EPOCH_COLUMNS: tuple[str, ...] = (*METRIC_COLUMNS, "seconds")

_Mapped = TypeVar("_Mapped", bound=type)


def float_columns(*names: str) -> Callable[[_Mapped], _Mapped]:
    """Class decorator: one nullable ``Float`` column per name on a mapped class, so the
    metric columns come from their one declaration instead of being spelled out here
    (declarative maps an attribute set on the class after it was created)."""

    def add(cls: _Mapped) -> _Mapped:
        for name in names:
            setattr(cls, name, mapped_column(name, Float, nullable=True))
        return cls

    return add


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as
    naive UTC text (which sorts correctly) and tagged UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, queryable), JSON text elsewhere.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


def _enum(enum_cls: type[Any], name: str) -> Enum:
    """Status columns store the enum's value as text plus a CHECK constraint."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base; its metadata is what Alembic autogenerates from."""


class Sweep(Base):
    """One submitted spec: a grid of trials, claimed and run by one worker at a time."""

    __tablename__ = "sweep"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[SweepStatus] = mapped_column(
        _enum(SweepStatus, "sweep_status"), default=SweepStatus.queued
    )
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    ray_experiment: Mapped[str | None] = mapped_column(String(200))
    ray_dashboard_url: Mapped[str | None] = mapped_column(String(500))
    # Claims so far (1 after the first): the Ray Job of attempt k is idemsweep-sweep-ID-k.
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ray_job_id: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        # The claim: queued sweeps, highest priority then oldest. Partial on both backends.
        Index(
            "ix_sweep_queued",
            "priority",
            "created_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # Stalled-lease scan and listing by status.
        Index("ix_sweep_status_heartbeat", "status", "heartbeat_at"),
    )


@float_columns(*METRIC_COLUMNS)
class Trial(Base):
    """One configuration of a sweep, its resolved config, status and final metrics."""

    __tablename__ = "trial"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    architecture: Mapped[str] = mapped_column(String(200))
    algorithm: Mapped[str] = mapped_column(String(32))
    learning_rate: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(String(32))
    init: Mapped[str] = mapped_column(String(32))
    optimizer: Mapped[str] = mapped_column(String(32), server_default="sgd")
    config_hash: Mapped[str] = mapped_column(String(64))
    # Hash of the config without its algorithm: trials that pair up in a comparison.
    pair_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[TrialStatus] = mapped_column(
        _enum(TrialStatus, "trial_status"), default=TrialStatus.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The METRIC_COLUMNS (final values) are added by @float_columns.
    epochs_to_threshold: Mapped[int | None] = mapped_column(Integer)
    epochs_run: Mapped[int | None] = mapped_column(Integer)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    reused_from: Mapped[int | None] = mapped_column(ForeignKey("trial.id", ondelete="SET NULL"))
    node_ip: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Provenance (idemcore.provenance.Provenance, one column per field; a test holds the
    # two equal): what computed the result. Null until the trial finishes; a reused
    # trial carries its source's.
    code_fingerprint: Mapped[str | None] = mapped_column(String(64))
    idemsweep_version: Mapped[str | None] = mapped_column(String(64))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    python_version: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(200))
    tf32: Mapped[bool | None] = mapped_column(Boolean)
    host: Mapped[str | None] = mapped_column(String(255))
    ray_node_id: Mapped[str | None] = mapped_column(String(64))
    packed: Mapped[bool | None] = mapped_column(Boolean)
    pack_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_trial_sweep_status", "sweep_id", "status"),
        # Keyset pages (list_trials' after_id) and whole-sweep reads in id order: without
        # it SQLite sorted every trial of the sweep for each page (25 ms a page at
        # 100,000 trials, 6 ms with it, 4.5 ms at 1,000).
        Index("ix_trial_sweep_id", "sweep_id", "id"),
        Index("ix_trial_sweep_pair", "sweep_id", "pair_key"),
        Index("ix_trial_config_hash_status", "config_hash", "status"),
        Index(
            "ix_trial_config",
            "architecture",
            "algorithm",
            "learning_rate",
            "batch_size",
            "samples",
            "seed",
            "data",
            "init",
            "optimizer",
        ),
        Index("ix_trial_reused_from", "reused_from"),
    )


@float_columns(*EPOCH_COLUMNS)
class EpochMetric(Base):
    """One epoch of one trial; the primary key makes a replayed epoch a no-op."""

    __tablename__ = "epoch_metric"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trial.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The EPOCH_COLUMNS (metrics and seconds) are added by @float_columns.


class Worker(Base):
    """A running ``idem worker`` process, with its liveness heartbeat."""

    __tablename__ = "worker"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """The first response to a POST carrying an Idempotency-Key, replayed on retries."""

    __tablename__ = "idempotency_key"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
