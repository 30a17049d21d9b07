"""What a read query may name: the grouping fields and the metrics, checked by whitelist.

Grouping fields and metrics are checked against ``TRIAL_FIELDS``, ``METRICS`` and
``EPOCH_METRICS`` here and then used as column objects, never interpolated into SQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast, get_type_hints

from sqlalchemy.orm import Session

from service.exceptions import InvalidQuery, NotFound
from service.store.models import EPOCH_COLUMNS, FINAL_METRIC_COLUMNS, Sweep
from service.store.records import ConfigColumns

R = TypeVar("R")

# Config columns of a trial that can group, filter and pair results.
TRIAL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ConfigColumns))
# Final metrics stored on the trial row.
METRICS: tuple[str, ...] = FINAL_METRIC_COLUMNS
# Per-epoch metrics stored in epoch_metric (usable with ``epoch=`` and in curves).
EPOCH_METRICS: tuple[str, ...] = EPOCH_COLUMNS
# The fields a comparison groups by (seed and init identify the pair inside a group).
COMPARE_GROUP: tuple[str, ...] = (
    "architecture",
    "learning_rate",
    "samples",
    "batch_size",
    "data",
    "optimizer",
)


def check_fields(by: Sequence[str]) -> list[str]:
    """``by`` as a list, if every name is a TRIAL_FIELDS column named once; else InvalidQuery."""
    fields = list(by)
    unknown = [f for f in fields if f not in TRIAL_FIELDS]
    if unknown:
        raise InvalidQuery(f"unknown field(s) {unknown}; expected some of {list(TRIAL_FIELDS)}")
    if len(set(fields)) != len(fields):
        raise InvalidQuery(f"field repeated in {fields}")
    return fields


def check_metric(metric: str, epoch: int | None) -> None:
    """InvalidQuery unless ``metric`` is a final metric (``epoch`` None) or a per-epoch one."""
    allowed = EPOCH_METRICS if epoch is not None else METRICS
    if metric not in allowed:
        where = "per-epoch" if epoch is not None else "final"
        raise InvalidQuery(f"unknown {where} metric {metric!r}; expected one of {list(allowed)}")


def require_sweep(session: Session, sweep_id: int) -> None:
    """NotFound unless the sweep exists (an empty result must not hide a wrong id)."""
    if session.get(Sweep, sweep_id) is None:
        raise NotFound(f"sweep {sweep_id} not found")


def as_float(value: Any) -> float | None:
    """A database number as float (PostgreSQL returns Decimal for some aggregates)."""
    return None if value is None else float(value)


def _count(value: Any) -> int:
    """A database count or sum as int (the sum over no rows is NULL: 0)."""
    return int(value or 0)


def grouped_records(
    record: type[R], group: Sequence[str], rows: Iterable[Sequence[Any]]
) -> list[R]:
    """Result rows of (the ``group`` fields' values, then ``record``'s other fields in
    declaration order) as ``record`` dataclasses with the group as a dict; each value is
    read as its field's type (``float | None``: :func:`as_float`, ``int``: a count, an
    enum or ``str``: converted), one home for the rows of summaries, curves and pairs."""
    hints = get_type_hints(record)
    readers = [
        (f.name, _READERS.get(hints[f.name], hints[f.name]))
        for f in dataclasses.fields(cast(Any, record))
        if f.name != "group"
    ]
    k = len(group)
    return [
        cast(Any, record)(
            group=dict(zip(group, r[:k], strict=True)),
            **{name: read(v) for (name, read), v in zip(readers, r[k:], strict=True)},
        )
        for r in rows
    ]


_READERS: dict[Any, Callable[[Any], Any]] = {float | None: as_float, int: _count}
