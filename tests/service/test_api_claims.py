"""GET /sweeps/{id}/claims on a stored sweep (each backend): its rows agree with /compare for
the same cell, Holm covers the whole table, and the CLI prints it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.comparison import holm
from tests.service.test_api_results import seed_sweep


def test_claims_agree_with_compare_for_the_same_cell(client: TestClient, engine: Engine) -> None:
    sweep_id, _ = seed_sweep(client, engine)
    r = client.get(f"/sweeps/{sweep_id}/claims")
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["data"]
    assert body["count"] == len(rows) > 0
    assert [row["p_corrected"] for row in rows] == holm([row["p"] for row in rows])
    ways = {row["way"] for row in rows}
    assert {"equal_lr", "best_lr"} <= ways
    for row in rows:
        if row["way"] == "best_lr":  # 6 seeds: chosen on 0-2, compared on 3-5
            assert row["selection_seeds"] == [0, 1, 2] and row["evaluation_seeds"] == [3, 4, 5]
    checked = 0
    for claim, metric in (("a", "idempotent_error"), ("b", "epochs_to_threshold")):
        compare = client.get(
            f"/sweeps/{sweep_id}/compare",
            params={"a": "modified", "b": "ordinary", "metric": metric},
        ).json()
        cells = {
            (c["architecture"], c["learning_rate"], c["batch_size"]): c for c in compare["data"]
        }
        for row in rows:
            if row["claim"] != claim or row["way"] != "equal_lr":
                continue
            cell = cells[(row["architecture"], row["lr_a"], row["batch_size"])]
            for field in ("pairs", "a_wins", "b_wins", "ties", "effect", "ci_low", "ci_high", "p"):
                assert cell[field] == row[field], (metric, field, row)
            checked += 1
    assert checked == 2 * 2 * 2  # claims x architectures x learning rates


def test_claims_of_an_unknown_sweep_is_404(client: TestClient) -> None:
    r = client.get("/sweeps/4242/claims")
    assert r.status_code == 404
