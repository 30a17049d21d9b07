"""Conversions between idemcore objects, ORM rows and the store's frozen records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from idemcore.config import TrialConfig
from idemcore.provenance import PROVENANCE_FIELDS, Provenance
from service.store.models import FINAL_METRIC_COLUMNS, Sweep, Trial
from service.store.records import SweepRecord, TrialRecord
from service.store.status import TRIAL_FINAL, SweepStatus, TrialStatus


def canonical_hash(value: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces): a content address."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pair_key(config: TrialConfig) -> str:
    """Hash of the config without its algorithm: trials sharing it form a comparison pair."""
    payload = config.to_dict()
    payload.pop("algorithm")
    return canonical_hash(payload)


def trial_row(sweep_id: int, config: TrialConfig) -> dict[str, Any]:
    """Column values of a new, pending trial for ``config``."""
    return {
        "sweep_id": sweep_id,
        "config": config.to_dict(),
        "architecture": config.architecture_name,
        "algorithm": config.algorithm,
        "learning_rate": float(config.learning_rate),
        "samples": config.samples,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "data": config.data,
        "init": config.init_label,
        "optimizer": config.optimizer,
        "config_hash": config.config_hash(),
        "pair_key": pair_key(config),
        "status": TrialStatus.pending,
        "attempts": 0,
    }


def sweep_record(sweep: Sweep, counts: Mapping[str, int]) -> SweepRecord:
    """A SweepRecord from a row and its trial counts per status: every other field is the
    column of the same name (the status as its enum)."""
    total = sum(counts.values())
    finished = sum(n for status, n in counts.items() if TrialStatus(status) in TRIAL_FINAL)
    derived: dict[str, Any] = {
        "status": SweepStatus(sweep.status),
        "cancel_requested": bool(sweep.cancel_requested),
        "trial_count": total,
        "trials_by_status": {s.value: int(counts.get(s.value, 0)) for s in TrialStatus},
        "progress": (finished / total) if total else 1.0,
    }
    columns = {f.name: getattr(sweep, f.name) for f in fields(SweepRecord) if f.name not in derived}
    return SweepRecord(**columns, **derived)


def trial_record(t: Trial | Mapping[str, Any]) -> TrialRecord:
    """A TrialRecord from a row (an ORM object, or a plain row of the trial table's
    columns as a name -> value mapping): every field is the column of the same name,
    except the status (as its enum), the provenance (gathered from its columns) and the
    ``result``, None when the row was read without it (queries.sweep_trials)."""
    values: Mapping[str, Any] = (
        t if isinstance(t, Mapping) else {name: getattr(t, name) for name in _RECORD_COLUMNS}
    )
    derived: dict[str, Any] = {
        "status": TrialStatus(values["status"]),
        "provenance": provenance_of(values),
        "result": values.get("result"),
    }
    return TrialRecord(**{n: values[n] for n in _PLAIN_FIELDS}, **derived)


def provenance_of(values: Mapping[str, Any]) -> Provenance | None:
    """The trial's Provenance from its columns' values; None before a worker recorded one."""
    if values["code_fingerprint"] is None:
        return None
    return Provenance(**{name: values[name] for name in PROVENANCE_FIELDS})


# TrialRecord's fields read straight from the column of the same name, and every column
# a TrialRecord is built from.
_PLAIN_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(TrialRecord) if f.name not in ("status", "provenance", "result")
)
_RECORD_COLUMNS: tuple[str, ...] = (*_PLAIN_FIELDS, "status", *PROVENANCE_FIELDS, "result")

# What a reused trial takes over from the trial it reuses: the final metrics and the
# provenance of the computation that produced them.
RESULT_COLUMNS: tuple[str, ...] = (*FINAL_METRIC_COLUMNS, "result", *PROVENANCE_FIELDS)
