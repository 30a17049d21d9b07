"""The per-epoch metric names are declared once, by idemcore's EpochRecord; the store's
columns, records and the API's schemas use exactly those names."""

from __future__ import annotations

import dataclasses
import typing

from sqlalchemy import Float, Table

from idemcore.records import EPOCH_METRICS, EpochRecord, TrialResult
from service.schemas import EpochPublic, MetricsPublic, SweepEpochPublic, TrialDetail
from service.store.models import (
    EPOCH_COLUMNS,
    FINAL_METRIC_COLUMNS,
    METRIC_COLUMNS,
    EpochMetric,
    Trial,
)
from service.store.records import EpochRow, TrialRecord


def _float_columns(table: Table) -> set[str]:
    return {c.name for c in table.columns if isinstance(c.type, Float) and c.nullable}


def test_the_store_takes_idemcore_s_names() -> None:
    assert METRIC_COLUMNS == EPOCH_METRICS
    assert (*EPOCH_METRICS, "seconds") == EPOCH_COLUMNS
    names = [f.name for f in dataclasses.fields(EpochRecord)]
    assert names == ["epoch", *EPOCH_COLUMNS]
    # Every final metric stored on the trial row is a field of idemcore's TrialResult.
    assert set(FINAL_METRIC_COLUMNS) <= {f.name for f in dataclasses.fields(TrialResult)}


def test_orm_columns_are_derived_nullable_floats() -> None:
    assert set(METRIC_COLUMNS) <= _float_columns(Trial.__table__)  # type: ignore[arg-type]
    epoch_table: Table = EpochMetric.__table__  # type: ignore[assignment]
    assert [c.name for c in epoch_table.columns] == ["trial_id", "epoch", *EPOCH_COLUMNS]
    assert set(EPOCH_COLUMNS) == _float_columns(epoch_table)


def test_records_and_schemas_spell_the_same_names() -> None:
    assert EpochRow is EpochRecord
    hints = typing.get_type_hints(TrialRecord)
    assert {name: hints[name] for name in METRIC_COLUMNS} == dict.fromkeys(
        METRIC_COLUMNS, float | None
    )
    assert tuple(MetricsPublic.model_fields) == METRIC_COLUMNS
    assert tuple(EpochPublic.model_fields) == ("epoch", *EPOCH_COLUMNS)
    assert tuple(SweepEpochPublic.model_fields)[-len(EPOCH_COLUMNS) - 1 :] == (
        "epoch",
        *EPOCH_COLUMNS,
    )
    record_fields = {f.name for f in dataclasses.fields(TrialRecord)} - {
        "provenance",
        "config_hash",
    }
    assert record_fields <= set(TrialDetail.model_fields)  # from_record reads them by name


def test_every_grid_field_is_on_the_records_and_schemas() -> None:
    """The config columns a summary can group by (TRIAL_FIELDS) are spelled again as typed
    fields on the record and the public schemas; a grid dimension added to one and not to
    the others fails here."""
    from service.schemas import SweepEpochKey, TrialPublic
    from service.store.query_fields import TRIAL_FIELDS

    wanted = set(TRIAL_FIELDS)
    assert wanted <= {f.name for f in dataclasses.fields(TrialRecord)}
    assert wanted <= set(TrialPublic.model_fields)
    assert wanted <= set(SweepEpochKey.model_fields)
