"""DELETE /sweeps/{id}: a finished sweep goes with its trials and epoch rows in one
transaction; a queued or running sweep, or one whose trials other sweeps reuse, is a
409 that deletes nothing. On each backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.store.claim import claim_sweep, register_worker
from service.store.engine import session_scope
from service.store.models import EpochMetric, IdempotencyKey, Sweep, Trial
from tests.service.conftest import SMALL_SPEC
from tests.utils.factories import run_sweep_to_end

EPOCHS = 4


def engine_of(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def run(client: TestClient, sweep_id: int) -> None:
    """Claim the sweep as a worker and finish every trial with EPOCHS epoch rows."""
    engine = engine_of(client)
    with session_scope(engine) as s:
        worker = register_worker(s, "test")
    claimed = claim_sweep(engine, worker)
    assert claimed is not None and claimed.id == sweep_id
    run_sweep_to_end(engine, sweep_id, worker, epochs=EPOCHS)


def counts(client: TestClient) -> dict[str, int]:
    with session_scope(engine_of(client), readonly=True) as s:
        return {
            "sweeps": int(s.scalar(select(func.count()).select_from(Sweep)) or 0),
            "trials": int(s.scalar(select(func.count()).select_from(Trial)) or 0),
            "epochs": int(s.scalar(select(func.count()).select_from(EpochMetric)) or 0),
            "keys": int(s.scalar(select(func.count()).select_from(IdempotencyKey)) or 0),
        }


def submit(client: TestClient, **changes: Any) -> int:
    spec = {**SMALL_SPEC, **changes}
    response = client.post("/sweeps", json=spec, headers={"Idempotency-Key": spec["name"]})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_a_finished_sweep_goes_with_its_trials_and_epoch_rows(client: TestClient) -> None:
    keep = submit(client, name="keep", seeds=1)
    run(client, keep)
    gone = submit(client, name="gone", learning_rates=[0.2])
    run(client, gone)
    before = counts(client)
    response = client.delete(f"/sweeps/{gone}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": gone, "trials": 4, "epochs": 4 * EPOCHS}
    after = counts(client)
    assert after == {
        "sweeps": before["sweeps"] - 1,
        "trials": before["trials"] - 4,
        "epochs": before["epochs"] - 4 * EPOCHS,
        "keys": before["keys"] - 1,
    }
    assert client.get(f"/sweeps/{gone}").status_code == 404
    assert client.delete(f"/sweeps/{gone}").status_code == 404
    assert client.get(f"/sweeps/{keep}").json()["trials_by_status"]["succeeded"] == 2
    # The key went with it: the same key now creates a new, queued sweep.
    spec = {**SMALL_SPEC, "name": "gone", "learning_rates": [0.2]}
    again = client.post("/sweeps", json=spec, headers={"Idempotency-Key": "gone"})
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["status"] == "queued"


def test_queued_and_running_sweeps_are_409(client: TestClient) -> None:
    queued = submit(client, name="queued")
    response = client.delete(f"/sweeps/{queued}")
    assert response.status_code == 409 and "queued; cancel it first" in response.json()["detail"]
    engine = engine_of(client)
    with session_scope(engine) as s:
        worker = register_worker(s, "test")
    assert claim_sweep(engine, worker) is not None
    before = counts(client)
    response = client.delete(f"/sweeps/{queued}")
    assert response.status_code == 409 and "running" in response.json()["detail"]
    assert counts(client) == before
    assert client.post(f"/sweeps/{queued}/cancel").status_code == 202


def test_a_sweep_whose_trials_are_reused_is_409_naming_the_dependents(
    client: TestClient,
) -> None:
    first = submit(client, name="first")
    run(client, first)
    second = submit(client, name="second")  # every trial reused from the first
    third = submit(client, name="third", seeds=3)  # 4 of 6 reused
    before = counts(client)
    response = client.delete(f"/sweeps/{first}")
    assert response.status_code == 409
    assert f"sweep(s) {second}, {third} reuse its trials" in response.json()["detail"]
    assert counts(client) == before
    # The reusing sweeps go first (the third is queued: cancelled first), then the first.
    assert client.delete(f"/sweeps/{second}").status_code == 200
    assert client.post(f"/sweeps/{third}/cancel").status_code == 202
    assert client.delete(f"/sweeps/{third}").json()["epochs"] == 0
    assert client.delete(f"/sweeps/{first}").json()["trials"] == 4
    assert counts(client) == {"sweeps": 0, "trials": 0, "epochs": 0, "keys": 0}


def test_delete_needs_a_token_when_tokens_are_set(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_tokens=["s3cret"])
    auth = {"Authorization": "Bearer s3cret"}
    sweep_id = client.post("/sweeps", json=SMALL_SPEC, headers=auth).json()["id"]
    assert client.post(f"/sweeps/{sweep_id}/cancel", headers=auth).status_code == 202
    assert client.delete(f"/sweeps/{sweep_id}").status_code == 401
    wrong = {"Authorization": "Bearer no"}
    assert client.delete(f"/sweeps/{sweep_id}", headers=wrong).status_code == 401
    assert client.delete(f"/sweeps/{sweep_id}", headers=auth).status_code == 200
