"""Holding the claims table (``GET /sweeps/{id}/claims``) to ``/compare``: one check,
shared by the API test and the report test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.testclient import TestClient

# Which claim reads which metric, and the paired statistics both routes report.
CLAIM_METRICS = (("a", "idempotent_error"), ("b", "epochs_to_threshold"))
PAIRED_FIELDS = ("pairs", "a_wins", "b_wins", "ties", "effect", "ci_low", "ci_high", "p")


def check_claims_against_compare(
    client: TestClient, sweep_id: int, rows: Sequence[dict[str, Any]], key: Sequence[str]
) -> int:
    """Each equal-lr claim row among ``rows`` has the paired statistics of the
    modified-vs-ordinary ``/compare`` cell of its group (the cell found by the ``key``
    fields, the claim's ``lr_a`` standing for ``learning_rate``); returns how many rows
    it checked."""
    checked = 0
    for claim, metric in CLAIM_METRICS:
        compare = client.get(
            f"/sweeps/{sweep_id}/compare",
            params={"a": "modified", "b": "ordinary", "metric": metric},
        ).json()
        cells = {tuple(c[f] for f in key): c for c in compare["data"]}
        for row in rows:
            if row["claim"] != claim or row["way"] != "equal_lr":
                continue
            cell = cells[tuple(row["lr_a" if f == "learning_rate" else f] for f in key)]
            for field in PAIRED_FIELDS:
                assert cell[field] == row[field], (metric, field, row)
            checked += 1
    return checked
