"""The rows of the report's "where the results come from" table (report.html.j2).

One row per distinct (code fingerprint, idemsweep, torch, Python, device, TF32) among a
sweep's trials, with how many runs ran there, how many were packed, on how many hosts,
and how many were reused (taken over from an earlier trial, ``reused_from``) with those
source trial ids. A pure function of the loaded trials (no query).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from idemcore.provenance import PROVENANCE_FIELDS
from service.store.records import TrialRecord

SHOWN_SOURCES = 5  # reused-from trial ids listed per row (then "… N more")


@dataclass(frozen=True)
class ProvenanceRow:
    """The runs of a sweep that share one provenance (None values: not recorded)."""

    code_fingerprint: str | None
    idemsweep_version: str | None
    torch_version: str | None
    python_version: str | None
    device: str | None
    tf32: bool | None
    runs: int
    packed: int
    hosts: int
    reused: int
    reused_from: tuple[int, ...]


# What makes two runs' provenance the same (host, node and pack may differ within a row).
GROUP_FIELDS = tuple(
    f for f in PROVENANCE_FIELDS if f not in ("host", "ray_node_id", "packed", "pack_id")
)


def _key(t: TrialRecord) -> tuple[Any, ...]:
    return tuple(getattr(t.provenance, f) if t.provenance else None for f in GROUP_FIELDS)


def provenance_rows(trials: Sequence[TrialRecord]) -> list[ProvenanceRow]:
    """The trials grouped by provenance, most runs first (unrecorded ones last)."""
    groups: dict[tuple[Any, ...], list[TrialRecord]] = defaultdict(list)
    for t in trials:
        groups[_key(t)].append(t)
    rows = []
    for key, members in groups.items():
        sources = sorted({t.reused_from for t in members if t.reused_from is not None})
        rows.append(
            ProvenanceRow(
                **dict(zip(GROUP_FIELDS, key, strict=True)),
                runs=len(members),
                packed=sum(1 for t in members if t.provenance and t.provenance.packed),
                hosts=len({t.provenance.host for t in members if t.provenance}),
                reused=sum(1 for t in members if t.reused_from is not None),
                reused_from=tuple(sources),
            )
        )
    return sorted(rows, key=lambda r: (r.code_fingerprint is None, -r.runs))
