"""Streamed result tables: a sweep's trials or all its epoch rows, batch by batch.

Exports read through a server-side cursor (``yield_per``: psycopg's named cursor on
PostgreSQL, the sqlite3 cursor's own stepping on SQLite), so memory stays flat however
many rows a sweep has. Columns and their types are derived from the ORM models, so a
column added to ``trial`` or ``epoch_metric`` is exported without touching this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Result,
    Select,
    func,
    select,
)
from sqlalchemy.orm import Session

from service.store.models import EPOCH_COLUMNS, EpochMetric, Trial
from service.store.queries import trial_conditions
from service.store.query_fields import TRIAL_FIELDS, require_sweep

# Trial columns that are not exported: the JSON blobs (the config is spread over its own
# columns, the full result is per-trial detail), internal hashes and the worker's node.
TRIAL_EXCLUDED: frozenset[str] = frozenset(
    {"config", "result", "config_hash", "pair_key", "node_ip"}
)
BATCH_ROWS = 20_000


@dataclass(frozen=True)
class ExportColumn:
    """One exported column: its name and kind (``int``, ``float``, ``str``, ``bool``,
    ``datetime``), the kind deciding the Parquet type and the CSV text."""

    name: str
    kind: str


def _kind(column: ColumnElement[Any]) -> str:
    sql_type = column.type
    impl = getattr(sql_type, "impl", sql_type)
    if isinstance(impl, DateTime):
        return "datetime"
    if isinstance(impl, Boolean):
        return "bool"
    if isinstance(impl, Integer):
        return "int"
    if isinstance(impl, Float):
        return "float"
    return "str"


def _columns(table_columns: Sequence[ColumnElement[Any]]) -> list[ExportColumn]:
    return [ExportColumn(c.name, _kind(c)) for c in table_columns]


def trial_columns() -> list[ExportColumn]:
    """The trials export: every column of ``trial`` but ``TRIAL_EXCLUDED``, in table order."""
    return _columns([c for c in Trial.__table__.columns if c.name not in TRIAL_EXCLUDED])


def epoch_columns() -> list[ExportColumn]:
    """The epochs export: the sweep's trial id, its config columns, then the epoch row."""
    trial = Trial.__table__.columns
    epoch = EpochMetric.__table__.columns
    return [
        ExportColumn("trial_id", "int"),
        *_columns([trial[f] for f in TRIAL_FIELDS]),
        *_columns([epoch[c] for c in ("epoch", *EPOCH_COLUMNS)]),
    ]


def _trials_select(sweep_id: int, filters: Mapping[str, Any] | None) -> Select[Any]:
    names = [c.name for c in trial_columns()]
    return (
        select(*[Trial.__table__.c[n] for n in names])
        .where(*trial_conditions(sweep_id, filters))
        .order_by(Trial.id)
    )


def _epochs_select(sweep_id: int, filters: Mapping[str, Any] | None) -> Select[Any]:
    # A reused trial has no rows of its own: its curve is the reused trial's rows.
    return (
        select(
            Trial.id,
            *[getattr(Trial, f) for f in TRIAL_FIELDS],
            EpochMetric.epoch,
            *[getattr(EpochMetric, c) for c in EPOCH_COLUMNS],
        )
        .select_from(Trial)
        .join(EpochMetric, EpochMetric.trial_id == func.coalesce(Trial.reused_from, Trial.id))
        .where(*trial_conditions(sweep_id, filters))
        .order_by(Trial.id, EpochMetric.epoch)
    )


@dataclass(frozen=True)
class Table:
    """An exported table of a sweep: its name, its columns, and the query of its rows
    (matching trial filters as ``list_trials`` takes them) in column order."""

    name: str
    columns: Callable[[], list[ExportColumn]]
    select: Callable[[int, Mapping[str, Any] | None], Select[Any]]

    def stream(
        self,
        session: Session,
        sweep_id: int,
        filters: Mapping[str, Any] | None = None,
        *,
        batch_rows: int = BATCH_ROWS,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The sweep's rows as batches, read through a server-side cursor. Raises
        NotFound for an unknown sweep (at once, not when the first batch is read)."""
        require_sweep(session, sweep_id)
        stmt = self.select(sweep_id, filters)
        return _batches(session.execute(stmt, execution_options={"yield_per": batch_rows}))


def _batches(result: Result[Any]) -> Iterator[list[tuple[Any, ...]]]:
    for partition in result.partitions():
        yield [tuple(row) for row in partition]


# The sweep's trials, in id order; every epoch row of its trials, by trial id and epoch.
TRIALS = Table("trials", trial_columns, _trials_select)
EPOCHS = Table("epochs", epoch_columns, _epochs_select)
