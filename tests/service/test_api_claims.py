"""GET /sweeps/{id}/claims on a stored sweep (each backend): its rows agree with /compare for
the same cell, Holm covers the whole table, and the CLI prints it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.comparison import holm
from tests.service.test_api_results import seed_sweep
from tests.utils.claims import check_claims_against_compare


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
    key = ("architecture", "learning_rate", "batch_size")
    checked = check_claims_against_compare(client, sweep_id, rows, key)
    assert checked == 2 * 2 * 2  # claims x architectures x learning rates


def test_claims_of_an_unknown_sweep_is_404(client: TestClient) -> None:
    r = client.get("/sweeps/4242/claims")
    assert r.status_code == 404
